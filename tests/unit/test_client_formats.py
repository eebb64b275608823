"""Every load-client format, read from the fixtures in tests/data/client (see its README for the
documentation each file follows): counts, error classes, times and latencies as the files were written."""

from __future__ import annotations

import gzip
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from auditor.errors import AuditorError, InputError
from auditor.model.client import (
    CLIENT_COLUMNS,
    ERROR_CLASSES,
    ERROR_KINDS,
    ClientRequest,
    ErrorClass,
    classify,
    classify_error,
    client_frame,
)
from auditor.sources import client_result
from auditor.sources.client_result import CLIENT_FORMATS, HEY_MAX_RESULTS, read_client_result
from tests.conftest import REPO

DATA = Path(__file__).resolve().parent.parent / "data" / "client"
T0 = 1795680000 * 10**9  # 2026-11-26T08:00:00Z, the fixtures' rollout
FIXTURES = {
    "fortio-rollout.json": "fortio-json",
    "fortio-grpc.json": "fortio-json",
    "fortio-grpc-0.11.json": "fortio-json",
    "nighthawk-fortio.json": "fortio-json",
    "fortio-access.jsonl": "fortio-access-log",
    "vegeta-results.json": "vegeta-json",
    "vegeta-results.csv": "vegeta-csv",
    "k6-results.json": "k6-json",
    "hey-rollout.txt": "hey",
    "hey-errors-only.txt": "hey",
    "hey-capped.txt": "hey",
    "hey-rollout.csv": "hey-csv",
}
REFUSED = 'Get "http://10.96.0.10/": dial tcp 0.0.0.0:0->10.96.0.10:80: connect: connection refused'


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def times_ns(table: pd.DataFrame) -> list[int]:
    return [int(t.value) for t in table["time"]]


# ------------------------------------------------------------------------------------------- every fixture


def test_every_format_has_a_fixture() -> None:
    assert set(FIXTURES.values()) == set(CLIENT_FORMATS)
    listed = (DATA / "README.md").read_text()
    assert all(f"`{name}`" in listed for name in FIXTURES)


@pytest.mark.parametrize(("name", "fmt"), FIXTURES.items())
def test_detected_format_and_consistent_counts(name: str, fmt: str) -> None:
    r = read_client_result(DATA / name)
    assert r.format == fmt and r.file == name and r.tool == fmt.split("-")[0].replace("nighthawk", "fortio")
    assert r.requests == r.ok + r.failed
    assert set(r.by_error) == set(ERROR_KINDS) and sum(r.by_error.values()) == r.failed
    assert set(r.by_class) == set(ERROR_CLASSES) and sum(r.by_class.values()) == r.failed
    table = r.requests_table
    if fmt in ("fortio-json", "hey"):
        assert table is None
    else:
        assert table is not None and list(table.columns) == list(CLIENT_COLUMNS) and len(table) == r.requests
        assert int((table["error_class"] != "").sum()) == r.failed


@pytest.mark.parametrize(("name", "fmt"), FIXTURES.items())
def test_forcing_the_right_format_reads_the_same(name: str, fmt: str) -> None:
    auto, forced = read_client_result(DATA / name), read_client_result(DATA / name, fmt)
    assert auto == forced  # (the table is not compared by ==)
    if auto.requests_table is not None:
        assert forced.requests_table is not None
        pd.testing.assert_frame_equal(auto.requests_table, forced.requests_table)


@pytest.mark.parametrize(("name", "fmt"), FIXTURES.items())
def test_forcing_another_format_is_one_clear_line(name: str, fmt: str) -> None:
    wrong = "hey-csv" if fmt != "hey-csv" else "vegeta-json"
    with pytest.raises(InputError) as info:
        read_client_result(DATA / name, wrong)
    line = str(info.value)
    assert "\n" not in line and name in line and f"not a {wrong} result" in line


# ------------------------------------------------------------------------------------------- fortio JSON


