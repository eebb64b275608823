"""Watchers that read a netlink monitor tool's output (``xtables-monitor -e``, ``nft -a monitor``).

The tool runs as a child process (inside the namespace, through ``nsenter``), line-buffered with
``stdbuf -oL``. The generation line that closes a transaction triggers the diff. The tools print no
time, so the transaction is timed by the kernel: the ``nft_commit`` probe
(:class:`~auditor.sources.dataplane.kernel_clock.NftCommitClock`) records when the committing
thread's ``sendmsg()`` returned, and the generation line names that thread. Records say so in
``source`` (``<tool>+kernel-commit``). Without the probe (no bcc, no BTF, ``kernel_clock=False``)
or when no record matches within 250 ms, the time is the receipt of the transaction's first line
(``time.time_ns()``; ``source`` is the tool's name): a few ms late, tens of ms on a loaded node.
The rules are read once after the tool has subscribed to the netlink group, so no change falls
between the dump and the first event.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from abc import abstractmethod
from pathlib import Path
from typing import IO, Any

from auditor.errors import AuditorError
from auditor.sources.dataplane.endpoints import Endpoint
from auditor.sources.dataplane.kernel_clock import NftCommitClock, ProbeOpener
from auditor.sources.dataplane.watcher import DataplaneWatcher, netns_argv, netns_inode

NETLINK_NETFILTER = 12
log = logging.getLogger(__name__)


def netlink_sockets(pid: int) -> list[tuple[int, int, int]]:
    """(protocol, groups, drops) of each netlink socket process ``pid`` holds, from /proc."""
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        table = Path(f"/proc/{pid}/net/netlink").read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for row in table:
        cols = row.split()
        if len(cols) >= 10 and cols[9] in inodes:
            found.append((int(cols[1]), int(cols[3], 16), int(cols[8])))
    return found


def run_dump(argv: list[str], timeout: float = 10.0) -> str:
    """Run a rule dump command; AuditorError with its stderr if it fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuditorError(f"cannot read the rules: {exc}", where=" ".join(argv)) from exc
    if proc.returncode != 0:
        raise AuditorError(
            f"cannot read the rules: {proc.stderr.strip()[:200]}",
            where=" ".join(argv),
            hint="run as root with CAP_NET_ADMIN in the node's network namespace",
        )
    return proc.stdout


class MonitorWatcher(DataplaneWatcher):
    """A watcher fed by the lines of a monitor subprocess."""

    monitor: tuple[str, ...] = ()  # the tool's argv, without namespace prefix
    model: Any  # the rule model the lines update: .apply(event), .endpoints()
    subscribe_timeout = 3.0

    def __init__(
        self,
        node: str,
        netns: str | None = None,
        kernel_clock: bool = True,
        open_probe: ProbeOpener | None = None,
    ) -> None:
        """``open_probe`` loads the ``nft_commit`` probe (default: bcc), unless ``kernel_clock`` is False."""
        super().__init__(node, netns)
        self._open_probe = open_probe
        self._proc: subprocess.Popen[str] | None = None
        self._drops = 0
        self._stderr: IO[bytes] | None = None
        self._want_clock = kernel_clock
        self.clock: NftCommitClock | None = None
        self.clock_error: str | None = None  # why transactions are timed on receipt
        self._generation_pid: int | None = None

    @abstractmethod
    def _load(self) -> None:
        """Read the whole rule set into the model (after subscribing)."""

    @abstractmethod
    def _parse(self, line: str) -> Any:
        """One monitor line -> an event with ``.kind`` for the model, or None to ignore it."""

    def _feed(self, line: str) -> bool:
        """Apply one line to the model; True if it closed a transaction. ValueError if unreadable."""
        event = self._parse(line)
        if event is None:
            return False
        if event.kind == "generation":
            self._generation_pid = event.pid
            return True
        self.model.apply(event)
        return False

    def _endpoints(self) -> set[Endpoint]:
        """What the model routes to now."""
        return set(self.model.endpoints())

    def _prepare(self) -> None:
        tool = self.monitor[0]
        if shutil.which(tool) is None:
            raise AuditorError(f"{tool} is not installed", hint=f"install the package that provides {tool}")
        if self._want_clock:
            try:
                self.clock = NftCommitClock(netns_inode(self.netns), self._open_probe)
            except AuditorError as exc:
                self.clock_error = str(exc)
                log.warning("%s: rule changes timed on receipt, not by the kernel: %s", self.source, exc)
        else:
            self.clock_error = "kernel clock disabled"
        argv = [*netns_argv(self.netns), "stdbuf", "-oL", *self.monitor]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in _shutdown; never a full pipe
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.subscribe_timeout
        while not any(p == NETLINK_NETFILTER and g for p, g, _ in netlink_sockets(self._proc.pid)):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._stderr_tail()
                self._shutdown()
                raise AuditorError(
                    f"{tool} did not start monitoring: {err.strip()[:200] or 'timed out'}",
                    where=" ".join(argv),
                )
            time.sleep(0.005)
        try:
            self._load()
        except Exception:
            self._shutdown()
            raise
        self.current = self._endpoints()

    def _run(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        first_ns: int | None = None
        for line in proc.stdout:
            now, now_mono = time.time_ns(), time.monotonic_ns()
            if first_ns is None:
                first_ns = now
            self.counters.events += 1
            try:
                closed = self._feed(line)
            except ValueError:
                self.counters.parse_failures += 1
                continue
            if closed:
                when, source = first_ns, self.source
                if self.clock is not None:
                    kernel_ns = self.clock.commit_time(self._generation_pid, now_mono)
                    if kernel_ns is not None:
                        when, source = kernel_ns, f"{self.source}+kernel-commit"
                if source == self.source:
                    self.counters.receipt_stamped += 1
                else:
                    self.counters.kernel_stamped += 1
                self._commit(self._endpoints(), when, source)
                first_ns = None
                self._sample_drops()
        proc.stdout.close()
        code = proc.wait(timeout=5) if not self._stopping.is_set() else None
        if code is not None:
            self.error = f"{self.monitor[0]} exited with status {code}: {self._stderr_tail()}"
            log.warning("dataplane watcher stopped: %s", self.error)

    def resync_clock(self) -> int | None:
        clock = self.clock
        return clock.resync() if clock is not None else None

    def _stderr_tail(self) -> str:
        try:
            if self._stderr is not None:
                self._stderr.seek(0)
                return self._stderr.read().decode(errors="replace").strip()[-200:]
        except (OSError, ValueError):
            pass
        return ""

    def _sample_drops(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            drops = sum(d for p, _, d in netlink_sockets(self._proc.pid) if p == NETLINK_NETFILTER)
            if drops > self._drops:
                self.counters.lost += drops - self._drops
                self._drops = drops

    def _shutdown(self) -> None:
        self._stop_monitor()
        self._close_clock()

    def _stop_monitor(self) -> None:
        proc = self._proc
        if self._stderr is not None and (proc is None or proc.poll() is not None):
            self._stderr.close()
            self._stderr = None
        if proc is None or proc.poll() is not None:
            return
        self._sample_drops()
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=2)
        if self._thread is None and proc.stdout is not None:
            proc.stdout.close()  # no reader thread owns it
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _close_clock(self) -> None:
        """Release the probe once the reader thread (its only user) is gone."""
        if self.clock is None:
            return
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(2.0)
        if self._thread is None or not self._thread.is_alive():
            self.counters.lost += self.clock.lost  # lost records: those transactions timed on receipt
            self.clock.close()
            self.clock = None
