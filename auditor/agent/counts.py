"""Exact counts in the agent: the probes' aggregate records, kept for episodes, totals and the log.

The counts thread of :class:`~auditor.agent.core.Agent` reads every source's finished buckets
(``read_counts``), appends them to ``counts-<node>-<stamp>.jsonl`` and adds them here:

* :class:`CountStore`: per-kind totals since start (events, detail lost), per server address and port
  failures (bounded: past ``max_servers`` they add to ``_other``), and the records of the last
  ``window_s`` (bounded in records; evictions counted) for the episodes;
* :class:`PodAddresses`: the addresses of terminating pods and when their deletion was seen, from the
  watch, so a finished episode can be counted from the records of its addresses (:meth:`CountStore.episode`).

Nothing here is per event: a storm of a million refusals to one port is a few records per 100 ms.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from auditor.model.counts import CountRecord, ServerCounts, failure_counts, sampled_note, total_failures

OTHER_SERVERS = "_other"
TOP_SERVERS = 20  # servers listed in the summary


class CountStore:
    """Thread-safe: the counts thread adds, the main loop asks."""

    def __init__(self, window_s: float = 600.0, max_records: int = 100_000, max_servers: int = 10_000) -> None:
        self.window_ns = int(window_s * 1e9)
        self.max_records, self.max_servers = max(1, max_records), max(1, max_servers)
        self._lock = threading.Lock()
        self._records: deque[CountRecord] = deque()
        self.events: Counter[str] = Counter()  # per kind, since start: exact
        self.detail_lost: Counter[str] = Counter()
        self.servers: dict[str, ServerCounts] = {}
        self.records = 0  # records added (written to the counts file)
        self.evicted = 0  # records dropped by the count bound before their age
        self.evicted_until_ns = 0  # the newest bucket evicted early: episodes before it are not exact
        self.uncounted = 0  # events the kernel could not aggregate (map full), as last reported
        self.uncounted_at_ns = 0  # when that number last grew

    def add(self, records: Iterable[CountRecord]) -> None:
        batch = list(records)
        if not batch:
            return
        per_server = failure_counts(batch)
        with self._lock:
            self.records += len(batch)
            for r in batch:
                self.events[r.kind] += r.events
                self.detail_lost[r.kind] += r.detail_lost
                self._records.append(r)
            while len(self._records) > self.max_records:
                old = self._records.popleft()
                self.evicted += 1
                self.evicted_until_ns = max(self.evicted_until_ns, old.time_ns + old.bucket_ns)
            for server, c in per_server.items():
                if server not in self.servers and len(self.servers) >= self.max_servers:
                    server = OTHER_SERVERS
                mine = self.servers.setdefault(server, ServerCounts())
                for name in ("refused_by_server", "refused_by_client", "reset", "unreachable", "events",
                             "detail_lost"):  # fmt: skip
                    setattr(mine, name, getattr(mine, name) + getattr(c, name))

    def set_uncounted(self, total: int, now_ns: int) -> None:
        with self._lock:
            if total > self.uncounted:
                self.uncounted_at_ns = now_ns
            self.uncounted = total

    def trim(self, now_ns: int) -> None:
        """Forget records older than the window."""
        cut = now_ns - self.window_ns
        with self._lock:
            while self._records and self._records[0].time_ns < cut:
                self._records.popleft()

    def episode(self, ips: Iterable[str], since_ns: int, until_ns: int) -> dict[str, Any]:
        """Exact counts of the events whose server side is one of ``ips``, in buckets that overlap
        ``[since_ns, until_ns]``: failures, events by kind, detail lost, per server; ``exact`` is False
        when records of that time were evicted early or the kernel could not aggregate some events."""
        wanted = set(ips)
        with self._lock:
            picked = [r for r in self._records
                      if r.addr in wanted and r.time_ns + r.bucket_ns > since_ns and r.time_ns <= until_ns]  # fmt: skip
            exact = self.evicted_until_ns <= since_ns and not (since_ns <= self.uncounted_at_ns <= until_ns)
        servers = failure_counts(picked)
        kinds: Counter[str] = Counter()
        for r in picked:
            kinds[r.kind] += r.events
        events = sum(kinds.values())
        lost = sum(r.detail_lost for r in picked)
        return {
            **total_failures(servers.values()),
            "events": dict(kinds),
            "detail_lost": lost,
            "exact": exact,
            "servers": {s: c.as_dict() for s, c in sorted(servers.items())},
            "note": sampled_note(events - lost, events, exact),
        }

    def totals(self) -> tuple[int, int]:
        """(events counted, of which detail lost), every kind."""
        with self._lock:
            return sum(self.events.values()), sum(self.detail_lost.values())

    def notes(self, detail: int) -> dict[str, Any]:
        """The summary's ``counts``: ``detail`` is the detail events the log holds."""
        with self._lock:
            events, lost = dict(self.events), dict(self.detail_lost)
            servers = sorted(self.servers.items(), key=lambda kv: (-_failed(kv[1]), -kv[1].events, kv[0]))
            exact = self.uncounted == 0 and self.evicted == 0
            failures = total_failures(c for _, c in servers)
            out = {
                "exact": self.uncounted == 0,
                "events": events,
                "detail_lost": lost,
                "failures": failures,
                "servers": {s: c.as_dict() for s, c in servers[:TOP_SERVERS]},
                "servers_seen": len(servers),
                "records": self.records,
                "window_records": len(self._records),
                "window_evicted": self.evicted,
                "uncounted": self.uncounted,
            }
        total = sum(events.values())
        out["note"] = sampled_note(min(detail, total), total, exact=self.uncounted == 0)
        out["window_exact"] = exact
        return out


def _failed(c: ServerCounts) -> int:
    return c.refused + c.reset + c.unreachable


class PodAddresses:
    """uid -> (addresses, deletion seen at) of terminating and deleted pods, from their watch events.

    Only pods with a deletion timestamp (terminating) or a DELETED event are kept, at most ``max_pods``
    (the oldest go first): they are the ones an episode will be counted for.
    """

    def __init__(self, max_pods: int = 10_000) -> None:
        self.max_pods = max(1, max_pods)
        self._lock = threading.Lock()
        self._pods: dict[str, tuple[set[str], int]] = {}

    def observe(self, type_: str, obj: dict[str, Any], observed_ns: int) -> None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if not uid or (type_ != "DELETED" and not meta.get("deletionTimestamp")):
            return
        status = obj.get("status") or {}
        ips = {str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")}
        if status.get("podIP"):
            ips.add(str(status["podIP"]))
        with self._lock:
            known, deleted = self._pods.pop(uid, (set(), 0))
            self._pods[uid] = (known | ips, observed_ns if type_ == "DELETED" else deleted)
            while len(self._pods) > self.max_pods:
                del self._pods[next(iter(self._pods))]

    def take(self, uid: str) -> tuple[set[str], int] | None:
        """The pod's addresses and when its deletion was seen (0: not yet), forgotten here."""
        with self._lock:
            return self._pods.pop(uid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pods)


class CountsFile:
    """``counts-<node>-<stamp>.jsonl``: one line per record, flushed after each batch (appends to a
    file a previous run of the same second left)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self.errors = 0

    def write(self, records: list[CountRecord]) -> None:
        if not records:
            return
        text = "".join(r.to_json_line() + "\n" for r in records)
        with self._lock:
            try:
                if self._file is None:
                    self._file = self.path.open("a", encoding="utf-8")
                self._file.write(text)
                self._file.flush()
            except OSError:
                self.errors += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


__all__ = ["CountStore", "CountsFile", "PodAddresses"]