def test_fortio_http_gets_the_new_fields() -> None:
    r = read_client_result(DATA / "fortio-rollout.json")
    assert nonzero(r.by_class) == {"http_503": 22, "other": 121}
    assert r.start == datetime(2026, 11, 26, 8, 0, 0, 4171, tzinfo=UTC)
    assert r.end == datetime(2026, 11, 26, 8, 0, 30, 29415, tzinfo=UTC)  # start + ActualDuration
    assert r.time_known and not r.capped
    assert len(r.warnings) == 1 and '121 request(s) failed as fortio\'s "-1"' in r.warnings[0]


def test_fortio_grpc_serving_counts_as_success() -> None:
    r = read_client_result(DATA / "fortio-grpc.json")
    assert (r.requests, r.ok, r.failed) == (3000, 2940, 60)
    assert r.status_codes == {200: 2940}  # SERVING, as before
    assert nonzero(r.by_class) == {"other": 60} and nonzero(r.by_error) == {"other": 60}  # ERROR: no text
    assert r.start == datetime(2026, 11, 26, 8, 0, 0, 1234, tzinfo=UTC) and r.duration_s == pytest.approx(15.001234567)


def test_fortio_before_1_2_grpc_code_1_is_serving() -> None:
    r = read_client_result(DATA / "fortio-grpc-0.11.json")
    assert (r.requests, r.ok, r.failed) == (600, 588, 12)
    assert nonzero(r.by_class) == {"other": 12}
    assert r.start == datetime(2018, 5, 2, 17, 0, 0, 123456, tzinfo=UTC)  # -07:00 in the file


def test_fortio_grpc_other_health_statuses(tmp_path: Path) -> None:
    text = (DATA / "fortio-grpc-0.11.json").read_text().replace('"1": 588', '"1": 580, "2": 8')
    (tmp_path / "g.json").write_text(text)
    r = read_client_result(tmp_path / "g.json")
    assert (r.ok, r.failed) == (580, 20) and r.error_texts == {"NOT_SERVING": 8}
    text = (DATA / "fortio-grpc.json").read_text().replace('"SERVING": 2940', '"SERVING": 2900, "NOT_SERVING": 40')
    (tmp_path / "h.json").write_text(text)
    r = read_client_result(tmp_path / "h.json")
    assert (r.ok, r.failed, r.by_class["other"]) == (2900, 100, 100)


def test_fortio_http_key_1_stays_a_status_in_an_http_run(tmp_path: Path) -> None:
    text = (DATA / "fortio-rollout.json").read_text().replace('"200": 5857', '"200": 5856, "1": 1')
    (tmp_path / "f.json").write_text(text)
    r = read_client_result(tmp_path / "f.json")
    assert r.ok == 5856 and r.by_class["other"] == 122


def test_nighthawk_string_counts() -> None:
    r = read_client_result(DATA / "nighthawk-fortio.json")
    assert (r.requests, r.ok, r.failed) == (1500, 1490, 10)
    assert r.status_codes == {200: 1490, 503: 10} and nonzero(r.by_class) == {"http_503": 10}
    assert r.duration_s == pytest.approx(30.00078) and r.qps == pytest.approx(49.9987) and r.warnings == []


def test_fortio_unreadable_count_is_a_warning(tmp_path: Path) -> None:
    text = (DATA / "nighthawk-fortio.json").read_text().replace('"503": "10"', '"503": "ten"')
    (tmp_path / "n.json").write_text(text)
    r = read_client_result(tmp_path / "n.json")
    # the histogram still counts 1500 calls: the 10 uncoded ones are "other"
    assert r.ok == 1490 and r.by_class["other"] == 10
    assert any("'ten' is not a number" in w for w in r.warnings)


# ------------------------------------------------------------------------------------------- fortio access log


def test_fortio_access_log() -> None:
    r = read_client_result(DATA / "fortio-access.jsonl")
    assert (r.requests, r.ok, r.failed) == (8, 4, 4)
    assert nonzero(r.by_class) == {"http_502": 1, "http_503": 1, "other": 2}
    t = r.requests_table
    assert t is not None
    assert times_ns(t)[:3] == [T0 + 1234567, T0 + 2345678, T0 + 101234567]
    assert list(t["status"]) == [200, 200, 0, 0, 503, 200, 502, 200]
    assert list(t["error"])[2:4] == ["-1", "-1"]
    assert t["latency_s"].iloc[0] == pytest.approx(0.001523)
    assert r.start == datetime(2026, 11, 26, 8, 0, 0, 1234, tzinfo=UTC)
    assert r.end == datetime(2026, 11, 26, 8, 0, 0, 304234, tzinfo=UTC)  # 0.302345678 + 0.0011


