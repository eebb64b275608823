"""kube-proxy's iptables mode, for one ClusterIP service: chain names, rule text, and syncs.

Chains and rules are written as kube-proxy (pkg/proxy/iptables) writes them, with
``iptables-restore --noflush``: each sync declares the service chain (which flushes it), rewrites it
with ``-m statistic --mode random --probability`` splits, and deletes stale endpoint chains with ``-X``.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import time
from dataclasses import dataclass

from tests.lab.netns import sh

RESTORE = {"nft": "iptables-nft-restore", "legacy": "iptables-legacy-restore", "nftables": "nft"}


def port_proto_hash(service_port_name: str, protocol: str, endpoint: str = "") -> str:
    """kube-proxy's hash: sha256 of name + protocol (+ endpoint), base32, first 16 characters."""
    digest = hashlib.sha256((service_port_name + protocol + endpoint).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


@dataclass(frozen=True)
class Service:
    """One service port: ``namespace/name:port_name`` at cluster_ip:port -> endpoints:target_port."""

    namespace: str = "default"
    name: str = "web"
    port_name: str = "http"
    cluster_ip: str = "10.96.0.10"
    port: int = 80
    target_port: int = 8080
    protocol: str = "tcp"

    @property
    def port_id(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port_name}"

    @property
    def svc_chain(self) -> str:
        return "KUBE-SVC-" + port_proto_hash(self.port_id, self.protocol)

    def sep_chain(self, pod_ip: str) -> str:
        return "KUBE-SEP-" + port_proto_hash(self.port_id, self.protocol, f"{pod_ip}:{self.target_port}")


def render_base(svc: Service) -> str:
    """The first sync: jump chains from PREROUTING/OUTPUT, masquerade plumbing, the service portal."""
    return "\n".join([
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        f":{svc.svc_chain} - [0:0]",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f'-A KUBE-SERVICES -d {svc.cluster_ip}/32 -p {svc.protocol} -m comment --comment '
        f'"{svc.port_id} cluster IP" -m {svc.protocol} --dport {svc.port} -j {svc.svc_chain}',
        "COMMIT",
        "",
    ])


def render_sync(svc: Service, endpoints: list[str], stale: list[str]) -> str:
    """One sync of the service: SVC chain with random splits over ``endpoints``, SEP chains, stale -X."""
    lines = ["*nat", f":{svc.svc_chain} - [0:0]"]
    lines += [f":{svc.sep_chain(ip)} - [0:0]" for ip in [*endpoints, *stale]]
    n = len(endpoints)
    for i, ip in enumerate(endpoints):
        comment = f'-m comment --comment "{svc.port_id} -> {ip}:{svc.target_port}"'
        split = f" -m statistic --mode random --probability {1.0 / (n - i):0.10f}" if i < n - 1 else ""
        lines.append(f"-A {svc.svc_chain} {comment}{split} -j {svc.sep_chain(ip)}")
    for ip in endpoints:
        sep = svc.sep_chain(ip)
        lines.append(f'-A {sep} -s {ip}/32 -m comment --comment "{svc.port_id}" -j KUBE-MARK-MASQ')
        lines.append(f'-A {sep} -p {svc.protocol} -m comment --comment "{svc.port_id}" -m {svc.protocol} '
                     f"-j DNAT --to-destination {ip}:{svc.target_port}")
    lines += [f"-X {svc.sep_chain(ip)}" for ip in stale]
    lines += ["COMMIT", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class SyncTimes:
    """Wall-clock nanoseconds just before starting and just after iptables-restore returned."""

    before_ns: int
    after_ns: int


class Dataplane:
    """The node's nat table for one service, rewritten the way kube-proxy rewrites it."""

    def __init__(self, node_ns: str, svc: Service, backend: str = "nft") -> None:
        if backend not in RESTORE:
            raise ValueError(f"unknown backend {backend!r}; use one of {sorted(RESTORE)}")
        self.node_ns, self.svc, self.restore = node_ns, svc, RESTORE[backend]
        self.endpoints: list[str] = []
        self.log: list[tuple[int, str]] = []  # (time_ns after restore, payload) of every sync
        self._ready: subprocess.Popen[str] | None = None  # see prepare()

    def _argv(self) -> list[str]:
        return ["nft", "-f", "-"] if self.restore == "nft" else [self.restore, "--noflush", "-w", "5"]

    def prepare(self) -> None:
        """Start the next sync's restore process now, waiting for its payload on stdin.

        A sync that is due at a given time (the lab's propagation delay) then only writes its payload:
        starting ``ip netns exec NODE nft -f -`` took 20-50 ms on this 2-CPU machine under the lab's
        load, and the rule change was committed that much after its due time (issue 9: an agent delay
        of 1.0296 s was measured right for a change the lab applied ~30 ms late). Neither restore holds
        a lock before it reads its first table line, so the waiting process blocks nobody."""
        if self._ready is None:
            self._ready = subprocess.Popen(["ip", "netns", "exec", self.node_ns, *self._argv()],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)  # fmt: skip

    def close(self) -> None:
        """Stop a prepared process that no sync used (a run that failed midway)."""
        proc, self._ready = self._ready, None
        if proc is not None:
            proc.kill()
            proc.communicate(timeout=5.0)

    def _apply(self, payload: str) -> SyncTimes:
        proc, self._ready = self._ready, None
        before = time.time_ns()  # the commit cannot precede this: the payload was not written yet
        if proc is None:
            sh(self._argv(), ns=self.node_ns, stdin=payload)
        else:
            try:
                _, err = proc.communicate(payload, timeout=10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=5.0)
                raise RuntimeError(f"{' '.join(self._argv())} in {self.node_ns}: no exit within 10 s") from None
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(self._argv())} in {self.node_ns}: exit {proc.returncode}: {err.strip()}")
        after = time.time_ns()
        self.log.append((after, payload))
        return SyncTimes(before, after)

    def install(self) -> SyncTimes:
        if self.restore == "nft":
            from tests.lab.nftables import render_nft_base

            return self._apply(render_nft_base(self.svc))
        return self._apply(render_base(self.svc))

    def sync(self, endpoints: list[str]) -> SyncTimes:
        """Make the service balance over ``endpoints`` (in this order); delete chains of removed ones."""
        stale = [ip for ip in self.endpoints if ip not in endpoints]
        if self.restore == "nft":
            from tests.lab.nftables import render_nft_sync

            times = self._apply(render_nft_sync(self.svc, endpoints, stale))
        else:
            times = self._apply(render_sync(self.svc, endpoints, stale))
        self.endpoints = list(endpoints)
        return times

    def dump(self) -> str:
        """The nat table as iptables-save shows it (nftables mode: the kube-proxy table as nft lists it)."""
        if self.restore == "nft":
            return sh(["nft", "list", "table", "ip", "kube-proxy"], ns=self.node_ns).stdout
        save = self.restore.replace("-restore", "-save")
        return sh([save, "-t", "nat"], ns=self.node_ns).stdout
