"""``auditor record --kube-only`` against the fake API server, run as an unprivileged user.

As root (CI) the recorder drops to ``nobody`` in its subprocess (tests/unprivileged.py) and writes into a
directory that user owns; the tests check what it wrote against the changes the server made, that it
never imported bcc or the agent, that it stops on SIGTERM and ``--duration`` with every event written,
that it relists after 410 Gone, that it honours a namespace and a label selector, its progress line on a
terminal, and its one-line errors.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.kubeserver.server import FakeApiServer
from tests.unprivileged import demote, env, give, ids, owned_dir

# runs the CLI, then writes which modules it had imported (the kube-only path must not touch these)
_RUNNER = """
import json, sys
from auditor.cli import main
code = 0
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
bad = sorted(m for m in sys.modules if m == "bcc" or m.startswith(("bcc.", "auditor.agent", "auditor.sources.live")))
with open(sys.argv[1], "w") as f:
    json.dump({"forbidden_imports": bad}, f)
sys.exit(code)
"""


def _pod(name: str, ns: str = "default", app: str = "web", ip: str = "10.244.0.5") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"namespace": ns, "name": name, "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": ip}}  # fmt: skip


def _slice(name: str, ns: str = "default") -> dict[str, Any]:
    return {"kind": "EndpointSlice", "metadata": {"namespace": ns, "name": name,
            "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}], "ports": [{"port": 80}]}  # fmt: skip


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _events(directory: Path) -> list[dict[str, Any]]:
    files = sorted(directory.glob("kube-*.json"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


class Recorder:
    """``auditor record --kube-only`` in a subprocess, as the unprivileged user."""

    def __init__(self, work: Path, kubeconfig: Path, *args: str, stderr: Any = subprocess.PIPE) -> None:
        self.work, self.out, self.marker = work, work / "rec", work / "imports.json"
        argv = [sys.executable, "-c", _RUNNER, str(self.marker), "record", "--kube-only", "--out", str(self.out),
                "--kubeconfig", str(kubeconfig), "--node-name", "laptop", "--json", *args]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env(work) | {"PYTHONPATH": str(REPO)},
                                     preexec_fn=demote(), stdout=subprocess.PIPE, stderr=stderr)  # fmt: skip

    def events(self) -> list[dict[str, Any]]:
        try:
            return _events(self.out)
        except (AssertionError, ValueError):
            return []  # not created yet, or a line being written

    def finish(self, timeout: float = 30.0) -> tuple[int, dict[str, Any], str]:
        out, err = self.proc.communicate(timeout=timeout)
        text = err.decode(errors="replace") if isinstance(err, bytes) else ""
        summary = json.loads(out) if out.strip().startswith(b"{") else {}
        return self.proc.returncode, summary, text

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5) as server:
        yield server


@pytest.fixture
def work(api: FakeApiServer) -> Iterator[tuple[Path, Path]]:
    with owned_dir("auditor-kube-only-") as d:
        yield d, give(api.write_kubeconfig(d / "kubeconfig"))


def test_records_every_change_with_receipt_times_as_nobody(api: FakeApiServer, work: tuple[Path, Path]) -> None:
    d, kubeconfig = work
    api.create(_pod("web-a"))
    api.create(_slice("web-x"))
    rec = Recorder(d, kubeconfig)
    try:
        _wait(lambda: len(rec.events()) >= 2, 30, "the initial list in the file")
        t0 = time.time_ns()
        api.set_status("Pod", "default", "web-a", {"phase": "Succeeded"})
        api.delete("Pod", "default", "web-a")
        api.create(_pod("web-b", ip="10.244.0.6"))
        api.create({"kind": "Event", "metadata": {"namespace": "default", "name": "web-a.1"},
                    "involvedObject": {"kind": "Pod", "name": "web-a"}, "reason": "Killing"})  # fmt: skip
        t1 = time.time_ns()
        _wait(lambda: len(rec.events()) >= 6, 20, "the watched changes in the file")
        os.kill(rec.proc.pid, signal.SIGTERM)
        code, summary, err = rec.finish()
    finally:
        rec.kill()
    assert code == 0, err
    events = _events(rec.out)
    got = [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"]) for e in events]
    assert sorted(got[:2]) == [("ADDED", "EndpointSlice", "web-x"), ("ADDED", "Pod", "web-a")]
    # one watch per kind: the kinds may interleave, each kind's changes are in order
    assert [g for g in got[2:] if g[1] == "Pod"] == [("MODIFIED", "Pod", "web-a"), ("DELETED", "Pod", "web-a"),
                                                     ("ADDED", "Pod", "web-b")]  # fmt: skip
    assert [g for g in got[2:] if g[1] != "Pod"] == [("ADDED", "Event", "web-a.1")]
    # receipt times: every watched change stamped between the server's change and now, to the nanosecond
    from auditor.model.kube import parse_time_ns

    for e in events[2:]:
        observed, precise = parse_time_ns(e["observedAt"])
        assert precise and t0 <= observed <= time.time_ns(), e
        assert observed - t1 < 5_000_000_000, e
    assert summary["events"] == len(events) == 6
    assert summary["objects"] == {"pods": 2, "endpointslices": 1, "events": 1}
    assert summary["pod_deletions"] == 1 and summary["stopped_by"] == "SIGTERM"
    assert json.loads(rec.marker.read_text())["forbidden_imports"] == []
    uid, _ = ids()
    assert rec.out.stat().st_uid == uid and next(rec.out.glob("kube-laptop-*.json")).stat().st_uid == uid


def test_duration_relist_after_410_and_the_analyzer_reads_it(api: FakeApiServer, work: tuple[Path, Path]) -> None:
    d, kubeconfig = work
    api.create(_pod("web-a"))
    rec = Recorder(d, kubeconfig, "--duration", "6s")
    try:
        _wait(lambda: len(rec.events()) >= 1, 30, "the initial list")
        _wait(lambda: api.open_watches >= 3, 10, "the three watches")
        with api.outage():  # watches dropped, requests refused; meanwhile the pod goes
            api.delete("Pod", "default", "web-a")
            api.expire_history()  # resuming from the last version now answers 410 Gone: the recorder relists
        code, summary, err = rec.finish()
    finally:
        rec.kill()
    assert code == 0, err
    assert summary["stopped_by"] == "duration" and 6 <= summary["elapsed_s"] < 12
    assert summary["relists"] >= 1, summary
    deleted = [e for e in _events(rec.out) if e["type"] == "DELETED"]
    assert [e["object"]["metadata"]["name"] for e in deleted] == ["web-a"]
    assert deleted[0].get("relisted") is True  # learnt by the relist: observedAt only bounds it
    assert summary["reconnects"] + summary["errors"] >= 1, summary
    # the directory is an input of `auditor analyze --dir` beside any capture (here the shipped example's)
    pcap = REPO / "examples" / "rollout" / "node.pcap"
    proc = subprocess.run([sys.executable, "-m", "auditor", "analyze", "--dir", str(rec.out), "--pcap", f"lab-node={pcap}",
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inputs"]["kube_events_read"] == 2


def test_namespace_and_label_selector(api: FakeApiServer, work: tuple[Path, Path]) -> None:
    d, kubeconfig = work
    api.create(_pod("web-a"))
    api.create(_pod("db-a", app="db"))
    api.create(_pod("web-other", ns="other"))
    api.create(_slice("web-x"))
    api.create(_slice("web-y", ns="other"))
    rec = Recorder(d, kubeconfig, "--duration", "3s", "-n", "default", "-l", "app=web")
    try:
        _wait(lambda: len(rec.events()) >= 2, 30, "the initial list")
        api.create(_pod("web-b", ip="10.244.0.7"))
        api.create(_pod("db-b", app="db"))
        api.create(_pod("web-c", ns="other"))
        code, summary, err = rec.finish()
    finally:
        rec.kill()
    assert code == 0, err
    names = sorted((e["object"]["kind"], e["object"]["metadata"]["name"]) for e in _events(rec.out))
    assert names == [("EndpointSlice", "web-x"), ("Pod", "web-a"), ("Pod", "web-b")]
    assert summary["namespace"] == "default" and summary["label_selector"] == "app=web"


def test_progress_line_on_a_terminal(api: FakeApiServer, work: tuple[Path, Path]) -> None:
    d, kubeconfig = work
    api.create(_pod("web-a"))
    master, slave = pty.openpty()
    rec = Recorder(d, kubeconfig, "--duration", "2s", stderr=slave)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while rec.proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        code, _, _ = rec.finish()
    finally:
        rec.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    assert code == 0, text
    lines = [chunk for chunk in text.split("\r") if "watching 0:0" in chunk]
    assert lines, text
    assert "objects 1 (pods 1, endpointslices 0, Events 0)" in lines[-1] and "watch events 1" in lines[-1], lines
    assert "pod deletions 0" in lines[-1]


def test_bad_inputs_are_one_line(api: FakeApiServer, work: tuple[Path, Path], tmp_path: Path) -> None:
    d, _ = work
    with FakeApiServer() as down:  # stopped when the recorder starts: its port refuses
        unreachable = give(down.write_kubeconfig(d / "down.kubeconfig"))
    rec = Recorder(d, unreachable, "--duration", "1s")
    code, summary, err = rec.finish()
    assert code == 1 and summary["events"] == 0
    assert "never listed pods, endpointslices, events" in err and "Traceback" not in err, err
    for args, expected in (
        (["--pod-cidr", "10.0.0.0/8"], "not with --kube-only: --pod-cidr"),
        (["--duration", "soon"], "bad duration"),
        (["--kubeconfig", str(tmp_path / "missing")], "kubeconfig file not found"),
    ):
        proc = subprocess.run([sys.executable, "-m", "auditor", "record", "--kube-only", "--out", str(d / "x"), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and expected in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "auditor", "record", "--out", str(d / "x"), "-n", "default"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "need --kube-only" in proc.stderr, proc.stderr