def test_fortio_access_log_grpc(tmp_path: Path) -> None:
    refused = (
        "rpc error: code = Unavailable desc = connection error: desc = \\\"transport: Error while dialing: "
        "dial tcp 10.96.0.11:8079: connect: connection refused\\\""
    )
    lines = [
        f'{{"latency":0.001,"timestamp":{T0},"thread":0,"iter":0,"ok":true,"details":"SERVING"}}',
        f'{{"latency":0.002,"timestamp":{T0 + 10**8},"thread":0,"iter":1,"ok":false,"details":"{refused}"}}',
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    r = read_client_result(tmp_path / "a.jsonl")
    assert r.format == "fortio-access-log" and (r.ok, r.failed, r.by_class["refused"]) == (1, 1, 1)
    assert r.status_codes == {}


def test_fortio_access_log_without_outcome_is_refused(tmp_path: Path) -> None:
    # fortio 1.21-1.27 logged latency, timestamp and thread only
    (tmp_path / "old.jsonl").write_text(f'{{"latency":0.001,"timestamp":{T0},"thread":0}}\n')
    with pytest.raises(InputError) as info:
        read_client_result(tmp_path / "old.jsonl")
    assert "looks like fortio-access-log" in str(info.value) and "before 1.28" in str(info.value)


# ------------------------------------------------------------------------------------------- vegeta


def test_vegeta_json() -> None:
    r = read_client_result(DATA / "vegeta-results.json")
    assert (r.requests, r.ok, r.failed) == (10, 3, 7)
    assert nonzero(r.by_class) == {"refused": 2, "reset": 2, "timeout": 1, "http_502": 1, "http_503": 1}
    assert nonzero(r.by_error) == {"connection_refused": 2, "connection_reset": 2, "timeout": 1, "http_5xx": 2}
    assert r.status_codes == {200: 3, 502: 1, 503: 1} and r.error_texts[REFUSED] == 2
    t = r.requests_table
    assert t is not None
    # written at +01:00: read as UTC, to the nanosecond
    assert times_ns(t)[0] == T0 + 123456 and times_ns(t)[9] == T0 + 900121000
    assert list(t["error_class"]) == ["", "", "refused", "refused", "http_503", "timeout", "reset", "http_502",
                                      "reset", ""]  # fmt: skip
    assert t["latency_s"].iloc[5] == pytest.approx(1.000412345)
    assert r.start == datetime(2026, 11, 26, 8, 0, 0, 123, tzinfo=UTC)
    assert r.end == datetime(2026, 11, 26, 8, 0, 1, 500531, tzinfo=UTC)  # the timed-out request's end
    assert r.duration_s == pytest.approx(1.500407889) and r.time_known


def test_vegeta_csv_is_the_same_as_json() -> None:
    j, c = read_client_result(DATA / "vegeta-results.json"), read_client_result(DATA / "vegeta-results.csv")
    assert c.format == "vegeta-csv"
    assert (c.requests, c.ok, c.by_class, c.by_error, c.status_codes, c.error_texts, c.start, c.end) == (
        j.requests, j.ok, j.by_class, j.by_error, j.status_codes, j.error_texts, j.start, j.end)  # fmt: skip
    assert j.requests_table is not None and c.requests_table is not None
    pd.testing.assert_frame_equal(j.requests_table, c.requests_table)


def test_vegeta_old_csv_with_fewer_columns(tmp_path: Path) -> None:
    rows = (DATA / "vegeta-results.csv").read_text().splitlines()
    (tmp_path / "v.csv").write_text("\n".join(",".join(r.split(",")[:7]) for r in rows[:2]) + "\n")
    r = read_client_result(tmp_path / "v.csv")
    assert r.format == "vegeta-csv" and r.ok == 2


def test_damaged_line_is_a_warning_not_an_error(tmp_path: Path) -> None:
    lines = (DATA / "vegeta-results.json").read_text().splitlines()
    lines.insert(4, "{\"attack\":\"rollout\",\"seq\":")  # cut mid-line
    (tmp_path / "v.json").write_text("\n".join(lines) + "\n")
    r = read_client_result(tmp_path / "v.json")
    assert r.requests == 10 and r.warnings == ["1 unreadable line(s) skipped (line 5: not JSON)"]


def test_mostly_damaged_file_is_an_error(tmp_path: Path) -> None:
    good = (DATA / "vegeta-results.json").read_text().splitlines()[0]
    (tmp_path / "v.json").write_text("\n".join([good, "{oops", "{oops", "{oops"]) + "\n")
    with pytest.raises(InputError) as info:
        read_client_result(tmp_path / "v.json")
    assert "looks like vegeta-json but 3 of 4 lines are not vegeta JSON results" in str(info.value)


# ------------------------------------------------------------------------------------------- k6


def test_k6_json() -> None:
    r = read_client_result(DATA / "k6-results.json")
    assert (r.requests, r.ok, r.failed) == (8, 3, 5)  # one request = one http_reqs point
    assert nonzero(r.by_class) == {"refused": 1, "reset": 2, "timeout": 1, "http_503": 1}
    assert nonzero(r.by_error) == {"connection_refused": 1, "connection_reset": 1, "eof": 1, "timeout": 1,
                                   "http_5xx": 1}  # fmt: skip
    t = r.requests_table
    assert t is not None
    # time = the point's time (the request's end) - http_req_duration
    assert times_ns(t) == [T0 + 100_000_000, T0 + 200_000_000, T0 + 300_301_000, T0 + 400_000_000,
                           T0 + 500_000_000, T0 + 600_000_000, T0 + 700_000_000, T0 + 800_000_000]  # fmt: skip
    assert list(t["status"]) == [200, 200, 0, 503, 0, 0, 0, 200]
    assert list(t["error"])[2] == "dial: connection refused"
    assert t["latency_s"].iloc[4] == pytest.approx(1.000412345)
    assert r.end == datetime(2026, 11, 26, 8, 0, 1, 500412, tzinfo=UTC)
    assert any("k6 stamps a request with its end" in w for w in r.warnings)


def test_k6_gzip_and_error_code_without_text(tmp_path: Path) -> None:
    text = (DATA / "k6-results.json").read_text().replace('"error":"dial: connection refused",', "")
    (tmp_path / "k6.json.gz").write_bytes(gzip.compress(text.encode()))
    r = read_client_result(tmp_path / "k6.json.gz")
    assert r.format == "k6-json" and r.by_class["refused"] == 1  # error_code 1212


def test_k6_without_duration_points(tmp_path: Path) -> None:
    lines = [ln for ln in (DATA / "k6-results.json").read_text().splitlines() if "http_req_duration" not in ln]
    (tmp_path / "k6.json").write_text("\n".join(lines) + "\n")
    r = read_client_result(tmp_path / "k6.json")
    t = r.requests_table
    assert t is not None and r.requests == 8 and math.isnan(t["latency_s"].iloc[0])
    assert times_ns(t)[0] == T0 + 101_523_000  # the end
    assert any("8 http_reqs point(s) without their http_req_duration" in w for w in r.warnings)


# ------------------------------------------------------------------------------------------- hey


def test_hey_text_classes() -> None:
    r = read_client_result(DATA / "hey-rollout.txt")
    # EOF is a reset (the server closed a reused connection); by_error keeps it apart as before
    assert nonzero(r.by_class) == {"refused": 312, "reset": 44, "timeout": 8, "http_502": 9, "http_503": 2}
    assert r.by_error["eof"] == 3 and r.by_error["connection_reset"] == 41
    assert (r.start, r.end, r.time_known, r.capped, r.warnings) == (None, None, False, False, [])


def test_hey_text_with_a_given_start() -> None:
    start = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    r = read_client_result(DATA / "hey-rollout.txt", start=start)
    assert r.start == start and r.end == datetime(2026, 11, 26, 8, 0, 30, 12100, tzinfo=UTC) and r.time_known


def test_hey_without_summary() -> None:
    r = read_client_result(DATA / "hey-errors-only.txt")
    assert (r.requests, r.ok, r.failed) == (200, 0, 200)
    assert nonzero(r.by_class) == {"refused": 180, "timeout": 20}
    assert r.duration_s is None and r.qps is None
    assert r.warnings == ["no Summary: block (hey prints none when every request failed): run time unknown"]


def test_hey_cap_is_flagged() -> None:
    r = read_client_result(DATA / "hey-capped.txt")
    assert r.capped and sum(r.status_codes.values()) == HEY_MAX_RESULTS
    assert (r.requests, r.ok, r.by_class["refused"], r.by_class["reset"], r.by_class["http_503"]) == (
        1_001_300, 999_412, 1204, 96, 588)  # fmt: skip
    missing = round(166.8469 * 7200.0125) - 1_001_300
    assert len(r.warnings) == 1 and f"about {missing:,} response(s) are not counted" in r.warnings[0]


def test_hey_exactly_a_million_is_not_capped(tmp_path: Path) -> None:
    text = (DATA / "hey-capped.txt").read_text().replace("166.8469", "139.0692")  # 1,001,300 results in all
    (tmp_path / "hey.txt").write_text(text)
    assert not read_client_result(tmp_path / "hey.txt").capped


def test_hey_csv_offsets() -> None:
    r = read_client_result(DATA / "hey-rollout.csv")
    assert (r.requests, r.ok, r.failed) == (10, 7, 3)
    assert nonzero(r.by_class) == {"http_502": 1, "http_503": 1, "http_504": 1}
    assert (r.start, r.end, r.time_known) == (None, None, False)
    t = r.requests_table
    assert t is not None
    assert times_ns(t)[:3] == [1_200_000, 101_300_000, 201_100_000]  # offsets from the start
    assert t["latency_s"].iloc[6] == pytest.approx(1.0043)
    assert r.duration_s == pytest.approx(0.6015 + 1.0043 - 0.0012)
    assert any("only the requests that got an HTTP response" in w for w in r.warnings)
    assert any("offsets from the start of the run" in w for w in r.warnings)


def test_hey_csv_with_a_given_start() -> None:
    r = read_client_result(DATA / "hey-rollout.csv", "hey-csv", start=datetime(2026, 11, 26, 8, 0, tzinfo=UTC))
    t = r.requests_table
    assert t is not None and r.time_known and times_ns(t)[0] == T0 + 1_200_000
    assert r.start == datetime(2026, 11, 26, 8, 0, 0, 1200, tzinfo=UTC)
    assert not any("offsets from the start of the run" in w for w in r.warnings)


def test_hey_csv_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert HEY_MAX_RESULTS == 1_000_000  # hey's maxRes; a file that long takes seconds to read: use 100 here
    monkeypatch.setattr(client_result, "HEY_MAX_RESULTS", 100)
    row = "0.0015,0.0003,0.0000,0.0000,0.0011,0.0001,200,0.0012"
    header = (DATA / "hey-rollout.csv").read_text().splitlines()[0]
    (tmp_path / "big.csv").write_text(header + ("\n" + row) * 100)
    r = read_client_result(tmp_path / "big.csv")
    assert r.capped and r.requests == 100
    assert any("at most 100 results" in w for w in r.warnings)
    (tmp_path / "small.csv").write_text(header + ("\n" + row) * 99)
    assert not read_client_result(tmp_path / "small.csv").capped


def test_hey_csv_header_only_is_no_response_not_an_error(tmp_path: Path) -> None:
    header = (DATA / "hey-rollout.csv").read_text().splitlines()[0]
    (tmp_path / "hey.csv").write_text(header + "\n")  # what hey -o csv writes when every request failed
    r = read_client_result(tmp_path / "hey.csv")
    assert r.format == "hey-csv" and (r.requests, r.failed) == (0, 0)
    assert r.warnings[0] == "no response at all: every request may have failed (hey -o csv lists none of them)"


def test_client_start_rfc3339_or_unix_seconds() -> None:
    from auditor.sources.client_result import parse_client_start

    want = datetime(2026, 11, 26, 8, 0, 0, 1200, tzinfo=UTC)
    assert parse_client_start("2026-11-26T08:00:00.0012Z") == want
    assert parse_client_start("2026-11-26T09:00:00.001200+01:00") == want
    assert parse_client_start("1795680000.001200345") == want  # date +%s.%N (µs kept)
    with pytest.raises(AuditorError) as info:
        parse_client_start("yesterday")
    assert "\n" not in str(info.value) and "'yesterday' is not a time" in str(info.value)


def test_a_start_is_said_unused_by_a_format_with_its_own_times() -> None:
    r = read_client_result(DATA / "vegeta-results.json", start=datetime(2030, 1, 1, tzinfo=UTC))
    assert r.warnings == ["the given start time is not used: vegeta-json results carry their own times"]
    assert r.start is not None and r.start.year == 2026


def test_real_hey_csv_on_loopback(tmp_path: Path) -> None:
    """The real hey's -o csv, read back: a row per response with its status, offsets that, from the time
    hey was launched, land within the match tolerance before the server saw each request; refused
    requests are missing (the header alone)."""
    import shutil
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from auditor.correlate.client import MATCH_TOLERANCE_NS

    if shutil.which("hey") is None:
        pytest.skip("needs the 'hey' command (installed by .ci/install)")
    arrivals: list[tuple[int, int]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 502 if len(arrivals) % 3 == 2 else 200
            arrivals.append((time.time_ns(), code))
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        launched = time.time_ns()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        proc = subprocess.run(["hey", "-n", "30", "-c", "1", "-o", "csv", url], capture_output=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "hey.csv").write_bytes(proc.stdout)
    r = read_client_result(tmp_path / "hey.csv", start=datetime.fromtimestamp(launched // 1000 / 1e6, UTC))
    assert r.format == "hey-csv" and r.time_known and r.requests == len(arrivals) == 30
    assert nonzero(r.by_class) == {"http_502": sum(1 for _, c in arrivals if c == 502)} == {"http_502": 10}
    t = r.requests_table
    assert t is not None
    placed = sorted(zip(times_ns(t), t["status"].tolist(), strict=True))  # -c 1: one request after another
    for (at, status), (seen, code) in zip(placed, arrivals, strict=True):
        assert status == code and at <= seen <= at + MATCH_TOLERANCE_NS, (at, seen)

    with socket.socket() as s:  # a port nobody listens on: every request refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = subprocess.run(["hey", "-n", "5", "-c", "1", "-o", "csv", f"http://127.0.0.1:{port}/"],
                             capture_output=True, timeout=60)  # fmt: skip
    (tmp_path / "refused.csv").write_bytes(refused.stdout)
    assert refused.stdout.decode().strip() == (DATA / "hey-rollout.csv").read_text().splitlines()[0]
    assert read_client_result(tmp_path / "refused.csv").requests == 0


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("content", ["hello\n", "a,b,c\n1,2,3\n", '{"type": "other"}\n', "\x00\x01binary"])
def test_unreadable_file_names_the_formats_tried(tmp_path: Path, content: str) -> None:
    (tmp_path / "r.out").write_text(content)
    with pytest.raises(InputError) as info:
        read_client_result(tmp_path / "r.out")
    line = str(info.value)
    assert "\n" not in line and "r.out" in line and "tried " + ", ".join(CLIENT_FORMATS) in line


def test_unknown_format_name() -> None:
    with pytest.raises(AuditorError, match="unknown client format 'wrk'"):
        read_client_result(DATA / "hey-rollout.txt", "wrk")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_client_result(tmp_path / "nope.json")


def test_analyze_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("time,kind,family,src,sport,dst,dport\n2026-11-26T08:00:00Z,tcp_syn,4,10.244.0.12,40000,10.96.0.10,80\n")
    (tmp_path / "client.out").write_text("hello\n")
    proc = subprocess.run(
        [sys.executable, "-m", "auditor", "analyze", "--events", str(events), "--kube",
         str(REPO / "examples" / "rollout" / "kube.json"), "--client", str(tmp_path / "client.out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "client.out" in lines[0] and "tried fortio-json" in lines[0]


def test_analyze_bad_client_start_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "auditor", "analyze", "--pcap", str(REPO / "examples" / "rollout" / "node.pcap"),
         "--kube", str(REPO / "examples" / "rollout" / "kube.json"), "--client", str(DATA / "hey-rollout.csv"),
         "--client-start", "08:00"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--client-start '08:00' is not a time" in lines[0], proc.stderr


def test_json_document_counts_the_table_rows() -> None:
    from auditor.report.document import _plain

    doc = _plain(read_client_result(DATA / "vegeta-results.json"))
    assert doc["requests_table"] == {"rows": 10} and doc["format"] == "vegeta-json"
    assert doc["by_class"]["refused"] == 2


# ------------------------------------------------------------------------------------------- classes, table


@pytest.mark.parametrize(
    ("status", "text", "cls"),
    [
        (200, "", ErrorClass.NONE),
        (301, "", ErrorClass.NONE),
        (0, 'Get "http://10.96.0.10/": dial tcp 10.96.0.10:80: connect: connection refused', ErrorClass.REFUSED),
        (0, "dial tcp 10.96.0.10:80: getsockopt: connection refused", ErrorClass.REFUSED),
        (0, "read tcp 10.244.0.12:53422->10.96.0.10:80: read: connection reset by peer", ErrorClass.RESET),
        (0, 'Get "http://10.96.0.10/": http: server closed idle connection', ErrorClass.RESET),
        (0, 'Get "http://10.96.0.10/": EOF', ErrorClass.RESET),
        (0, "unexpected EOF", ErrorClass.RESET),
        (0, "write tcp 10.244.0.12:53422->10.96.0.10:80: write: broken pipe", ErrorClass.RESET),
        (0, 'Get "x": context deadline exceeded (Client.Timeout exceeded while awaiting headers)', ErrorClass.TIMEOUT),
        (0, "dial tcp 10.96.0.10:80: i/o timeout", ErrorClass.TIMEOUT),
        (502, "502 Bad Gateway", ErrorClass.HTTP_502),
        (503, "", ErrorClass.HTTP_503),
        (504, "", ErrorClass.HTTP_504),
        (500, "", ErrorClass.HTTP_5XX),
        (599, "", ErrorClass.HTTP_5XX),
        (404, "404 Not Found", ErrorClass.OTHER),
        (429, "", ErrorClass.OTHER),
        (0, "", ErrorClass.OTHER),
        (0, 'Get "http://x/": dial tcp: lookup x: no such host', ErrorClass.OTHER),
        (200, "unexpected EOF", ErrorClass.RESET),  # the body was cut
    ],
)
def test_classify(status: int, text: str, cls: ErrorClass) -> None:
    assert classify(status, text) is cls


def test_classify_error_keeps_the_older_kinds() -> None:
    assert classify_error('Get "http://x/": EOF') == "eof"
    assert classify_error("read: connection reset by peer") == "connection_reset"
    assert classify_error("http: server closed idle connection") == "connection_reset"  # was "other"
    assert classify_error("write: broken pipe") == "connection_reset"


def test_client_frame_columns_come_from_the_record() -> None:
    assert CLIENT_COLUMNS == ("time", "latency_s", "status", "error_class", "error")
    empty = client_frame()
    assert list(empty.columns) == list(CLIENT_COLUMNS) and len(empty) == 0
    assert str(empty["time"].dtype) == "datetime64[ns, UTC]"
    t = client_frame([ClientRequest(T0 + 1, 0.5, 503, ErrorClass.HTTP_503.value, "")])
    assert int(t["time"].iloc[0].value) == T0 + 1 and t["status"].dtype == "int32"
    assert list(t["error_class"].cat.categories) == [c.value for c in ErrorClass]
