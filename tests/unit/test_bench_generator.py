"""The benchmark's capture generator and process-measuring helper (bench/gen_capture.py, bench/_measure.py).

The generator's counts are checked against an independent parse of its output with scapy, and against
tcpdump's reading of the benchmark filter when tcpdump is installed.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO, require_tool

BENCH = REPO / "bench"
PACKETS = 5000


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gen_capture = _load("gen_capture")
measure = _load("_measure")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A 5,000-packet capture written by the command line, with its --truth file."""
    out = tmp_path_factory.mktemp("gen")
    pcap, truth_file = out / "small.pcap", out / "small.truth.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "gen_capture.py"), str(pcap), "--packets", str(PACKETS), "--seed", "7",
         "--truth", str(truth_file)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    truth = json.loads(truth_file.read_text())
    assert json.loads(done.stdout.splitlines()[0]) == truth  # printed and written: the same counts
    return pcap, truth


def test_truth_matches_an_independent_parse(capture: tuple[Path, dict[str, int]]) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import rdpcap

    pcap, truth = capture
    packets = rdpcap(str(pcap))
    assert len(packets) == truth["packets"] == PACKETS
    flags = Counter[str]()
    times = []
    for p in packets:
        assert Ether in p and IP in p and TCP in p
        ip, tcp = p[IP], p[TCP]
        assert ip.len == len(p) - 14  # IP total length matches the frame
        assert ip.ihl == 5 and tcp.dataofs == 5
        assert len(bytes(tcp.payload)) == ip.len - 40
        assert 8080 in (tcp.sport, tcp.dport)
        f = int(tcp.flags)
        flags["tcp"] += 1
        flags["rst"] += bool(f & 0x04)
        flags["syn"] += bool(f & 0x02 and not f & 0x10)
        flags["synack"] += bool(f & 0x02 and f & 0x10)
        flags["fin"] += bool(f & 0x01)
        times.append(p.time)
    for key in ("tcp", "rst", "syn", "synack", "fin"):
        assert flags[key] == truth[key], key
    assert all(a < b for a, b in itertools.pairwise(times))  # strictly increasing
    assert int(times[0] * 1_000_000) == pytest.approx(truth["first_time_us"], abs=1)
    assert int(times[-1] * 1_000_000) == pytest.approx(truth["last_time_us"], abs=1)


def test_refused_syns_are_answered_by_rst_ack(capture: tuple[Path, dict[str, int]]) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    pcap, truth = capture
    syn_seen: dict[tuple[str, int, str, int], int] = {}
    established: set[tuple[str, int, str, int]] = set()
    refused = 0
    for p in rdpcap(str(pcap)):
        ip, tcp = p[IP], p[TCP]
        f = int(tcp.flags)
        if f == 0x02:
            syn_seen[(ip.src, tcp.sport, ip.dst, tcp.dport)] = tcp.seq
        key = (ip.dst, tcp.dport, ip.src, tcp.sport)  # the client's direction
        if f == 0x12:
            established.add(key)
        if f & 0x04 and key in syn_seen and key not in established:
            assert tcp.ack == (syn_seen[key] + 1) & 0xFFFFFFFF
            refused += 1
    assert refused == truth["refused"]
    assert truth["rst"] == truth["refused"] + truth["rst_flows"]


