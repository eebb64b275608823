"""Agent metrics: exposition over HTTP on 127.0.0.1, health endpoint, bounded pod labels."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from auditor.errors import AuditorError
from auditor.sinks.metrics import OTHER_POD, AgentMetrics, MetricsServer, parse_addr


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[AgentMetrics, MetricsServer, list[tuple[bool, str]]]]:
    metrics = AgentMetrics(max_pods=2)
    health = [(True, "ok")]
    server = MetricsServer(metrics, "127.0.0.1:0", lambda: health[0]).start()
    try:
        yield metrics, server, health
    finally:
        server.stop()


def test_exposition_has_the_agent_series(served: tuple[AgentMetrics, MetricsServer, list]) -> None:
    metrics, server, _ = served
    metrics.count_received("refused", 3)
    metrics.count_received("rst_sent", 2)
    metrics.count_written(5)
    metrics.set_lost_total("refused", 4)
    metrics.set_lost_total("refused", 6)  # running total: +2
    metrics.set_lost_total("queue_full", 0)
    metrics.count_failures("shop", "web-1", "refused", "propagation_gap", 7)
    metrics.observe_delay(0.004, "kube-proxy", "node-a")
    metrics.observe_delay(0.8, "kube-proxy", "node-a")
    metrics.observe_delay(2.31, "pod", "ingress-nginx/ingress-nginx-controller-7d9f")
    metrics.observe_gap(0.3)
    metrics.count_episode("GAP")
    status, text = _get(server.port, "/metrics")
    assert status == 200
    lines = set(text.splitlines())
    for want in (
        'auditor_events_received_total{kind="refused"} 3.0',
        'auditor_events_received_total{kind="rst_sent"} 2.0',
        "auditor_events_written_total 5.0",
        'auditor_events_lost_total{kind="refused"} 6.0',
        'auditor_events_lost_total{kind="queue_full"} 0.0',
        'auditor_connection_failures_total{cause="propagation_gap",failure="refused",namespace="shop",pod="web-1"} 7.0',
        'auditor_propagation_delay_seconds_bucket{consumer="node-a",consumer_kind="kube-proxy",le="0.005"} 1.0',
        'auditor_propagation_delay_seconds_bucket{consumer="node-a",consumer_kind="kube-proxy",le="1.0"} 2.0',
        'auditor_propagation_delay_seconds_count{consumer="node-a",consumer_kind="kube-proxy"} 2.0',
        'auditor_propagation_delay_seconds_count{consumer="ingress-nginx/ingress-nginx-controller-7d9f",'
        'consumer_kind="pod"} 1.0',
        'auditor_gap_seconds_bucket{le="0.25"} 0.0',
        'auditor_episodes_total{verdict="GAP"} 1.0',
    ):
        assert want in lines, want


def test_healthz_and_unknown_path(served: tuple[AgentMetrics, MetricsServer, list]) -> None:
    _, server, health = served
    assert _get(server.port, "/healthz") == (200, "ok\n")
    health[0] = (False, "writer stopped")
    assert _get(server.port, "/healthz") == (503, "writer stopped\n")
    assert _get(server.port, "/nope")[0] == 404


def test_pod_labels_are_bounded() -> None:
    metrics = AgentMetrics(max_pods=2)
    for pod in ("a", "b", "c", "d", "a"):
        metrics.count_failures("ns", pod, "reset", "inflight_reset")
    text = metrics.exposition().decode()
    pods = {line.split('pod="')[1].split('"')[0] for line in text.splitlines()
            if line.startswith("auditor_connection_failures_total{")}  # fmt: skip
    assert pods == {"a", "b", OTHER_POD}
    assert f'namespace="",pod="{OTHER_POD}"}} 2.0' in text


@pytest.mark.parametrize(
    ("text", "want"),
    [(":9808", ("", 9808)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9100", ("::1", 9100))],
)
def test_parse_addr(text: str, want: tuple[str, int]) -> None:
    assert parse_addr(text) == want


@pytest.mark.parametrize("text", ["9808", "host:http", "host:70000"])
def test_parse_addr_rejects(text: str) -> None:
    with pytest.raises(AuditorError, match="--metrics-addr"):
        parse_addr(text)


def test_port_in_use_is_a_user_error(served: tuple[AgentMetrics, MetricsServer, list]) -> None:
    _, server, _ = served
    with pytest.raises(AuditorError, match="cannot listen"):
        MetricsServer(AgentMetrics(), f"127.0.0.1:{server.port}", lambda: (True, "ok"))


def test_counted_events_and_failures_from_the_aggregates() -> None:
    from auditor.model.counts import CountRecord

    def rec(kind: str, events: int, t: int, state: int = 0, flags: int = 0x02) -> CountRecord:
        return CountRecord(t, 100, kind, 4, "10.244.1.7", 8080, "src", 0, state, flags, 6, events, 0)

    metrics = AgentMetrics()
    # bucket 0: the server's RSTs and the client's refused sockets are the same 5 refusals; bucket 100: the
    # server alone (a client on another node) refused 3, and one established connection was reset
    metrics.count_counted([rec("rst_sent", 5, 0), rec("refused", 5, 0), rec("rst_received", 5, 0, state=2),
                           rec("rst_sent", 3, 100), rec("rst_sent", 1, 100, state=1)])  # fmt: skip
    text = metrics.exposition().decode()
    assert 'auditor_failures_counted_total{failure="refused"} 8.0' in text
    assert 'auditor_failures_counted_total{failure="reset"} 1.0' in text
    assert 'auditor_events_counted_total{kind="rst_sent"} 9.0' in text
    assert 'auditor_events_counted_total{kind="refused"} 5.0' in text
