"""Network namespaces and veths of the lab: one node, pods and a client, named ``al<run id>...``.

Every command is bounded in time; ``remove_namespaces`` is safe to call twice and on stale runs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

PREFIX = "al"
NODE_GW = "169.254.1.1"  # calico-style: the pod's default gateway, answered by proxy ARP on the node


def sh(args: Sequence[str], *, ns: str | None = None, timeout: float = 10.0, check: bool = True,
       stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command (inside ``ns`` when given) and return its result; raise on failure if ``check``."""
    argv = [*(("ip", "netns", "exec", ns) if ns else ()), *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """Names of the network namespaces starting with ``prefix``."""
    out = sh(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.startswith(prefix)]


def kill_namespace_processes(ns: str) -> None:
    """SIGKILL whatever still runs in ``ns`` (processes the lab started there)."""
    pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        sh(["kill", "-9", pid], check=False)


def remove_namespaces(names: Sequence[str]) -> None:
    """Kill the processes in and delete each namespace (its veths go with it); ignore missing ones."""
    for ns in names:
        kill_namespace_processes(ns)
        sh(["ip", "netns", "del", ns], check=False)


def add_namespace(ns: str) -> None:
    """Create ``ns`` with loopback up."""
    sh(["ip", "netns", "add", ns])
    sh(["ip", "link", "set", "lo", "up"], ns=ns)


def make_node(node_ns: str) -> None:
    """The node: routing on, no rp_filter, so DNAT-ed traffic flows between client and pods."""
    add_namespace(node_ns)
    sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=node_ns)
    sh(["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"], ns=node_ns)
    sh(["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"], ns=node_ns)
    # the pods' gateway is a node address, so the node answers their ARP for it on every veth
    sh(["ip", "addr", "add", f"{NODE_GW}/32", "dev", "lo"], ns=node_ns)


def attach_pod(node_ns: str, pod_ns: str, host_if: str, pod_ip: str) -> None:
    """A pod namespace with ``eth0`` = pod_ip/32, routed from the node through ``host_if`` (calico style)."""
    add_namespace(pod_ns)
    sh(["ip", "link", "add", host_if, "netns", node_ns, "type", "veth", "peer", "name", "eth0",
        "netns", pod_ns])
    sh(["ip", "addr", "add", f"{pod_ip}/32", "dev", "eth0"], ns=pod_ns)
    sh(["ip", "link", "set", "eth0", "up"], ns=pod_ns)
    sh(["ip", "route", "add", NODE_GW, "dev", "eth0", "scope", "link"], ns=pod_ns)
    sh(["ip", "route", "add", "default", "via", NODE_GW, "dev", "eth0"], ns=pod_ns)
    sh(["sysctl", "-qw", f"net.ipv4.conf.{host_if}.proxy_arp=1"], ns=node_ns)
    sh(["sysctl", "-qw", f"net.ipv4.conf.{host_if}.rp_filter=0"], ns=node_ns)
    sh(["ip", "link", "set", host_if, "up"], ns=node_ns)
    sh(["ip", "route", "add", f"{pod_ip}/32", "dev", host_if, "scope", "link"], ns=node_ns)


def attach_client(node_ns: str, client_ns: str, host_if: str, client_ip: str, node_ip: str) -> None:
    """The client namespace on a /24 with the node as default gateway."""
    add_namespace(client_ns)
    sh(["ip", "link", "add", host_if, "netns", node_ns, "type", "veth", "peer", "name", "eth0",
        "netns", client_ns])
    sh(["ip", "addr", "add", f"{node_ip}/24", "dev", host_if], ns=node_ns)
    sh(["ip", "link", "set", host_if, "up"], ns=node_ns)
    sh(["ip", "addr", "add", f"{client_ip}/24", "dev", "eth0"], ns=client_ns)
    sh(["ip", "link", "set", "eth0", "up"], ns=client_ns)
    sh(["ip", "route", "add", "default", "via", node_ip], ns=client_ns)