def test_shape_of_the_traffic() -> None:
    """At a larger size, the mix is what the issue asks: ~50 clients, ~20 pods, rare RSTs and refusals."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mix.pcap"
        truth = gen_capture.generate_capture(path, 200_000, seed=3)
        raw = path.read_bytes()
    assert len(raw) == truth.bytes
    assert truth.flows > 10_000
    assert 0.002 < truth.rst_flows / truth.flows < 0.009
    assert 0.0005 < truth.refused / truth.syn < 0.0045
    assert truth.synack + truth.refused <= truth.syn
    span_s = (truth.last_time_us - truth.first_time_us) / 1e6
    assert 20 < span_s < 40  # mean gap 150 µs
    # distinct client and pod addresses, read from the IP headers of the first 20,000 records
    clients, pods, off = set(), set(), 24
    for _ in range(20_000):
        caplen = int.from_bytes(raw[off + 8 : off + 12], "little")
        frame = raw[off + 16 : off + 16 + caplen]
        src, dst, sport = frame[26:30], frame[30:34], int.from_bytes(frame[34:36], "big")
        if sport == 8080:
            pods.add(src)
            clients.add(dst)
        else:
            pods.add(dst)
            clients.add(src)
        off += 16 + caplen
    assert 45 <= len(clients) <= 50
    assert len(pods) == 20


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    ta = gen_capture.generate_capture(a, 3000, seed=5)
    tb = gen_capture.generate_capture(b, 3000, seed=5)
    tc = gen_capture.generate_capture(c, 3000, seed=6)
    assert a.read_bytes() == b.read_bytes() and ta == tb
    assert a.read_bytes() != c.read_bytes()
    assert tc.packets == 3000


def test_tcpdump_filter_matches_truth(capture: tuple[Path, dict[str, int]]) -> None:
    require_tool("tcpdump")
    pcap, truth = capture
    bench_pcap = _load("bench_pcap")
    counts = bench_pcap.count_tcpdump(pcap)
    assert (counts.rst, counts.syn) == (truth["rst"], truth["syn"])


def test_generator_rejects_bad_arguments(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH / "gen_capture.py"), str(tmp_path / "x.pcap"),
                           "--packets", "0"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, str(BENCH / "gen_capture.py"), str(tmp_path / "no/dir/x.pcap"),
                           "--packets", "10"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_run_measured_reports_peak_rss_and_exit_code() -> None:
    ballast = bytearray(100_000_000)  # a large parent must not inflate the child's figure
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = measure.run_measured([sys.executable, "-c", "pass"], stdout=subprocess.DEVNULL)
    big = measure.run_measured(
        [sys.executable, "-c", "b = bytearray(80_000_000); b[::4096] = b'x' * len(b[::4096])"],
        stdout=subprocess.DEVNULL,
    )
    failing = measure.run_measured([sys.executable, "-c", "raise SystemExit(3)"], stderr=subprocess.DEVNULL)
    assert small.returncode == 0 and big.returncode == 0 and failing.returncode == 3
    assert big.peak_rss_bytes >= 80_000_000  # the child's high-water mark, not ours
    assert small.peak_rss_bytes < big.peak_rss_bytes - 60_000_000
    assert small.peak_rss_bytes < 40_000_000
    assert small.wall_s > 0 and big.user_s + big.sys_s > 0
    assert len(ballast) == 100_000_000
    with pytest.raises(FileNotFoundError):
        measure.run_measured(["no-such-program-for-the-bench"])


def test_python_launcher_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without gcc the launcher is Python; the figures are still the command's own."""
    monkeypatch.setattr(measure, "launcher",
                        lambda: [sys.executable, "-I", "-S", "-c", measure._LAUNCHER_PY])
    m = measure.run_measured([sys.executable, "-c", "b = bytearray(50_000_000); b[::4096] = b'x' * 12208"],
                             stdout=subprocess.DEVNULL)
    assert m.returncode == 0 and 50_000_000 <= m.peak_rss_bytes < 120_000_000


def test_run_measured_kills_on_timeout() -> None:
    m = measure.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert m.timed_out and m.returncode == -9
    assert m.wall_s < 10


def test_median_of_runs() -> None:
    runs = [measure.Measured(wall_s=w, peak_rss_bytes=r, returncode=0)
            for w, r in ((3.0, 10), (1.0, 30), (2.0, 20))]
    med = measure.median_of(runs)
    assert med.wall_s == 2.0 and med.peak_rss_bytes == 30
    with pytest.raises(ValueError):
        measure.median_of([])


_FAKE_AUDITOR = '''
import json, struct, sys
import pyarrow as pa, pyarrow.parquet as pq
_, sub, path, *rest = sys.argv[1:]
kinds = []
with open(path, "rb") as f:
    f.read(24)
    while header := f.read(16):
        frame = f.read(struct.unpack("<IIII", header)[2])
        flags = frame[47]
        if flags & 4:
            kinds.append("tcp_rst")
        elif flags & 2 and not flags & 16:
            kinds.append("tcp_syn")
if DROP_ONE_RST:
    kinds.remove("tcp_rst")
if sub == "events":
    pq.write_table(pa.table({"kind": pa.array(kinds).dictionary_encode()}), rest[rest.index("-o") + 1])
else:
    print(json.dumps({"tcp_rst": kinds.count("tcp_rst"), "tcp_syn": kinds.count("tcp_syn")}))
'''


@pytest.mark.parametrize("drop_one_rst", [False, True])
def test_bench_exit_status_follows_the_counts(
    tmp_path: Path, drop_one_rst: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The harness end to end on a small capture, with a stand-in reader that is right, then one RST short."""
    require_tool("tcpdump")
    fake = tmp_path / "auditor"
    fake.write_text(f"#!{sys.executable}\nDROP_ONE_RST = {drop_one_rst}\n{_FAKE_AUDITOR}")
    fake.chmod(0o755)
    bench_pcap = _load("bench_pcap")
    rc = bench_pcap.main(["--packets", "3000", "--repeat", "1", "--no-scale", "--cache", str(tmp_path / "c"),
                          "--auditor", str(fake), "--keep", str(tmp_path / "keep")])
    out = capsys.readouterr()
    assert rc == (1 if drop_one_rst else 0), out.err
    rst_row = next(line for line in out.out.splitlines() if line.startswith("RST packets"))
    assert rst_row.endswith("FAIL" if drop_one_rst else "PASS")
    assert "ratio auditor / tcpdump" in out.out
    assert (tmp_path / "keep" / "events.parquet").exists()
