"""kube-proxy's nftables mode (pkg/proxy/nftables), for one ClusterIP service, as ``nft -f`` transactions.

``table ip kube-proxy``: ``nat-prerouting``/``nat-output`` jump to ``services``, which looks the
destination up in the ``service-ips`` verdict map (``ip . proto . port : goto service-...``); the
``service-<hash>-ns/name/tcp/port`` chain balances with ``numgen random mod N vmap { i : goto
endpoint-... }`` and each ``endpoint-<hash>-ns/name/tcp/port__IP/PORT`` chain DNATs. Each sync is one
atomic transaction: flush and refill the service chain, (re)create the endpoint chains, delete stale ones.
"""

from __future__ import annotations

from tests.lab.rules import Service, port_proto_hash

TABLE = "ip kube-proxy"


def service_chain(svc: Service) -> str:
    base = f"{svc.namespace}/{svc.name}/{svc.protocol}/{svc.port_name}"
    return f"service-{port_proto_hash(svc.port_id, svc.protocol)[:8]}-{base}"


def endpoint_chain(svc: Service, ip: str) -> str:
    base = f"{svc.namespace}/{svc.name}/{svc.protocol}/{svc.port_name}"
    digest = port_proto_hash(svc.port_id, svc.protocol, f"{ip}:{svc.target_port}")[:8]
    return f"endpoint-{digest}-{base}__{ip}/{svc.target_port}"


def render_nft_base(svc: Service) -> str:
    """The first transaction: hooks, masquerade plumbing, the services map and the service chain."""
    t, chain = TABLE, service_chain(svc)
    return "\n".join([
        f"add table {t} {{ comment \"rules for kube-proxy\" ; }}",
        f"add chain {t} mark-for-masquerade",
        f"add rule {t} mark-for-masquerade mark set mark or 0x4000",
        f"add chain {t} masquerading",
        f"add rule {t} masquerading mark and 0x4000 == 0 return",
        f"add rule {t} masquerading mark set mark xor 0x4000",
        f"add rule {t} masquerading masquerade fully-random",
        f"add chain {t} services",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}",
        f"add rule {t} nat-prerouting jump services",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add rule {t} nat-output jump services",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat ; }}",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}",
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add chain {t} {chain}",
        f"add element {t} service-ips {{ {svc.cluster_ip} . {svc.protocol} . {svc.port} : goto {chain} }}",
        "",
    ])  # fmt: skip


def render_nft_sync(svc: Service, endpoints: list[str], stale: list[str]) -> str:
    """One sync: the service chain balances over ``endpoints``; chains of ``stale`` ones are deleted."""
    t, chain = TABLE, service_chain(svc)
    lines = [f"flush chain {t} {chain}"]
    for ip in endpoints:
        ep = endpoint_chain(svc, ip)
        lines += [f"add chain {t} {ep}", f"flush chain {t} {ep}",
                  f"add rule {t} {ep} ip saddr {ip} jump mark-for-masquerade",
                  f"add rule {t} {ep} meta l4proto {svc.protocol} dnat to {ip}:{svc.target_port}"]  # fmt: skip
    if endpoints:
        targets = ", ".join(f"{i} : goto {endpoint_chain(svc, ip)}" for i, ip in enumerate(endpoints))
        lines.append(f"add rule {t} {chain} numgen random mod {len(endpoints)} vmap {{ {targets} }}")
    lines += [f"delete chain {t} {endpoint_chain(svc, ip)}" for ip in stale]
    return "\n".join([*lines, ""])
