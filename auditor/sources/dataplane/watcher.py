"""The common interface of the dataplane watchers, and how they enter a network namespace.

A watcher observes one node's kube-proxy rules and calls ``on_record`` with one
:class:`~auditor.model.dataplane.DataplaneRecord` per endpoint that entered or left them. It runs
in its own thread from :meth:`DataplaneWatcher.start` until :meth:`DataplaneWatcher.stop` (bounded
in time). ``on_record`` is called from that thread.
"""

from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import AuditorError
from auditor.model.dataplane import DataplaneRecord
from auditor.sources.dataplane.endpoints import Endpoint, diff_endpoints

log = logging.getLogger(__name__)

OnRecord = Callable[[DataplaneRecord], None]


@dataclass(slots=True)
class WatcherCounters:
    """How complete the output is: lost or unreadable input is data."""

    events: int = 0  # monitor lines / kernel events seen
    transactions: int = 0  # rule transactions (generations, table replaces) diffed
    parse_failures: int = 0  # lines or dumps that could not be read
    lost: int = 0  # events the kernel dropped (netlink socket drops, perf buffer losses)
    records: int = 0  # records delivered
    callback_errors: int = 0  # on_record raised
    kernel_stamped: int = 0  # transactions timed by the kernel (commit probe)
    receipt_stamped: int = 0  # transactions timed on receipt of the monitor's line (no probe record)


def netns_path(netns: str | None) -> Path:
    """``None`` -> this process's namespace; a name -> /run/netns/<name>; a path stays a path."""
    if netns is None:
        return Path("/proc/self/ns/net")
    path = Path(netns) if "/" in netns else Path("/run/netns") / netns
    if not path.exists():
        raise AuditorError(
            f"no network namespace {netns!r}",
            where=str(path),
            hint="give a name from `ip netns list` or a /proc/<pid>/ns/net path",
        )
    return path


def netns_argv(netns: str | None) -> list[str]:
    """The prefix that runs a command inside ``netns`` (empty for the current namespace)."""
    if netns is None:
        return []
    return ["nsenter", f"--net={netns_path(netns)}"]


def netns_inode(netns: str | None) -> int:
    """The namespace's inode number (what ``ns.inum`` holds in the kernel)."""
    return os.stat(netns_path(netns)).st_ino


class DataplaneWatcher(ABC):
    """Watches one backend's rules; subclasses fill :meth:`_run` and :meth:`_shutdown`."""

    backend: str = ""
    source: str = ""

    def __init__(self, node: str, netns: str | None = None) -> None:
        if not node:
            raise AuditorError("the dataplane watcher needs a node name", hint="pass --node <spec.nodeName>")
        self.node, self.netns = node, netns
        self.counters = WatcherCounters()
        self.current: set[Endpoint] = set()  # what the rules route to now
        self.error: str | None = None  # why the watcher ended on its own (the monitor tool exited...)
        self._on_record: OnRecord | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, on_record: OnRecord) -> DataplaneWatcher:
        """Read the current rules, then watch in a thread; raises AuditorError if it cannot."""
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        netns_path(self.netns)  # fail early, in the caller's thread
        self._on_record = on_record
        self._prepare()
        self._thread = threading.Thread(target=self._run, name=f"dataplane-{self.backend}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Stop watching; returns within about ``timeout`` seconds."""
        self._stopping.set()
        self._shutdown()
        if self._thread is not None:
            self._thread.join(timeout)

    def resync_clock(self) -> int | None:
        """Re-measure the kernel -> wall clock offset this watcher stamps with (NTP moves the wall
        clock on long runs); returns the correction in ns, None if it stamps nothing by the kernel."""
        return None

    def __enter__(self) -> DataplaneWatcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @abstractmethod
    def _prepare(self) -> None:
        """Attach to the event source and read the initial rules (caller's thread)."""

    @abstractmethod
    def _run(self) -> None:
        """The watcher thread: read events until stopped."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Make :meth:`_run` return soon and release resources (may be called twice)."""

    def _commit(self, endpoints: set[Endpoint], time_ns: int, source: str | None = None) -> None:
        """End of one rule transaction: emit what changed since the previous one."""
        self.counters.transactions += 1
        records = diff_endpoints(
            self.current,
            endpoints,
            time_ns=time_ns,
            node=self.node,
            backend=self.backend,
            source=source or self.source,
        )
        self.current = endpoints
        for record in records:
            self.counters.records += 1
            try:
                if self._on_record is not None:
                    self._on_record(record)
            except Exception:
                self.counters.callback_errors += 1
                log.exception("dataplane on_record callback failed")
