"""A cluster for ``auditor rollout-test``'s tests: the fake API server (with its pod proxy), the controller
emulation, a Deployment ``default/web`` behind a Service, and two kinds of evidence:

* the client's records: the load Job's pod log is written when read, successes every 10 ms from the
  Job's start, and refusals after a rollout whose old pods had no preStop sleep of 2 s or more;
* a node agent (``with_agent=True``): a real metrics server serving ``/logs`` behind the pod proxy,
  whose log directory each rollout rewrites with the example rollout (examples/rollout: a 1 s
  propagation delay on node ``lab-node``) shifted to the rollout's time; when the old pods had a preStop
  sleep >= 2 s, the refusals are gone and the pods carry that preStop (what the lab shows after the fix),
  so the analysis says SAFE. The client's refusals are then the example's own refusal times.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from auditor.correlate.failures import find_failures
from auditor.model.kube import format_time_ns, parse_time_ns
from auditor.model.packet import RST, PacketEvent, packet_frame
from auditor.rollout.workload import prestop
from auditor.sinks.eventlog import EventLog
from auditor.sinks.logauth import LogsAccess
from auditor.sinks.metrics import AgentMetrics, MetricsServer
from tests.kubeserver.proxy import ProxyApiServer
from tests.kubeserver.workloads import ControllerEmulation, deployment, refused, service, vegeta_lines
from tests.unit.test_analyze_dir import EXAMPLE, STAMP, example_events

NODE = "lab-node"
USER_TOKEN = "fake-token"  # what FakeApiServer.write_kubeconfig puts in the kubeconfig
FIXED_PRESTOP_S = 2  # a preStop sleep at least this long closes the example's 1 s gap
_COARSE = re.compile(r'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)"')


def shift_text(text: str, offset_s: int) -> str:
    """Every RFC 3339 time in ``text`` moved by ``offset_s`` whole seconds (coarse ones stay coarse)."""

    def sub(m: re.Match[str]) -> str:
        ns = parse_time_ns(m.group(1))[0] + offset_s * 1_000_000_000
        out = format_time_ns(ns)
        return f'"{out.split(".")[0]}Z"' if "." not in m.group(1) else f'"{out}"'

    return _COARSE.sub(sub, text)


def _docs(text: str) -> list[dict[str, Any]]:
    dec, i, out = json.JSONDecoder(), 0, []
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        doc, i = dec.raw_decode(text, i)
        out.append(doc)
    return out


def example_rollout(at_ns: int, fixed: bool) -> tuple[list[PacketEvent], str, list[int]]:
    """The example rollout moved to start just after ``at_ns``: packet events, the kube stream, and the
    times of the refusals (none when ``fixed``)."""
    events = example_events(NODE)
    first = min(e.time_ns for e in events)
    offset_s = math.ceil((at_ns - first) / 1e9) + 1
    events = [replace(e, time_ns=e.time_ns + offset_s * 1_000_000_000) for e in events]
    text = shift_text((EXAMPLE / "kube.json").read_text(), offset_s)
    if fixed:
        events = [e for e in events if not e.tcp_flags & RST]
        docs = _docs(text)
        for doc in docs:
            obj = doc.get("object") or {}
            if obj.get("kind") == "Pod":
                for c in obj["spec"]["containers"]:
                    c["lifecycle"] = {"preStop": {"sleep": {"seconds": FIXED_PRESTOP_S}}}
        text = "\n".join(json.dumps(d) for d in docs) + "\n"
    failures = find_failures(packet_frame(events))
    # each refusal is seen twice on the node: to the Service address (before un-DNAT) and from the pod
    pod_side = failures["server_ip"].astype(str).str.startswith("10.244.")
    times = failures.loc[(failures["failure"].astype(str) == "refused") & pod_side, "time"]
    return events, text, sorted(int(t) for t in times.to_numpy(dtype="datetime64[ns]").astype("int64"))


def old_pods_fixed(before: dict[str, Any]) -> bool:
    """The pods a rollout replaces had a preStop sleep long enough to close the example's gap."""
    containers = before["spec"]["template"]["spec"]["containers"]
    return all((prestop(c)[1] or 0) >= FIXED_PRESTOP_S for c in containers)


@dataclass
class Cluster:
    api: ProxyApiServer
    kubeconfig: Path
    controller: ControllerEmulation
    agent_dir: Path | None = None
    rollouts: list[tuple[int, bool, list[int]]] = field(default_factory=list)  # (time, fixed, refusal times)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_rollout(self, before: dict[str, Any], after: dict[str, Any], at_ns: int) -> None:
        fixed = old_pods_fixed(before)
        if self.agent_dir is None:
            refusals = [] if fixed else [at_ns + 300_000_000 + i * 9_000_000 for i in range(40)]
        else:
            events, text, refusals = example_rollout(at_ns, fixed)
            for p in self.agent_dir.iterdir():
                p.unlink()
            log = EventLog(self.agent_dir, NODE, "jsonl")
            log.write(events)
            log.close()
            (self.agent_dir / f"kube-{NODE}-{STAMP}.json").write_text(text)
        with self.lock:
            self.rollouts.append((at_ns, fixed, refusals))

    def job_log(self, job: dict[str, Any], created_ns: int) -> bytes:
        url = job["spec"]["template"]["spec"]["containers"][0]["args"][1]
        with self.lock:
            rollouts = [r for r in self.rollouts if r[0] >= created_ns]
        end = time.time_ns()
        failures = []
        for at, _, refusals in rollouts:
            end = max(end, at + 10_000_000_000)
            failures += [(t, 0, refused(url)) for t in refusals]
        summary = b"auditor load: summary line on stderr, which the pod log interleaves with the records\n"
        return vegeta_lines(created_ns, end, url, failures=failures) + summary

    def jobs(self) -> list[str]:
        return [j["metadata"]["name"] for j in self.api.objects("Job")]


def make_cluster(
    tmp: Path, *, with_agent: bool = False, version: tuple[int, int] = (1, 31), **controller: Any
) -> Iterator[Cluster]:
    """The cluster as a generator (a pytest fixture body): yields it running, stops everything after."""
    servers: list[MetricsServer] = []
    with ProxyApiServer() as api:
        api.set_version(*version)
        api.add_token(USER_TOKEN, "tester")
        api.create(deployment())
        api.create(service())
        cluster = Cluster(api, api.write_kubeconfig(tmp / "kubeconfig"), None)  # type: ignore[arg-type]
        if with_agent:
            cluster.agent_dir = tmp / "agent-logs"
            cluster.agent_dir.mkdir()
            server = MetricsServer(AgentMetrics(), "127.0.0.1:0", lambda: (True, "ok"), log_dir=cluster.agent_dir,
                                   log_access=LogsAccess.off()).start()  # fmt: skip
            servers.append(server)
            api.add_agent_pod("auditor-x1y2z", NODE, server.port)
        cluster.controller = ControllerEmulation(
            api, job_log=cluster.job_log, on_rollout=cluster.on_rollout, **controller
        ).start()
        try:
            yield cluster
        finally:
            cluster.controller.stop()
            for s in servers:
                s.stop()
            if cluster.agent_dir is not None:
                shutil.rmtree(cluster.agent_dir, ignore_errors=True)
