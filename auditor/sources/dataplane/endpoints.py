"""What the service rules route to: endpoints, and the records of their set changing.

Every backend reduces its rules to a set of :class:`Endpoint` (a backend address a service's
load-balancing rule currently sends new connections to). A rule change is the difference of two
such sets, taken at the boundary of one atomic rule transaction (an nf_tables generation, a legacy
table replace): :func:`diff_endpoints` turns it into ``added`` / ``removed`` records.

``removed`` means: the service's balancing rule no longer sends new connections to the address (the
KUBE-SVC chain stops jumping to the KUBE-SEP chain, the nft ``service-...`` vmap loses the
``endpoint-...`` chain, the IPVS service loses the real server), whether or not the endpoint's own
chain is deleted in the same transaction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from auditor.model.dataplane import DataplaneRecord


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """One backend address as the rules of one service route to it."""

    ip: str
    port: int
    protocol: str  # "TCP" | "UDP" | "SCTP"
    service: str | None  # "namespace/name"
    chain: str | None  # the endpoint's rule object (KUBE-SEP-..., endpoint-..., ip:port for ipvs)


def split_address(text: str) -> tuple[str, int] | None:
    """``10.0.0.1:80`` / ``[fd00::1]:80`` -> (normalized ip, port); None if not an address with port."""
    text = text.strip().strip('"')
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        return None
    number = int(port)
    return (ip, number) if 0 <= number <= 65535 else None


def normalize_protocol(text: str | None) -> str:
    """``tcp`` / ``6`` -> ``TCP``; unknown or missing -> ``TCP`` (kube-proxy's default)."""
    names = {"tcp": "TCP", "6": "TCP", "udp": "UDP", "17": "UDP", "sctp": "SCTP", "132": "SCTP"}
    return names.get((text or "tcp").lower(), "TCP")


def service_from_port_name(text: str | None) -> str | None:
    """kube-proxy's ``namespace/name:port`` (or ``namespace/name``) -> ``namespace/name``."""
    if not text or "/" not in text:
        return None
    return text.split(":", 1)[0].split()[0] or None


def diff_endpoints(
    before: Iterable[Endpoint],
    after: Iterable[Endpoint],
    *,
    time_ns: int,
    node: str,
    backend: str,
    source: str,
) -> list[DataplaneRecord]:
    """Records for the endpoints that left (``removed``) and entered (``added``) the rules, sorted."""
    old, new = set(before), set(after)

    def record(ep: Endpoint, op: str) -> DataplaneRecord:
        return DataplaneRecord(
            time_ns,
            node,
            ep.ip,
            ep.port,
            ep.protocol,
            op,
            backend,
            service=ep.service,
            chain=ep.chain,
            source=source,
        )

    return [record(ep, "removed") for ep in sorted(old - new)] + [
        record(ep, "added") for ep in sorted(new - old)
    ]


def apply_chain_event(
    chains: dict[tuple[str, str], dict[Any, Any]], kind: str, family: str, chain: str, key: Any, value: Any
) -> None:
    """Keep a rule model's chains in step with one monitor event (shared by the iptables and nft models).

    ``key``/``value`` name the rule in its chain (rule text for iptables, handle for nft); None for
    events that are not about one rule."""
    where = (family, chain)
    if kind == "rule-add" and key is not None:
        chains.setdefault(where, {})[key] = value
    elif kind == "rule-del" and key is not None:
        chains.get(where, {}).pop(key, None)
    elif kind == "chain-add":
        chains.setdefault(where, {})
    elif kind == "chain-del":
        chains.pop(where, None)
    elif kind == "table-del":
        for k in [k for k in chains if k[0] == family]:
            del chains[k]
