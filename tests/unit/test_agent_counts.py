"""The agent's exact counts: the store of aggregate records (totals, servers, episodes, bounds) and the
addresses of terminating pods."""

from __future__ import annotations

from auditor.agent.counts import CountStore, PodAddresses
from auditor.model.counts import CountRecord

S = 10**9
BUCKET = 100_000_000


def rec(t: int, kind: str, events: int, addr: str = "10.244.1.7", port: int = 8080, lost: int = 0,
        flags: int = 0x02) -> CountRecord:  # fmt: skip
    return CountRecord(t, BUCKET, kind, 4, addr, port, "src" if kind == "rst_sent" else "dst", 1, 0, flags, 6,
                       events, lost)  # fmt: skip


def test_store_totals_servers_and_an_episode() -> None:
    store = CountStore(window_s=600)
    store.add([rec(100 * S, "rst_sent", 40, lost=35), rec(100 * S, "refused", 40, lost=30),
               rec(101 * S, "rst_sent", 2), rec(101 * S, "refused", 7, addr="10.244.9.9", port=80),
               rec(102 * S, "drop", 5)])  # fmt: skip
    assert store.events == {"rst_sent": 42, "refused": 47, "drop": 5}
    assert store.totals() == (94, 65)
    notes = store.notes(detail=29)
    assert notes["failures"] == {"refused": 49, "reset": 0, "unreachable": 0}  # 42 from both ends, once, + 7
    assert list(notes["servers"]) == ["10.244.1.7:8080", "10.244.9.9:80"]  # most failures first
    assert notes["note"] == "detail sampled: 29 of 94 events; counts exact" and notes["exact"]
    ep = store.episode({"10.244.1.7"}, 100 * S + 50_000_000, 101 * S)  # buckets overlapping the span
    assert (ep["refused"], ep["events"], ep["detail_lost"], ep["exact"]) == (42, {"rst_sent": 42, "refused": 40}, 65, True)
    assert list(ep["servers"]) == ["10.244.1.7:8080"] and ep["note"].startswith("detail sampled: 17 of 82")
    assert store.episode({"10.244.1.7"}, 103 * S, 104 * S)["events"] == {}


def test_store_bounds_say_when_an_episode_is_not_exact() -> None:
    store = CountStore(window_s=10, max_records=3, max_servers=2)
    store.add([rec(t * S, "refused", 1, port=t) for t in range(1, 6)])  # 5 records, 3 kept
    assert store.evicted == 2 and store.evicted_until_ns == 2 * S + BUCKET
    assert not store.episode({"10.244.1.7"}, 1 * S, 6 * S)["exact"]  # its first records went early
    assert store.episode({"10.244.1.7"}, 3 * S, 6 * S)["exact"]
    assert set(store.servers) == {"10.244.1.7:1", "10.244.1.7:2", "_other"}  # past 2 servers: _other
    store.set_uncounted(10, now_ns=5 * S)  # the kernel map was full then
    assert not store.episode({"10.244.1.7"}, 3 * S, 6 * S)["exact"] and not store.notes(0)["exact"]
    store.trim(now_ns=14 * S + 500_000_000)  # older than the 10 s window
    assert store.notes(0)["window_records"] == 1


def test_pod_addresses_of_terminating_and_deleted_pods() -> None:
    book = PodAddresses(max_pods=2)
    running = {"metadata": {"uid": "a"}, "status": {"podIP": "10.244.1.7"}}
    book.observe("MODIFIED", running, 5)
    assert book.take("a") is None  # not terminating: not kept
    terminating = {"metadata": {"uid": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                   "status": {"podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}, {"ip": "fd00::7"}]}}  # fmt: skip
    book.observe("MODIFIED", terminating, 6)
    book.observe("DELETED", {"metadata": {"uid": "a"}, "status": {}}, 9)  # a final object without IPs
    assert book.take("a") == ({"10.244.1.7", "fd00::7"}, 9) and book.take("a") is None
    for uid in ("b", "c", "d"):
        book.observe("DELETED", {"metadata": {"uid": uid}, "status": {"podIP": "10.0.0.1"}}, 1)
    assert len(book) == 2 and book.take("b") is None  # the oldest went first
