"""``auditor analyze --dir``: an agent's log directory, or a collection of them, read by file names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from auditor.cli import main
from auditor.collect.layout import find_log_dirs
from auditor.model.logfiles import classify_log_file
from auditor.model.packet import PacketEvent
from auditor.sinks.eventlog import EventLog
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "rollout"
STAMP = "20261126T082000Z"


def example_events(node: str) -> list[PacketEvent]:
    """The example rollout's capture as packet events, as if recorded on ``node``."""
    from dataclasses import fields

    from auditor.sources.capture import read_capture

    frame = read_capture(EXAMPLE / "node.pcap", node=node).events
    names = [f.name for f in fields(PacketEvent) if f.name != "time_ns"]
    times = frame["time"].astype("int64").tolist()
    rows = frame[names].to_dict("records")
    return [PacketEvent(time_ns=int(t), **{k: r[k] for k in names}) for t, r in zip(times, rows, strict=True)]


def write_log_dir(d: Path, node: str, *, event_node: str | None = None) -> Path:
    """An agent log directory for ``node``: a finished Parquet segment, a JSONL one, a kube stream,
    an empty dataplane file and a leftover ``.parquet.part`` (which nobody may read)."""
    from dataclasses import replace

    events = [replace(e, node=node if event_node is None else event_node) for e in example_events(node)]
    half = len(events) // 2
    log = EventLog(d, node, "parquet", clock=lambda: 1_795_000_000.0)
    log.write(events[:half])
    log.close()
    # the rest as JSONL, the format of the live segment of a running agent
    live = EventLog(d, node, "jsonl", clock=lambda: 1_795_000_300.0)
    live.write(events[half:])
    live.close()
    shutil.copy(EXAMPLE / "kube.json", d / f"kube-{node}-{STAMP}.json")
    (d / f"dataplane-{node}-{STAMP}.jsonl").write_text("")
    (d / f"events-{node}-{STAMP}-0099.parquet.part").write_bytes(b"PAR1 unfinished")
    (d / f"agent-{node}.json").write_text(json.dumps({"node": node}))
    return d


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("events-node-a-20261126T082000Z-0001.parquet", ("events", "node-a")),
        ("events-ip-10-0-1-2.ec2.internal-20261126T082000Z-0012.jsonl", ("events", "ip-10-0-1-2.ec2.internal")),
        ("kube-node-b-20261126T082000Z.json", ("kube", "node-b")),
        ("dataplane-n1-20261126T082000Z.jsonl", ("dataplane", "n1")),
        ("episodes-n1.jsonl", ("episodes", "n1")),
        ("agent-n1.json", ("agent", "n1")),
        ("events-node-a-20261126T082000Z-0001.parquet.part", None),
        ("events-node-a-20261126T082000Z-0001.jsonl.download", None),
        ("../events-node-a-20261126T082000Z-0001.jsonl", None),
        (".events-node-a-20261126T082000Z-0001.jsonl", None),
        ("kube-node-b.json", None),
        ("notes.txt", None),
    ],
)  # fmt: skip
def test_log_file_names(name: str, expected: tuple[str, str] | None) -> None:
    assert classify_log_file(name) == expected


def test_one_log_dir_node_from_file_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # event rows without a node name: the node comes from the segment's file name
    write_log_dir(tmp_path, "worker-7", event_node="")
    code, out, err = run(capsys, "analyze", "--dir", str(tmp_path), "--json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    assert [n["node"] for n in doc["nodes"]] == ["worker-7"]
    assert doc["verdict"] == "GAP"
    assert doc["causes"]["propagation_gap"] > 0
    (info,) = doc["inputs"]["log_dirs"]
    assert info["nodes"] == ["worker-7"]
    assert info["event_segments"] == 3 and info["kube_files"] == 1  # 2 segments and the unfinished one
    assert info["empty_files"] == 1  # the empty dataplane file is skipped, not an error
    # the leftover .parquet.part is never read: skipped, counted, reported
    assert doc["inputs"]["event_segments_skipped"] == 1
    (problem,) = doc["inputs"]["problems"]
    assert problem.startswith(f"events-worker-7-{STAMP}-0099.parquet.part: unfinished Parquet segment")


def test_dir_matches_explicit_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_log_dir(tmp_path, "n1")
    segs = sorted(str(p) for p in tmp_path.glob("events-n1-*") if not p.name.endswith(".part"))
    args = [a for s in segs for a in ("--events", s)]
    code, out, err = run(capsys, "analyze", *args, "--kube", str(EXAMPLE / "kube.json"), "--json")
    assert code == 0, err
    explicit = json.loads(out)
    code, out, err = run(capsys, "analyze", "--dir", str(tmp_path), "--json")
    assert code == 0, err
    by_dir = json.loads(out)
    assert by_dir["nodes"] == explicit["nodes"]
    assert by_dir["causes"] == explicit["causes"]


def test_collection_of_dirs_is_found(tmp_path: Path) -> None:
    write_log_dir(tmp_path / "a", "a")
    write_log_dir(tmp_path / "b", "b")
    (tmp_path / "empty").mkdir()
    found = find_log_dirs(tmp_path)
    assert [d.nodes for d in found] == [["a"], ["b"]]
    # a leftover .parquet.part is listed last, to be reported by the loader (which never reads it)
    for d in found:
        (part,) = d.unfinished
        assert part.name.endswith(".parquet.part") and d.events[d.nodes[0]][-1] == part


def test_bad_dirs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "analyze", "--dir", str(tmp_path / "nope"))
    assert code == 2 and "no such directory" in err and "Traceback" not in err
    code, _, err = run(capsys, "analyze", "--dir", str(tmp_path))
    assert code == 2 and "no auditor log files" in err and len(err.strip().splitlines()) == 1
    d = tmp_path / "nokube"
    write_log_dir(d, "n1")
    (d / f"kube-n1-{STAMP}.json").unlink()
    code, _, err = run(capsys, "analyze", "--dir", str(d))
    assert code == 2 and "no Kubernetes input" in err


def test_kube_still_required_without_dir(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "analyze", "--pcap", str(EXAMPLE / "node.pcap"))
    assert code == 2 and "no Kubernetes input" in err


def test_jsonl_next_to_its_parquet_twin_is_not_read_twice(tmp_path: Path) -> None:
    write_log_dir(tmp_path, "n1")
    parquet = next(tmp_path.glob("events-n1-*.parquet"))
    twin = parquet.with_suffix(".jsonl")
    twin.write_text(next(tmp_path.glob("events-n1-*.jsonl")).read_text())
    (d,) = find_log_dirs(tmp_path)
    assert twin not in d.events["n1"] and parquet in d.events["n1"]
    assert len(d.events["n1"]) == 3 and d.events["n1"][-1] in d.unfinished
