"""Client truth: fortio JSON results and hey summaries, normalized error kinds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditor.errors import AuditorError
from auditor.model.client import ERROR_KINDS, classify_error
from auditor.sources.client_result import read_client_result

DATA = Path(__file__).resolve().parent.parent / "data" / "client"


def test_hey_summary() -> None:
    r = read_client_result(DATA / "hey-rollout.txt")
    assert r.tool == "hey" and r.file == "hey-rollout.txt"
    assert r.status_codes == {200: 4824, 502: 9, 503: 2}
    assert r.by_error == {"connection_refused": 312, "connection_reset": 41, "timeout": 8, "eof": 3,
                          "http_5xx": 11, "other": 0}  # fmt: skip
    assert (r.requests, r.ok, r.failed) == (5199, 4824, 375)
    assert r.qps == pytest.approx(173.2301) and r.duration_s == pytest.approx(30.0121)
    assert r.start is None


def test_fortio_json() -> None:
    r = read_client_result(DATA / "fortio-rollout.json")
    assert r.tool == "fortio"
    assert r.status_codes == {200: 5857, 503: 22}
    assert (r.requests, r.ok, r.failed) == (6000, 5857, 143)
    assert r.by_error["http_5xx"] == 22 and r.by_error["other"] == 121  # -1: untyped socket errors
    assert set(r.by_error) == set(ERROR_KINDS) and sum(r.by_error.values()) == r.failed
    assert r.start == datetime(2026, 11, 26, 8, 0, 0, 4171, tzinfo=UTC)
    assert r.duration_s == pytest.approx(30.025243561) and r.qps == pytest.approx(199.8317422)


def test_fortio_with_error_texts(tmp_path: Path) -> None:
    doc = (DATA / "fortio-rollout.json").read_text().replace(
        '"AbortOn": 0',
        '"AbortOn": 0, "Errors": {"dial tcp 10.96.0.10:80: connect: connection refused": 100,'
        ' "read: connection reset by peer": 20}',
    )
    (tmp_path / "f.json").write_text(doc)
    r = read_client_result(tmp_path / "f.json")
    assert r.by_error["connection_refused"] == 100 and r.by_error["connection_reset"] == 20
    assert r.by_error["other"] == 1 and r.failed == 143


def test_hey_only_errors(tmp_path: Path) -> None:
    # as hey prints it when every connection was refused (no status line at all)
    text = ("\nSummary:\n  Total:\t0.0016 secs\n  Slowest:\t0.0000 secs\n  Fastest:\t0.0000 secs\n"
            "  Average:\t NaN secs\n  Requests/sec:\t12742.3597\n  \n\nResponse time histogram:\n\n\n"
            "Latency distribution:\n\nStatus code distribution:\n\nError distribution:\n"
            '  [20]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused\n\n')  # fmt: skip
    (tmp_path / "hey.txt").write_text(text)
    r = read_client_result(tmp_path / "hey.txt")
    assert (r.requests, r.ok, r.failed, r.by_error["connection_refused"]) == (20, 0, 20, 20)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('Get "http://10.96.0.10/": dial tcp 10.96.0.10:80: connect: connection refused', "connection_refused"),
        ("read tcp 10.244.0.12:53422->10.96.0.10:80: read: connection reset by peer", "connection_reset"),
        ('Get "http://x/": context deadline exceeded (Client.Timeout exceeded while awaiting headers)', "timeout"),
        ("dial tcp 10.96.0.10:80: i/o timeout", "timeout"),
        ('Get "http://10.96.0.10/": EOF', "eof"),
        ('Get "http://x/": dial tcp: lookup x: no such host', "other"),
    ],
)
def test_classify_error(text: str, kind: str) -> None:
    assert classify_error(text) == kind


@pytest.mark.parametrize("content", ["hello\n", '{"kind": "List", "items": []}\n', '{"RetCodes": ', ""])
def test_unknown_format_is_one_line_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "r.out").write_text(content)
    with pytest.raises(AuditorError) as info:
        read_client_result(tmp_path / "r.out")
    assert "r.out" in str(info.value) and "\n" not in str(info.value)
