"""Dataplane JSONL records: round trip, validation, and the file reader's problem policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.errors import AuditorError
from auditor.model.dataplane import DATAPLANE_COLUMNS, DataplaneRecord, dataplane_frame
from auditor.model.kube import parse_time_ns
from auditor.sources.dataplane_file import read_dataplane

NODE_A = """\
# written by auditor agent on node-a
{"time":"2026-11-26T08:00:02.913000000Z","node":"node-a","ip":"10.244.2.9","port":8080,"protocol":"TCP","op":"added","backend":"iptables-nft","service":"shop/web","chain":"KUBE-SEP-7GQ3LZ2WUXKA4N6M","source":"nft-monitor"}
{"time":"2026-11-26T08:00:05.801442117Z","node":"node-a","ip":"10.244.1.7","port":8080,"protocol":"TCP","op":"removed","backend":"iptables-nft","service":"shop/web","chain":"KUBE-SEP-4XBCOW2OFE2WC5QH","source":"nft-monitor"}
{"time":"2026-11-26T08:00:06Z","node":"node-a","ip":"10.244.1.7","port":70000,"protocol":"TCP","op":"removed","backend":"iptables-nft"}
{"time":"2026-11-26T08:00:06Z","node":"node-a","ip":"10.244.1.7","port":8080,"protocol":"TCP","op":"removed"
{"time":"2026-11-26T08:00:07Z","node":"node-a","ip":"10.244.1.77","port":53,"protocol":"UDP","op":"removed","backend":"ipvs","service":null,"extra":1}
"""
NODE_B = """\
{"time":"2026-11-26T08:00:04.100000000Z","node":"node-b","ip":"fd00:10:244:0001::7","port":8080,"protocol":"TCP","op":"removed","backend":"nftables","service":"shop/web"}
{"time":"2026-11-26T08:00:04Z","node":"node-b","ip":"10.244.1.7","port":8080,"protocol":"HTTP","op":"removed","backend":"nftables"}
"""


def test_round_trip_exact_nanoseconds() -> None:
    rec = DataplaneRecord(1795680005801442117, "node-a", "10.244.1.7", 8080, "TCP", "removed", "iptables-nft",
                          service="shop/web", chain="KUBE-SEP-4XBCOW2OFE2WC5QH", source="nft-monitor")  # fmt: skip
    line = rec.to_json_line()
    assert line.startswith('{"time":"2026-11-26T08:00:05.801442117Z","node":"node-a"')
    assert DataplaneRecord.from_json(line) == rec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"port": "80"}, "port is not 0..65535"),
        ({"op": "deleted"}, "op must be one of added|removed"),
        ({"ip": "pod-a"}, "ip is not an address"),
        ({"time": 12}, "time is not an RFC 3339 string"),
        ({"backend": None}, "missing backend"),
        ({"service": 3}, "service must be a string or null"),
    ],
)
def test_validation_messages(change: dict[str, object], message: str) -> None:
    good = {"time": "2026-11-26T08:00:06Z", "node": "n", "ip": "10.0.0.1", "port": 80, "protocol": "TCP",
            "op": "added", "backend": "ipvs"}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        DataplaneRecord.from_json({**good, **change})


def test_read_files_with_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "node-a.jsonl").write_text(NODE_A)
    (tmp_path / "node-b.jsonl").write_text(NODE_B)
    dp = read_dataplane([tmp_path / "node-a.jsonl", tmp_path / "node-b.jsonl"])
    assert dp.records_read == 4 and dp.records_skipped == 3
    assert [str(p) for p in dp.problems] == [
        "node-a.jsonl line 4: invalid dataplane record (port is not 0..65535: 70000); skipped",
        "node-a.jsonl line 5: not a JSON dataplane record (Expecting ',' delimiter); skipped",
        "node-b.jsonl line 2: invalid dataplane record (protocol must be one of TCP|UDP|SCTP, not 'HTTP'); skipped",
    ]
    df = dp.changes
    assert tuple(df.columns) == DATAPLANE_COLUMNS
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["time"].is_monotonic_increasing
    assert df["ip"].tolist() == ["10.244.2.9", "fd00:10:244:1::7", "10.244.1.7", "10.244.1.77"]
    assert df["time"].iloc[2].value == parse_time_ns("2026-11-26T08:00:05.801442117Z")[0]
    assert df["service"].isna().tolist() == [False, False, False, True]
    assert df["chain"].iloc[2] == "KUBE-SEP-4XBCOW2OFE2WC5QH"
    assert df["port"].tolist() == [8080, 8080, 8080, 53]


def test_empty_file_is_valid_and_garbage_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    dp = read_dataplane([tmp_path / "empty.jsonl"])
    assert dp.changes.empty and list(dp.changes.columns) == list(dataplane_frame().columns)
    (tmp_path / "junk.jsonl").write_text("Chain KUBE-SERVICES (2 references)\ntarget prot opt source\n")
    with pytest.raises(AuditorError) as info:
        read_dataplane([tmp_path / "junk.jsonl"])
    assert "junk.jsonl" in str(info.value) and "no valid dataplane record in 2 line(s)" in str(info.value)
    with pytest.raises(AuditorError):
        read_dataplane([tmp_path / "absent.jsonl"])
