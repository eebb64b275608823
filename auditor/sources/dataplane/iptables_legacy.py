"""kube-proxy's iptables mode on the legacy backend: a table replace seen in the kernel, then a diff.

Legacy iptables writes a whole table with one ``setsockopt(SOL_IP, IPT_SO_SET_REPLACE)`` (``SOL_IPV6``,
``IP6T_SO_SET_REPLACE`` for IPv6; both optname 64). A bcc probe (``probes/iptables_replace.c``) on
``syscalls:sys_enter_setsockopt`` / ``sys_exit_setsockopt`` keeps the replaces made from the watched
network namespace (``task->nsproxy->net_ns->ns.inum``, offsets from the running kernel's BTF) and
stamps them with ``bpf_ktime_get_ns()`` at the syscall's return: the new table is in place by then. For each one the
watcher reads the nat table (``iptables-legacy-save -t nat``) and diffs the endpoints. Replaces that
follow each other faster than a read are attributed to the first one's time.
"""

from __future__ import annotations

import subprocess

from auditor.sources.dataplane.endpoints import Endpoint
from auditor.sources.dataplane.iptables_rules import IptablesNat
from auditor.sources.dataplane.kernel_clock import ProbeOpener, RecordStream, bcc_probe_opener, decode_replace
from auditor.sources.dataplane.watcher import DataplaneWatcher, netns_argv, netns_inode
from auditor.sources.live.clock import WallClockOffset

SOL_IP, SOL_IPV6, SO_SET_REPLACE = 0, 41, 64
SAVE = {SOL_IP: ("ipv4", "iptables-legacy-save"), SOL_IPV6: ("ipv6", "ip6tables-legacy-save")}


class LegacyReplaceWatcher(DataplaneWatcher):
    backend = "iptables-legacy"
    source = "setsockopt-replace+iptables-save-diff"
    poll_ms = 100

    def __init__(
        self,
        node: str,
        netns: str | None = None,
        open_probe: ProbeOpener | None = None,
        wall_clock: WallClockOffset | None = None,
    ) -> None:
        """``open_probe`` loads the ``iptables_replace`` probe (default: bcc); ``wall_clock`` turns its
        kernel times into UTC (default: the real clocks)."""
        super().__init__(node, netns)
        self.model = IptablesNat()
        self.failed_replaces = 0  # replaces the kernel refused (no change)
        self._open_probe = open_probe
        self._probe: RecordStream | None = None
        self.wall_clock = wall_clock if wall_clock is not None else WallClockOffset()

    def _prepare(self) -> None:
        opener = self._open_probe if self._open_probe is not None else bcc_probe_opener()
        self._probe = opener("iptables_replace", netns_inode(self.netns), self._on_replace, self._on_lost)
        self._read(SOL_IP)
        self._read(SOL_IPV6, quiet=True)  # a node without IPv6 nat is no failure
        self.current = self.model.endpoints()

    def resync_clock(self) -> int | None:
        return self.wall_clock.resync()

    def _read(self, level: int, quiet: bool = False) -> None:
        family, save = SAVE[level]
        argv = [*netns_argv(self.netns), save, "-t", "nat"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            if proc.returncode != 0:
                raise ValueError(proc.stderr.strip()[:200])
            self.model.load_save(proc.stdout, family)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.counters.parse_failures += 0 if quiet else 1

    def _on_replace(self, raw: bytes) -> None:
        try:
            event = decode_replace(raw)
        except ValueError:
            self.counters.parse_failures += 1
            return
        self.counters.events += 1
        if event.ret != 0 or event.level not in SAVE:
            self.failed_replaces += 1
            return
        self._read(event.level)
        self._commit(self._endpoints(), self.wall_clock.to_wall(event.exit_ns_raw))

    def _on_lost(self, lost: int) -> None:
        self.counters.lost += lost

    def _endpoints(self) -> set[Endpoint]:
        return self.model.endpoints()

    def _run(self) -> None:
        while not self._stopping.is_set() and (probe := self._probe) is not None:
            probe.poll(self.poll_ms)

    def _shutdown(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(2.0)
        if self._probe is not None and (self._thread is None or not self._thread.is_alive()):
            self._probe.close()
            self._probe = None
