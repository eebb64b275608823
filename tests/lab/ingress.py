"""The lab's ingress: a real nginx in its own pod namespace, and a small controller that rewrites its upstreams.

:class:`NginxIngress` writes a configuration into a directory and runs ``nginx -g 'daemon off;'`` as a plain
process (its master is the process the lab started). Upstreams are the web pods' IPs (no ClusterIP on that
path), ``max_fails=0`` (a refusal does not take the server out of the rotation, as ingress-nginx's Lua
balancer), no upstream keep-alive (nginx's default: HTTP/1.0 and a new upstream connection per request) and
``proxy_next_upstream off`` (a refused upstream connection is a 502 to the client, never retried).

The controller (``python -m tests.lab.ingress``) watches the ``web`` EndpointSlices through the lab's API
server with the official Kubernetes client (list, then watch from the list's resourceVersion), and applies each
change ``--delay`` seconds after it received it: it rewrites the upstream list (ready endpoints only, as
ingress-nginx) and reloads nginx gracefully (SIGHUP to the master, what ``nginx -s reload`` sends). Changes due
within ``COALESCE_S`` of each other are applied in one reload (ingress-nginx batches its syncs too).

When the new configuration took effect: on SIGHUP the master re-reads the configuration, forks new workers,
then sends SIGQUIT to the old ones, which close their listening sockets at once and exit when their
connections are done (one request each here: no client keep-alive). nginx 1.22's master sleeps 100 ms
between forking the new workers and signalling the old ones (``ngx_msleep(100)`` in
``ngx_master_process_cycle``): for those 100 ms old and new workers both accept, the old ones still with
the old upstreams. So the signal is the old workers' listening socket: the controller polls, every 0.5 ms,
the master's children (``/proc/<master>/task/<master>/children``) and the old workers' open files
(``/proc/<pid>/fd``) for the listener's socket inode (from ``/proc/<master>/net/tcp``), and records
``t_hup`` (just before the signal), ``t_new_worker`` (first poll showing a new worker),
``t_old_listener_closed`` (first poll where no old worker holds the listener: from then on every new
client connection gets the new upstreams -- the truth's "ingress reconfigured") and ``t_old_exited`` (no
old worker left). A connection an old worker accepted just before closing its listener still dials its
upstream right after (one request, already sent), so the old configuration's last upstream SYN can trail
``t_old_listener_closed`` by about a millisecond. Each reload is one JSON line of ``--events``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab.kube import LabPod, ReplicaSet, safe_suffix

POLL_S = 0.0005
COALESCE_S = 0.010
INGRESS_PORT = 80


def render_nginx_conf(prefix: Path) -> str:
    return f"""\
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/upstream.conf;
    server {{
        listen {INGRESS_PORT} backlog=4096;
        location / {{
            proxy_pass http://web;
            proxy_next_upstream off;
            proxy_connect_timeout 2s;
            proxy_read_timeout 5s;
        }}
    }}
}}
"""


def render_upstream(ips: list[str], port: int) -> str:
    servers = [f"    server {ip}:{port} max_fails=0;" for ip in ips] or [
        "    server 127.0.0.1:9 max_fails=0;"
    ]
    return "upstream web {\n" + "\n".join(servers) + "\n}\n"


def write_upstream(prefix: Path, ips: list[str], port: int) -> None:
    tmp = prefix / "upstream.conf.tmp"
    tmp.write_text(render_upstream(ips, port))
    os.replace(tmp, prefix / "upstream.conf")


def workers(master: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()}
    except (OSError, ValueError):
        return set()


def listen_inodes(master: int, port: int = INGRESS_PORT) -> set[str]:
    """Socket inodes of the TCP listeners on ``port`` in the master's network namespace."""
    out = set()
    for line in Path(f"/proc/{master}/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1].endswith(f":{port:04X}") and f[3] == "0A":
            out.add(f[9])
    return out


def holds(pid: int, inodes: set[str]) -> bool:
    """Whether ``pid`` still has one of the sockets ``inodes`` open (False once it is gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def reload(master: int, timeout: float = 10.0) -> dict[str, int]:
    """SIGHUP the master, wait (bounded) until the old workers are gone; return the times (ns):
    ``t_hup`` (just before the signal), ``t_new_worker`` (a new worker seen), ``t_old_listener_closed`` (no old
    worker holds the listening socket any more: it takes no new connection), ``t_old_exited``."""
    inodes = listen_inodes(master)
    old = workers(master)
    t_hup = time.time_ns()
    os.kill(master, signal.SIGHUP)
    t_new = t_closed = 0
    deadline = time.monotonic() + timeout
    while True:
        now_workers = workers(master)
        listening = any(holds(pid, inodes) for pid in old)
        now = time.time_ns()
        if not t_new and now_workers - old:
            t_new = now
        if not t_closed and not listening and t_new:
            t_closed = now
        if not (now_workers & old) and t_new and t_closed:
            return {
                "t_hup": t_hup,
                "t_new_worker": t_new,
                "t_old_listener_closed": t_closed,
                "t_old_exited": now,
            }
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"nginx reload: old workers {sorted(old & now_workers)} still there after {timeout} s"
            )
        time.sleep(POLL_S)


class NginxIngress:
    """nginx in ``ns`` with a configuration in ``prefix``; start() waits until it answers on port 80."""

    def __init__(self, prefix: Path, upstream_port: int) -> None:
        self.prefix, self.upstream_port = prefix, upstream_port
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        (prefix / "nginx.conf").write_text(render_nginx_conf(prefix))

    def argv(self) -> list[str]:
        return ["nginx", "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-g", "daemon off;"]


def read_reloads(path: Path) -> list[dict[str, Any]]:
    """The controller's completed reloads, in order (a half-written last line is skipped)."""
    out: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("event") == "reload":
                out.append(row)
    return out


@dataclass
class IngressPod(LabPod):
    """The ingress controller's pod, as the API serves it: ``ingress-nginx/ingress-nginx-controller-<hash>-<id>``."""

    namespace: str = "ingress-nginx"

    @classmethod
    def make(cls, rng: random.Random, ip: str, grace_s: int) -> IngressPod:
        rs = ReplicaSet(safe_suffix(rng, 10))
        pod = cls(
            name=f"ingress-nginx-controller-{rs.template_hash}-{safe_suffix(rng, 5)}",
            ip=ip,
            rs=rs,
            prestop_s=0,
            grace_s=grace_s,
        )
        pod.created_ns = time.time_ns()
        return pod

    def to_object(self, rv: int, port: int) -> dict[str, Any]:
        obj = super().to_object(rv, INGRESS_PORT)
        meta = obj["metadata"]
        meta["namespace"] = self.namespace
        meta["generateName"] = self.name.rsplit("-", 1)[0] + "-"
        meta["labels"] = {
            "app.kubernetes.io/name": "ingress-nginx",
            "app.kubernetes.io/component": "controller",
            "pod-template-hash": self.rs.template_hash,
        }
        meta["ownerReferences"][0]["name"] = f"ingress-nginx-controller-{self.rs.template_hash}"
        container = obj["spec"]["containers"][0]
        container.update(
            {
                "name": "controller",
                "image": "registry.k8s.io/ingress-nginx/controller:v1.11.2",
                "args": ["/nginx-ingress-controller"],
            }
        )
        for status in obj["status"].get("containerStatuses", []):
            status.update({"name": "controller", "image": container["image"], "imageID": container["image"]})
        return obj


# -- the controller -----------------------------------------------------------------------------------------
def ready_ips(slice_obj: Any) -> list[str]:
    """Addresses of the slice's ready endpoints (terminating ones are not ready), in slice order."""
    out: list[str] = []
    for ep in slice_obj.endpoints or []:
        cond = ep.conditions
        if cond is not None and cond.ready is False:
            continue
        out.extend(ep.addresses or [])
    return out


class Controller:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.prefix: Path = args.prefix
        self.queue: list[tuple[int, int, list[str], int]] = []  # (due ns, seq, ips, observed ns)
        self.cond = threading.Condition()
        self.seq = 0
        self.applied: list[str] | None = None
        self.events = args.events.open("a")
        self.stopping = False

    def log(self, row: dict[str, Any]) -> None:
        self.events.write(json.dumps(row) + "\n")
        self.events.flush()

    def offer(self, slices: dict[str, Any], observed: int, delay: float | None = None) -> None:
        ips = [ip for name in sorted(slices) for ip in ready_ips(slices[name])]
        delay = self.args.delay if delay is None else delay
        with self.cond:
            self.seq += 1
            heapq.heappush(self.queue, (observed + int(delay * 1e9), self.seq, ips, observed))
            self.cond.notify()

    def apply_loop(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait(0.5)
                if self.stopping:
                    return
                due = self.queue[0][0]
            while (left := due - time.time_ns()) > 0:
                time.sleep(min(left / 1e9, 0.001))
            with self.cond:  # everything due by now (+ the coalescing window): the latest state wins
                batch = []
                while self.queue and self.queue[0][0] <= time.time_ns() + int(COALESCE_S * 1e9):
                    batch.append(heapq.heappop(self.queue))
            due_ns, _, ips, observed = batch[-1]
            if ips == self.applied:
                continue
            write_upstream(self.prefix, ips, self.args.upstream_port)
            times = reload(self.args.master_pid)
            removed = [ip for ip in (self.applied or []) if ip not in ips]
            self.applied = ips
            self.log(
                {
                    "event": "reload",
                    "endpoints": ips,
                    "removed": removed,
                    "t_observed": observed,
                    "t_due": due_ns,
                    "changes": len(batch),
                    **times,
                }
            )

    def watch(self) -> None:
        from kubernetes import client, config, watch

        config.load_kube_config(str(self.args.kubeconfig))
        api = client.DiscoveryV1Api()
        selector = f"kubernetes.io/service-name={self.args.service}"
        while not self.stopping:
            listed = api.list_namespaced_endpoint_slice(self.args.namespace, label_selector=selector)
            slices = {s.metadata.name: s for s in listed.items}
            self.offer(
                slices, time.time_ns(), 0.0 if self.applied is None else None
            )  # the initial sync: at once
            rv = listed.metadata.resource_version
            w = watch.Watch()
            try:
                for ev in w.stream(
                    api.list_namespaced_endpoint_slice,
                    self.args.namespace,
                    label_selector=selector,
                    resource_version=rv,
                    timeout_seconds=3600,
                ):
                    observed = time.time_ns()
                    obj = ev["object"]
                    if ev["type"] == "DELETED":
                        slices.pop(obj.metadata.name, None)
                    elif ev["type"] in ("ADDED", "MODIFIED"):
                        slices[obj.metadata.name] = obj
                    else:
                        continue
                    self.offer(slices, observed)
            except Exception as exc:  # relist on any watch failure (410, reset)
                self.log({"event": "watch_error", "error": str(exc)[:200], "time_ns": time.time_ns()})
                time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.ingress", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--service", default="web")
    parser.add_argument("--upstream-port", type=int, default=8080)
    parser.add_argument(
        "--delay", type=float, default=1.5, help="seconds from a change's receipt to its reload"
    )
    parser.add_argument("--prefix", type=Path, required=True, help="nginx's directory (upstream.conf)")
    parser.add_argument("--master-pid", type=int, required=True)
    parser.add_argument("--events", type=Path, required=True)
    args = parser.parse_args(argv)
    ctl = Controller(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=ctl.watch, daemon=True).start()
    ctl.log({"event": "started", "time_ns": time.time_ns()})
    try:
        ctl.apply_loop()
    finally:
        ctl.stopping = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
