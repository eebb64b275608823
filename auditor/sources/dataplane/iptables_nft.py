"""kube-proxy's iptables mode on the nf_tables backend, watched with ``xtables-monitor -e``.

The nf_tables transaction of one ``iptables-restore`` shows as its rule events followed by one
``NEWGEN`` line; the endpoints are diffed at each ``NEWGEN`` (see :mod:`.iptables_rules`).
"""

from __future__ import annotations

from typing import Any

from auditor.sources.dataplane.iptables_rules import IptablesNat, parse_monitor_line
from auditor.sources.dataplane.monitor import MonitorWatcher, run_dump
from auditor.sources.dataplane.watcher import netns_argv


class XtablesMonitorWatcher(MonitorWatcher):
    backend = "iptables-nft"
    source = "xtables-monitor"
    monitor = ("xtables-monitor", "-e")

    def __init__(self, node: str, netns: str | None = None) -> None:
        super().__init__(node, netns)
        self.model = IptablesNat()

    def _load(self) -> None:
        for family, save in (("ipv4", "iptables-nft-save"), ("ipv6", "ip6tables-nft-save")):
            text = run_dump([*netns_argv(self.netns), save, "-t", "nat"])
            try:
                self.model.load_save(text, family)
            except ValueError:
                self.counters.parse_failures += 1

    def _parse(self, line: str) -> Any:
        return parse_monitor_line(line)
