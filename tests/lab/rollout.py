"""The rollout driver: builds the node, runs load and capture, replaces pods one by one, writes truth.

``run_rollout(LabConfig(prestop=0, delay=1.0), Path("/tmp/labrun"))`` leaves in the directory:
``node.pcap`` (tcpdump on the node), ``icmp.pcap`` (the node's ICMP unreachables, for the truth),
``kube.json`` (watch stream), ``hey.txt`` (client report; with ``hey_csv``, ``hey.csv``: hey -o csv),
``truth.json`` (what really happened), ``pods/*.jsonl`` (server ground truth), ``rules.log``.
With ``ingress="nginx"`` also ``ingress/`` (nginx's configuration and error log, the controller's reloads in
``controller.jsonl``) and, with ``service_client``, ``hey-service.txt``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.conftest import exclusive_host
from tests.lab import netns
from tests.lab.agent import AgentProcess, ApiMirror
from tests.lab.client import (
    count_packets,
    count_rsts_from,
    count_stale_unreachables,
    parse_hey,
    parse_hey_csv,
)
from tests.lab.ingress import INGRESS_PORT, IngressPod, NginxIngress, read_reloads, write_upstream
from tests.lab.kube import EndpointSlice, LabPod, ReplicaSet, WatchStream, safe_suffix
from tests.lab.probe import http_ready
from tests.lab.rules import Dataplane, Service

REPO = Path(__file__).resolve().parents[2]
RUNS_DIR = Path("/tmp/auditor-lab-runs")  # <run id>.pid: which process owns which namespaces
_NS_RE = re.compile(r"^al([0-9a-f]{4})(n|c|p\d+)$")
TICK_S = 0.002
CLIENT_IP, NODE_IP = "10.1.0.2", "10.1.0.1"
INGRESS_IP = "10.244.0.250"


@dataclass
class LabConfig:
    """One lab run. ``qps`` is the total request rate, split over ``workers`` hey workers."""

    replicas: int = 3
    prestop: int = 0  # seconds of preStop sleep
    delay: float = 1.0  # propagation delay: pod deletion -> this node's rules rewritten
    qps: int = 500
    workers: int = 10  # hey's workers tick in phase: few workers at 50 req/s each = bursts every 20 ms
    keepalive: bool = False
    backend: str = "nft"  # nft | legacy (iptables modes) | nftables (kube-proxy's nftables mode)
    grace: int = 30  # terminationGracePeriodSeconds
    # the server after SIGTERM: keep_idle = leave kept-alive connections open (as many apps do) until the
    # drain timeout aborts them with RST. Defaults: with keep-alive load, keep_idle and a 0.3 s drain
    # (in-flight resets, then reconnects inside the gap); otherwise close idle connections, 5 s drain.
    drain: float | None = None
    keep_idle: bool | None = None
    margin: float = 1.5  # load before the first and after the last replacement
    settle: float = 1.0  # pause between two replacements
    snaplen: int = 128
    small_capture: bool = False  # SYN/RST/FIN only (for shipped examples)
    api: bool = False  # also serve the pods and EndpointSlice over HTTP (kubeconfig in the run dir)
    agent: bool = False  # run `auditor agent` (implies api) from before the load until after it
    agent_settle: float = 2.0  # the agent's --settle-s
    watch_fault_episode: int = -1  # at this episode's deletion: drop the watches, answer 410 to resumes
    agent_stop_episode: int = -1  # SIGTERM the agent inside this episode's propagation gap
    # an ingress (tests/lab/ingress.py): "nginx" puts a real nginx pod between hey and the pods; its controller
    # watches the EndpointSlice (implies api) and reloads nginx ingress_delay seconds after each change
    ingress: str = ""
    ingress_delay: float = 1.5
    service_client: bool = False  # with an ingress: a second hey through the ClusterIP (hey-service.txt)
    capture: bool = False  # also `auditor capture` on the node, next to tcpdump (capture.pcapng, same filter)
    agent_source: str = ""  # the agent's --source (auto | ebpf | capture); "": its default
    # hey -o csv into hey.csv (a row per response: status, offset from hey's start; no failed request) instead
    # of its text report; truth["t_hey_launch"]: the wall clock just before the lab launched hey
    hey_csv: bool = False

    def __post_init__(self) -> None:
        if self.ingress not in ("", "nginx"):
            raise ValueError(f"unknown ingress {self.ingress!r}; use nginx")
        self.api = self.api or self.agent or bool(self.ingress)
        if self.keep_idle is None:
            self.keep_idle = self.keepalive
        if self.drain is None:
            self.drain = 0.3 if self.keep_idle else 5.0


@dataclass
class LabRun:
    """Paths of one run's outputs and its parsed ground truth."""

    out_dir: Path
    pcap: Path
    kube: Path
    truth_path: Path
    client_output: Path
    truth: dict[str, Any] = field(default_factory=dict)


