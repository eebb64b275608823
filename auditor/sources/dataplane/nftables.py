"""kube-proxy's nftables mode (``table ip kube-proxy`` / ``ip6``), watched with ``nft -a monitor``.

Each ``nft`` transaction ends with a ``# new generation`` line; the endpoints are diffed there
(see :mod:`.nft_rules`).
"""

from __future__ import annotations

import subprocess
from typing import Any

from auditor.sources.dataplane.monitor import MonitorWatcher
from auditor.sources.dataplane.nft_rules import TABLE, NftTables, parse_nft_monitor_line
from auditor.sources.dataplane.watcher import netns_argv


class NftMonitorWatcher(MonitorWatcher):
    backend = "nftables"
    source = "nft-monitor"
    monitor = ("nft", "-a", "monitor")

    def __init__(self, node: str, netns: str | None = None) -> None:
        super().__init__(node, netns)
        self.model = NftTables()

    def _load(self) -> None:
        for family, nft_family in (("ipv4", "ip"), ("ipv6", "ip6")):
            argv = [*netns_argv(self.netns), "nft", "-a", "list", "table", nft_family, TABLE]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            if proc.returncode == 0:  # a missing table is no error: kube-proxy may create it later
                self.model.load_list(proc.stdout, family)

    def _parse(self, line: str) -> Any:
        return parse_nft_monitor_line(line)
