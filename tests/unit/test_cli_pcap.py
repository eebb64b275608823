"""``auditor pcap summary|events``: JSON counts, the three event file formats round-trip, bad input."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

from auditor.cli import main
from auditor.model.packet import PACKET_COLUMNS
from auditor.sources.capture import read_capture
from auditor.sources.eventfile import read_events
from tests.unit.test_capture_formats import T0, ng_block, ng_epb, ng_idb, tcp_frame, write_pcap

MAC = "02:00:00:00:00:02"


def sample(tmp_path: Path) -> Path:
    frames = [
        bytes(Ether(dst=MAC) / IP(src="10.244.1.7", dst="10.96.0.10") / TCP(sport=1, dport=80, flags="S")),
        bytes(Ether(dst=MAC) / IP(src="10.96.0.10", dst="10.244.1.7") / TCP(sport=80, dport=1, flags="RA")),
        bytes(Ether(dst=MAC) / IP(src="10.244.1.7", dst="10.96.0.10") / TCP(sport=1, dport=80, flags="A")),
        bytes(
            Ether(dst=MAC)
            / IP(src="10.244.2.2", dst="10.244.1.7")
            / ICMP(type=3, code=3)
            / IP(src="10.244.1.7", dst="10.96.0.11")
            / TCP(sport=2, dport=81, flags="S")
        ),
    ]
    times = [(T0, 1), (T0, 999_999_999), (T0 + 1, 0), (T0 + 2, 123_456_789)]
    path = write_pcap(tmp_path / "s.pcap", frames, nsec=True, times=times)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_summary_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["pcap", "summary", str(sample(tmp_path)), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    want = {
        "frames": 4,
        "tcp": 3,
        "tcp_rst": 1,
        "tcp_syn": 1,
        "tcp_fin": 0,
        "icmp_unreachable": 1,
        "skipped": 0,
    }
    assert {k: data[k] for k in want} == want
    assert data["link_types"] == {"EN10MB": 4}
    assert data["errors"] == []


def test_summary_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["pcap", "summary", str(sample(tmp_path))], capsys)
    assert code == 0
    assert "tcp_rst" in out and "EN10MB" in out


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_events_round_trip(tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = sample(tmp_path)
    out_file = tmp_path / f"events{suffix}"
    code, _, err = run(["pcap", "events", str(path), "-o", str(out_file), "--node", "node-b"], capsys)
    assert code == 0, err
    back = read_events(out_file)
    direct = read_capture(path, node="node-b").events
    assert list(back.columns) == list(PACKET_COLUMNS)
    assert len(back) == 3
    assert list(back["kind"].astype(str)) == ["tcp_syn", "tcp_rst", "icmp_unreachable"]
    assert [int(t.value) for t in back["time"]] == [int(t.value) for t in direct["time"]]
    assert int(back["time"].iloc[1].value) == T0 * 10**9 + 999_999_999  # ns survive every format
    assert str(back["time"].dtype) == "datetime64[ns, UTC]"
    assert str(back["src"].dtype) == "category"
    assert list(back["reporter"].astype(str)) == ["", "", "10.244.2.2"]
    assert list(back["dst"].astype(str)) == ["10.96.0.10", "10.244.1.7", "10.96.0.11"]
    assert set(back["node"].astype(str)) == {"node-b"}
    for col in ("sport", "dport", "seq", "frame", "tcp_flags"):
        assert list(back[col]) == list(direct[col]), col
        assert back[col].dtype == direct[col].dtype, col


def test_events_jsonl_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["pcap", "events", str(sample(tmp_path))], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["kind"] for r in rows] == ["tcp_syn", "tcp_rst", "icmp_unreachable"]
    assert rows[0]["time"] == "2023-11-14T22:13:20.000000001Z"
    assert rows[2]["sport"] == 2 and rows[2]["dport"] == 81


def test_explicit_format_overrides_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "events.out"
    code, _, err = run(
        ["pcap", "events", str(sample(tmp_path)), "--format", "csv", "-o", str(out_file)], capsys
    )
    assert code == 0, err
    assert out_file.read_text().startswith("time,kind,")


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"GIF89a garbage" * 20, "not a pcap or pcapng capture")],
)
def test_bad_input_one_line_exit_2(
    tmp_path: Path, content: bytes, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    for argv in (
        ["pcap", "summary", str(bad), "--json"],
        ["pcap", "events", str(bad), "-o", str(tmp_path / "o.parquet")],
    ):
        code, _, err = run(argv, capsys)
        assert code == 2
        assert err.count("\n") == 1 and reason in err and str(bad) in err
        assert "Traceback" not in err
    assert not (tmp_path / "o.parquet").exists()  # no half-written output


def test_truncated_file_warns_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sample(tmp_path)
    path.write_bytes(path.read_bytes()[:-5])
    code, out, _ = run(["pcap", "summary", str(path), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["frames"] == 3 and data["skipped"] == 1
    assert data["errors"][0].startswith("truncated record at byte ")
    code, _, err = run(["pcap", "events", str(path), "-o", str(tmp_path / "e.jsonl")], capsys)
    assert code == 0 and "truncated record" in err


def test_unknown_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["pcap", "events", str(sample(tmp_path)), "-o", str(tmp_path / "x.xlsx")], capsys)
    assert code == 2 and "--format" in err


def test_events_path_does_not_import_pandas(tmp_path: Path) -> None:
    # start-up stays lean: the streaming path uses numpy + pyarrow only
    code = (
        "import sys; from auditor.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    path = sample(tmp_path)
    for argv in (
        ["pcap", "events", str(path), "-o", str(tmp_path / "e.parquet")],
        ["pcap", "summary", str(path)],
    ):
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_pcapng_of_unknown_major_version_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shb_v2 = ng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1))  # pcapng 2.0
    bad = tmp_path / "v2.pcapng"
    bad.write_bytes(shb_v2 + ng_idb(1) + ng_epb(0, 1, tcp_frame("S")))
    for argv in (
        ["pcap", "summary", str(bad), "--json"],
        ["pcap", "events", str(bad), "-o", str(tmp_path / "o.parquet")],
    ):
        code, out, err = run(argv, capsys)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "Traceback" not in err
        assert str(bad) in err and "unsupported pcapng version 2.0" in err and "at byte 0" in err
        assert "re-capture with tcpdump -w" in err  # what to do
    assert not (tmp_path / "o.parquet").exists()