class _Procs:
    """Processes the lab started; stopped in reverse order, each wait bounded."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen[bytes]] = []

    def start(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=REPO, **kw)
        self.items.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            stop(proc, signal.SIGKILL, 5.0)


def stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int | None:
    """Send ``sig`` unless exited, wait up to ``timeout``, then SIGKILL; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    return proc.returncode


def remove_stale_namespaces() -> list[str]:
    """Delete ``al<id>...`` namespaces whose owning process is gone (a crashed run)."""
    RUNS_DIR.mkdir(exist_ok=True)
    stale = []
    for ns in netns.list_namespaces():
        m = _NS_RE.match(ns)
        if not m:
            continue
        pid_file = RUNS_DIR / f"{m.group(1)}.pid"
        try:
            os.kill(int(pid_file.read_text()), 0)
            continue  # its run is alive
        except (OSError, ValueError):
            stale.append(ns)
    netns.remove_namespaces(stale)
    return stale


def _read_events(path: Path) -> dict[str, dict[str, Any]]:
    """The server's ground-truth rows by event name (first of each)."""
    out: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out.setdefault(row["event"], row)
    return out


class _Lab:
    def __init__(self, cfg: LabConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.run_id = f"{random.getrandbits(16):04x}"
        while (RUNS_DIR / f"{self.run_id}.pid").exists():
            self.run_id = f"{random.getrandbits(16):04x}"
        self.node = f"al{self.run_id}n"
        self.client = f"al{self.run_id}c"
        self.namespaces: list[str] = []
        self.procs = _Procs()
        self.files: list[IO[bytes]] = []
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.svc = Service()
        self.rng = random.Random()
        self.pod_count = 0
        (out / "pods").mkdir(parents=True, exist_ok=True)
        self.stream = WatchStream(out / "kube.json", self.svc.target_port)
        self.slice = EndpointSlice(name=f"web-{safe_suffix(self.rng, 5)}")
        self.dataplane = Dataplane(self.node, self.svc, cfg.backend)
        self.api = ApiMirror(out) if cfg.api else None
        if self.api is not None:
            self.stream.mirror = self.api.apply
        self.agent: AgentProcess | None = None
        self.agent_sigterm_ns = 0
        self.ingress: IngressPod | None = None
        self.ingress_events = out / "ingress" / "controller.jsonl"
        self.ingress_reloads: list[dict[str, Any]] = []

    # -- pods ---------------------------------------------------------------------------------
    def new_pod(self, rs: ReplicaSet) -> LabPod:
        self.pod_count += 1
        pod = LabPod(name=f"{rs.name}-{safe_suffix(self.rng, 5)}", ip=f"10.244.0.{10 + self.pod_count}",
                     rs=rs, prestop_s=self.cfg.prestop, grace_s=self.cfg.grace)
        pod.created_ns = time.time_ns()
        return pod

    def start_pod(self, pod: LabPod, watched: bool = False) -> None:
        """Sandbox (namespace + veth), container (server), then wait until it answers (bounded)."""
        ns = f"al{self.run_id}p{self.pod_count}"
        netns.attach_pod(self.node, ns, ns, pod.ip)
        self.namespaces.append(ns)
        events = self.out / "pods" / f"{pod.name}.jsonl"
        self.servers[pod.name] = self.procs.start(ns, [
            sys.executable, "-m", "tests.lab.server", "--port", str(self.svc.target_port),
            "--name", pod.name, "--events", str(events), "--drain", str(self.cfg.drain),
            *(["--keep-idle"] if self.cfg.keep_idle else [])])
        pod.started_ns = time.time_ns()
        if watched:  # container running, not ready yet
            self.stream.emit("MODIFIED", pod, pod.started_ns)
        deadline = time.monotonic() + 10.0
        while not http_ready(self.node, pod.ip, self.svc.target_port):
            if time.monotonic() > deadline or self.servers[pod.name].poll() is not None:
                raise RuntimeError(f"pod {pod.name} did not become ready within 10 s")
            time.sleep(0.02)
        pod.ready_ns = time.time_ns()

    def ingress_reconfigured(self, old: LabPod) -> dict[str, Any] | None:
        """The controller's reload that removed ``old`` from nginx's upstreams (always {} without ingress);
        raises when it is overdue by 10 s."""
        if self.ingress is None:
            return {}
        for row in self.ingress_reloads:
            if old.ip in row["removed"]:
                return row
        self.ingress_reloads = read_reloads(self.ingress_events)
        for row in self.ingress_reloads:
            if old.ip in row["removed"]:
                return row
        if time.time_ns() > old.deleted_ns + int((self.cfg.ingress_delay + 10.0) * 1e9):
            raise RuntimeError(f"the ingress did not remove {old.name} within its delay + 10 s")
        return None

    def start_ingress(self, live: list[LabPod]) -> None:
        """The ingress pod (namespace, nginx with the current endpoints), in the watch stream, and its
        controller (host namespace: it talks to the lab's API server); returns once the controller synced."""
        assert self.api is not None
        ns = f"al{self.run_id}p0"
        netns.attach_pod(self.node, ns, ns, INGRESS_IP)
        self.namespaces.append(ns)
        pod = IngressPod.make(self.rng, INGRESS_IP, self.cfg.grace)
        prefix = self.out / "ingress"
        nginx = NginxIngress(prefix, self.svc.target_port)
        write_upstream(prefix, [p.ip for p in live], self.svc.target_port)
        log = (prefix / "nginx.log").open("wb")
        self.files.append(log)
        master = self.procs.start(ns, nginx.argv(), stdout=log, stderr=subprocess.STDOUT)
        pod.started_ns = time.time_ns()
        deadline = time.monotonic() + 10.0
        while not http_ready(self.node, INGRESS_IP, INGRESS_PORT):
            if time.monotonic() > deadline or master.poll() is not None:
                raise RuntimeError(f"nginx did not answer within 10 s (see {prefix / 'nginx.log'})")
            time.sleep(0.02)
        pod.ready_ns = time.time_ns()
        self.stream.emit("ADDED", pod)
        self.ingress = pod
        ctl_log = (prefix / "controller.log").open("wb")
        self.files.append(ctl_log)
        ctl = subprocess.Popen([
            sys.executable, "-m", "tests.lab.ingress", "--kubeconfig", str(self.api.kubeconfig),
            "--upstream-port", str(self.svc.target_port), "--delay", str(self.cfg.ingress_delay),
            "--prefix", str(prefix), "--master-pid", str(master.pid), "--events", str(self.ingress_events)],
            cwd=REPO, stdout=ctl_log, stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.items.append(ctl)
        deadline = time.monotonic() + 20.0
        while not read_reloads(self.ingress_events):  # the initial sync (no delay): nginx reloaded once
            if time.monotonic() > deadline or ctl.poll() is not None:
                raise RuntimeError(f"the ingress controller did not sync within 20 s (see {prefix / 'controller.log'})")
            time.sleep(0.02)

    def pod_ns(self, pod: LabPod) -> str:
        return f"al{self.run_id}p{int(pod.ip.rsplit('.', 1)[1]) - 10}"

    # -- one replacement -----------------------------------------------------------------------
    def replace(self, old: LabPod, new_rs: ReplicaSet, live: list[LabPod], index: int = 0) -> dict[str, Any]:
        cfg = self.cfg
        new = self.new_pod(new_rs)
        self.stream.emit("ADDED", new)
        self.start_pod(new, watched=True)
        self.stream.emit("MODIFIED", new, new.ready_ns)
        live.append(new)
        self.slice.endpoints.append((new, False))
        self.slice.trigger_ns = new.ready_ns
        self.stream.emit("MODIFIED", self.slice)
        add = self.dataplane.sync([p.ip for p in live])

        # delete the old pod: API marks it, the endpointslice controller marks it terminating
        old.deleted_ns = time.time_ns()
        self.stream.emit("MODIFIED", old, old.deleted_ns)
        deletion_rv = self.api.last_rv.get(("Pod", old.name)) if self.api is not None else None
        self.slice.endpoints = [(p, t or p is old) for p, t in self.slice.endpoints]
        self.slice.trigger_ns = old.deleted_ns
        self.stream.emit("MODIFIED", self.slice)
        if self.api is not None and index == cfg.watch_fault_episode:
            self.api.break_watches()  # what follows reaches the agent only through its relist
        t_stop_agent_due = old.deleted_ns + int(cfg.delay * 0.5e9)
        t_sigterm_due = old.deleted_ns + int(cfg.prestop * 1e9)
        t_rules_due = old.deleted_ns + int(cfg.delay * 1e9)
        t_kill_due = old.deleted_ns + cfg.grace * 1_000_000_000
        self.dataplane.prepare()  # at t_rules_due, only the payload is left to write
        server = self.servers[old.name]
        t_sigterm = t_kill = 0
        removed = None
        while True:  # bounded by the grace period (then SIGKILL) and the propagation delay
            now = time.time_ns()
            if not t_sigterm and now >= t_sigterm_due:
                t_sigterm = time.time_ns()  # just before: the server may act before we return
                server.send_signal(signal.SIGTERM)
            if (self.agent is not None and index == cfg.agent_stop_episode and not self.agent_sigterm_ns
                    and now >= t_stop_agent_due):
                self.agent_sigterm_ns = self.agent.terminate()  # mid-gap; collected after the run
            if removed is None and now >= t_rules_due:
                live.remove(old)
                removed = self.dataplane.sync([p.ip for p in live])
            if not old.finished_ns and server.poll() is not None:
                old.finished_ns = time.time_ns()
                self.stream.emit("MODIFIED", old, old.finished_ns)
                self.stream.emit("DELETED", old)
                self.slice.endpoints = [(p, t) for p, t in self.slice.endpoints if p is not old]
                self.slice.trigger_ns = old.finished_ns
                self.stream.emit("MODIFIED", self.slice)
            if not t_kill and now >= t_kill_due and server.poll() is None:
                server.kill()
                t_kill = time.time_ns()
            if old.finished_ns and removed is not None and self.ingress_reconfigured(old) is not None:
                break
            time.sleep(TICK_S)
        ns = self.pod_ns(old)  # sandbox teardown once the node no longer routes to it
        netns.remove_namespaces([ns])
        self.namespaces.remove(ns)
        ground = _read_events(self.out / "pods" / f"{old.name}.jsonl")
        reload = self.ingress_reconfigured(old) or {}
        ingress = {} if self.ingress is None else {
            # the controller's reload that removed the pod: received the change, due, SIGHUP sent, a new worker
            # seen, no old worker listening any more (t_ingress_reconfigured), the old workers gone
            "t_ingress_observed": reload["t_observed"], "t_ingress_due": reload["t_due"],
            "t_ingress_hup": reload["t_hup"], "t_ingress_new_worker": reload["t_new_worker"],
            "t_ingress_reconfigured": reload["t_old_listener_closed"], "t_ingress_old_exited": reload["t_old_exited"]}
        return ingress | {
            "name": old.name, "uid": old.uid, "ip": old.ip, "replaced_by": new.name,
            "t_delete": old.deleted_ns, "t_sigterm": t_sigterm,
            # when the lab's API server sent the deletion to the agent's watch (0: no agent): the delivery
            # delay of this in-process server (GIL, load; up to 23 ms measured) is the lab's, not the agent's
            "t_delete_served": self.api.served_ns("Pod", deletion_rv) if self.api is not None else 0,
            "t_listener_closed": ground.get("listener_closed", {}).get("time_ns", 0),
            "t_rule_removed_due": t_rules_due,
            "t_rule_removed_before": removed.before_ns, "t_rule_removed_after": removed.after_ns,
            "t_exit": ground.get("exit", {}).get("time_ns", 0), "t_exit_observed": old.finished_ns,
            "t_sigkill": t_kill,
            "server_served": ground.get("exit", {}).get("served", 0),
            "server_aborted": ground.get("exit", {}).get("aborted", 0),
            "new_pod": {"name": new.name, "uid": new.uid, "ip": new.ip, "t_ready": new.ready_ns,
                        "t_rule_added_after": add.after_ns},
        }

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        (RUNS_DIR / f"{self.run_id}.pid").write_text(str(os.getpid()))
        netns.make_node(self.node)
        self.namespaces.append(self.node)
        netns.attach_client(self.node, self.client, self.client, CLIENT_IP, NODE_IP)
        self.namespaces.append(self.client)
        self.dataplane.install()
        old_rs, new_rs = ReplicaSet(safe_suffix(self.rng, 10)), ReplicaSet(safe_suffix(self.rng, 10))
        live: list[LabPod] = []
        for _ in range(cfg.replicas):
            pod = self.new_pod(old_rs)
            self.start_pod(pod)
            live.append(pod)
        self.dataplane.sync([p.ip for p in live])
        self.slice.created_ns = self.slice.trigger_ns = time.time_ns()
        self.slice.endpoints = [(p, False) for p in live]
        for pod in live:  # the watch starts with ADDED for what exists
            self.stream.emit("ADDED", pod)
        self.stream.emit("ADDED", self.slice)
        if cfg.ingress:
            self.start_ingress(live)
        if cfg.agent:
            assert self.api is not None
            backend = {"nft": "iptables-nft", "legacy": "iptables-legacy"}.get(cfg.backend, cfg.backend)
            self.agent = AgentProcess(self.out / "agent", self.api.kubeconfig, backend, self.node,
                                      cfg.agent_settle, ("--source", cfg.agent_source) if cfg.agent_source else ())  # fmt: skip
            self.agent.wait_ready()

        captures = self.start_capture()
        hey_out = (self.out / self.hey_file).open("wb")
        self.files.append(hey_out)
        per_worker = max(1, round(cfg.qps / cfg.workers))
        service_url = f"http://{self.svc.cluster_ip}:{self.svc.port}/"
        target = f"http://{INGRESS_IP}:{INGRESS_PORT}/" if cfg.ingress else service_url

        def hey_argv(url: str, *extra: str) -> list[str]:
            return ["hey", *extra, "-z", "600s", "-c", str(cfg.workers), "-q", str(per_worker), "-t", "2",
                    *([] if cfg.keepalive else ["-disable-keepalive"]), url]

        t_hey_launch = time.time_ns()
        hey = self.procs.start(self.client, hey_argv(target, *(["-o", "csv"] if cfg.hey_csv else [])),
                               stdout=hey_out, stderr=subprocess.STDOUT)  # fmt: skip
        hey2 = None
        if cfg.ingress and cfg.service_client:
            hey2_out = (self.out / "hey-service.txt").open("wb")
            self.files.append(hey2_out)
            hey2 = self.procs.start(self.client, hey_argv(service_url), stdout=hey2_out, stderr=subprocess.STDOUT)
        t_load = time.time_ns()
        time.sleep(cfg.margin)
        episodes = []
        for i, old in enumerate(list(live)):
            if i:
                time.sleep(cfg.settle)
            episodes.append(self.replace(old, new_rs, live, i))
        time.sleep(cfg.margin)
        stop(hey, signal.SIGINT, 15.0)
        if hey2 is not None:
            stop(hey2, signal.SIGINT, 15.0)
        t_load_end = time.time_ns()
        hey_out.close()
        for capture in captures:
            stop(capture, signal.SIGINT, 10.0)
        pcap = self.out / "node.pcap"
        stale = count_stale_unreachables(self.out / "icmp.pcap", pcap, CLIENT_IP)
        for ep in episodes:
            ep.update(count_rsts_from(pcap, ep["ip"], self.svc.target_port))
            ep["syn_to_pod"] = count_packets(
                pcap, f"dst host {ep['ip']} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn")
            ep["t_unreachable"] = stale.pop(ep["ip"], [])
            ep["unreachable"] = len(ep["t_unreachable"])
            if self.ingress is not None:
                ep.update(self.consumer_truth(pcap, ep))
        extra: dict[str, Any] = {}
        if self.ingress is not None:
            hey_truth = self.hey_truth()
            extra = {
                "ingress": {"kind": cfg.ingress, "namespace": self.ingress.namespace, "name": self.ingress.name,
                            "consumer": f"{self.ingress.namespace}/{self.ingress.name}", "ip": INGRESS_IP,
                            "port": INGRESS_PORT, "delay": cfg.ingress_delay,
                            "reloads": read_reloads(self.ingress_events)},
                "client_502": int(hey_truth["status"].get("502", 0)),
                "service_client": (parse_hey((self.out / "hey-service.txt").read_text(errors="replace"))
                                   if cfg.service_client else None),
            }
        return extra | {
            "agent": self.finish_agent(len(episodes)),
            "config": asdict(cfg),
            "run_id": self.run_id,
            "node": "lab-node",
            "service": {"namespace": self.svc.namespace, "name": self.svc.name,
                        "port_name": self.svc.port_name, "cluster_ip": self.svc.cluster_ip,
                        "port": self.svc.port,
                        "target_port": self.svc.target_port, "svc_chain": self.svc.svc_chain},
            "client_ip": CLIENT_IP,
            "replicasets": {"old": old_rs.name, "new": new_rs.name},
            "t_load_start": t_load, "t_load_end": t_load_end,
            "old_pods": episodes,
            "unreachable_elsewhere": stale,  # stale-conntrack unreachables for other addresses (none expected)
            "client": self.hey_truth(),
            "t_hey_launch": t_hey_launch,
            "kube_events": self.stream.count,
        }

    @property
    def hey_file(self) -> str:
        return "hey.csv" if self.cfg.hey_csv else "hey.txt"

    def hey_truth(self) -> dict[str, Any]:
        text = (self.out / self.hey_file).read_text(errors="replace")
        return parse_hey_csv(text) if self.cfg.hey_csv else parse_hey(text)

    def consumer_truth(self, pcap: Path, ep: dict[str, Any]) -> dict[str, Any]:
        """Per consumer of the old pod, counted by tcpdump -r: RSTs it sent answering a SYN (refusals) of the
        ingress pod (to its address) and of kube-proxy (to the client's address: the ClusterIP path), and the
        ingress pod's SYNs to the pod, the last one's time. (``rst_from_pod`` counts the RSTs to the ingress
        twice: see below.)"""
        assert self.ingress is not None
        # inbound: a packet between two pods crosses the node on two veths, and "-i any" captures it on both;
        # on the ClusterIP path the copy on the client's veth is un-DNATed (no pod address), so it counts once
        rst = f"inbound and src host {ep['ip']} and tcp src port {self.svc.target_port} and tcp[tcpflags] & tcp-rst != 0"
        syn = (f"inbound and src host {INGRESS_IP} and dst host {ep['ip']}"
               " and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn")
        # the service client's last SYN kube-proxy routed to the pod (the copy leaving for the pod's veth)
        routed = (f"outbound and src host {CLIENT_IP} and dst host {ep['ip']}"
                  " and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn")
        ingress_refused = count_packets(pcap, f"{rst} and dst host {INGRESS_IP} and tcp[4:4] == 0")
        # accepted by the old pod (still in its accept queue when the listener closed), then reset: nginx's
        # "connect() failed (104: Connection reset by peer)", a 502 too
        ingress_reset = count_packets(pcap, f"{rst} and dst host {INGRESS_IP}") - ingress_refused
        service_refused = count_packets(pcap, f"{rst} and dst host {CLIENT_IP} and tcp[4:4] == 0")
        return {
            "rst_refused_to_ingress": ingress_refused, "rst_established_to_ingress": ingress_reset,
            "rst_refused_to_client": service_refused,
            "syn_from_ingress": count_packets(pcap, syn),
            "t_ingress_last_syn": last_packet_ns(pcap, syn),
            "t_service_last_syn": last_packet_ns(pcap, routed),
            "refusals": {f"{self.ingress.namespace}/{self.ingress.name}": ingress_refused,
                         "kube-proxy lab-node": service_refused},
        }

    def finish_agent(self, episodes: int) -> dict[str, Any] | None:
        """Let the agent audit every episode (bounded by its settle time), then SIGTERM it."""
        if self.agent is None:
            return None
        if not self.agent_sigterm_ns:
            self.agent.wait_episodes(episodes, self.cfg.agent_settle + 20.0)
        code = self.agent.stop()
        return {"log_dir": str(self.agent.log_dir), "exit_code": code, "sigterm_ns": self.agent_sigterm_ns,
                "metrics_port": self.agent.port, "faults": self.api.faults if self.api else []}

    def start_capture(self) -> list[subprocess.Popen[bytes]]:
        """``node.pcap``, auditor's input, and ``icmp.pcap``: the ICMP unreachables the node sent, for the
        truth only (a SYN that a stale conntrack entry still DNATs to a deleted pod's address is answered
        by the node's "net unreachable", not by the pod; see ``count_stale_unreachables``)."""
        bpf = f"tcp and (net 10.244.0.0/16 or host {self.svc.cluster_ip})"
        if self.cfg.small_capture:
            bpf += " and tcp[tcpflags] & (tcp-syn|tcp-rst|tcp-fin) != 0"
        # immediate mode for the few ICMPs: otherwise a packet waits in a ring block until the block's 1 s
        # timeout retires it, and one of the last second is lost when tcpdump stops (2 of 6 tries in netns)
        procs = [self._tcpdump("node", bpf, self.cfg.snaplen),
                 self._tcpdump("icmp", "icmp[icmptype] == icmp-unreach", 128, "--immediate-mode")]
        if self.cfg.capture:  # auditor's own capture of the same interface, narrowed by the same filter
            procs.append(self._auditor_capture(bpf))
        return procs

    def _auditor_capture(self, bpf: str) -> subprocess.Popen[bytes]:
        path, log = self.out / "capture.pcapng", self.out / "capture.log"
        err = log.open("wb")
        self.files.append(err)
        argv = [sys.executable, "-m", "auditor", "capture", "-i", "any", "--node", "lab-node", "-w", str(path),
                "--filter", bpf, "--json", "-q"]  # fmt: skip
        proc = self.procs.start(self.node, argv, stdout=err, stderr=err)
        deadline = time.monotonic() + 20.0
        while not (path.exists() and path.stat().st_size > 0):  # the header is written once it captures
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"auditor capture did not start within 20 s (see {log.name})")
            time.sleep(0.02)
        return proc

    def _tcpdump(self, name: str, bpf: str, snaplen: int, *extra: str) -> subprocess.Popen[bytes]:
        log = self.out / ("tcpdump.log" if name == "node" else f"tcpdump-{name}.log")
        err = log.open("wb")
        self.files.append(err)
        argv = ["tcpdump", "-i", "any", "-n", "-Z", "root", "-s", str(snaplen), "-B", "8192", *extra,
                "-w", str(self.out / f"{name}.pcap"), bpf]
        proc = self.procs.start(self.node, argv, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 10.0
        while b"listening on" not in log.read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"tcpdump did not start within 10 s (see {log.name})")
            time.sleep(0.02)
        return proc

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.dataplane.close()
        if self.api is not None:
            self.api.close()
        self.procs.stop_all()
        for f in self.files:
            f.close()
        netns.remove_namespaces(list(reversed(self.namespaces)))
        self.stream.close()
        (self.out / "rules.log").write_text("".join(
            f"# sync at {t}\n{payload}" for t, payload in self.dataplane.log))
        (RUNS_DIR / f"{self.run_id}.pid").unlink(missing_ok=True)


def last_packet_ns(pcap: Path, bpf: str) -> int:
    """The time of the last packet of ``pcap`` matching ``bpf`` (tcpdump -r), in ns; 0 when none."""
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "-tt", "-q", bpf], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()  # fmt: skip
    stamps = [w for w in out if re.fullmatch(r"\d+\.\d+", w)]
    if not stamps:
        return 0
    sec, frac = stamps[-1].split(".")
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def run_rollout(config: LabConfig, out_dir: Path) -> LabRun:
    """Run one lab rollout as root; every namespace, process and rule is gone when it returns."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_host():  # another session's lab would lose its namespaces to the cleanup below
        remove_stale_namespaces()
        lab = _Lab(config, out_dir)
        try:
            truth = lab.run()
        finally:
            lab.close()
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    return LabRun(out_dir, out_dir / "node.pcap", out_dir / "kube.json", truth_path,
                  out_dir / ("hey.csv" if config.hey_csv else "hey.txt"), truth)
