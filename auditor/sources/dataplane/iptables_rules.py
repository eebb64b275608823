"""kube-proxy's iptables rules as text: ``iptables-save`` output and ``xtables-monitor -e`` events.

Pure parsing, no commands run here. :class:`IptablesNat` keeps the nat table (per address family)
as chain -> rules, fed by a save dump and then by monitor events, and reduces it to the endpoints
the service chains (``KUBE-SVC-*``, ``KUBE-SVL-*``) currently jump to.

An ``xtables-monitor -e`` event stream looks like (one nf_tables transaction, then its generation)::

     EVENT: -4 -t nat -D KUBE-SVC-CDGG... -m comment --comment "ns/web:http -> 10.244.0.5:8080" -j KUBE-SEP-7U6M...
     EVENT: -4 -t nat -X KUBE-SEP-7U6M...
    NEWGEN: GENID=4 PID=19066 NAME=iptables-nft-re

A chain flush (``:CHAIN`` in ``iptables-restore --noflush``) shows as one ``-D`` per rule.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass

from auditor.sources.dataplane.endpoints import (
    Endpoint,
    apply_chain_event,
    normalize_protocol,
    service_from_port_name,
    split_address,
)

SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-")
_NEWGEN_PID = re.compile(r"\bPID=(\d+)")
_EVENT = re.compile(r"^\s*EVENT:\s+(-[46])\s+-t\s+(\S+)\s+(.*)$")
_DEL_TABLE = re.compile(r"DEL table: table (\S+) (ip6?)\b")
_OPTIONS = {
    "-j": "target",
    "--jump": "target",
    "-g": "target",
    "--goto": "target",
    "--to-destination": "to",
    "-p": "protocol",
    "--protocol": "protocol",
    "--comment": "comment",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, reduced to what the endpoint model needs; ``text`` identifies it within its chain."""

    chain: str
    text: str
    target: str | None  # -j / -g
    to_destination: str | None  # DNAT --to-destination
    protocol: str | None  # -p
    comment: str | None


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """One parsed monitor line. ``kind``: rule-add | rule-del | chain-add | chain-del | table-del | generation."""

    kind: str
    family: str = "ipv4"  # "ipv4" | "ipv6"
    table: str = "nat"
    chain: str = ""
    rule: Rule | None = None
    pid: int | None = None  # generation: the thread that committed it (NEWGEN ... PID=)


def parse_rule(tokens: list[str]) -> Rule:
    """``[chain, *match/target options]`` (after -A/-D/-I, without the flag) -> Rule."""
    chain, rest = tokens[0], tokens[1:]
    if rest and rest[0].isdigit():  # -I CHAIN 1 ...
        rest = rest[1:]
    values: dict[str, str] = {}
    for flag, value in itertools.pairwise(rest):
        name = _OPTIONS.get(flag)
        if name is not None:
            values.setdefault(name, value)
    return Rule(
        chain,
        shlex.join(rest),
        values.get("target"),
        values.get("to"),
        values.get("protocol"),
        values.get("comment"),
    )


def parse_monitor_line(line: str) -> MonitorEvent | None:
    """One ``xtables-monitor -e`` line -> event; None for lines that change nothing we model.

    ValueError for an EVENT line we cannot read (unbalanced quotes, missing chain).
    """
    stripped = line.strip()
    if stripped.startswith("NEWGEN:"):
        pid = _NEWGEN_PID.search(stripped)
        return MonitorEvent("generation", pid=int(pid[1]) if pid else None)
    deleted = _DEL_TABLE.search(stripped)
    if deleted:
        return MonitorEvent("table-del", "ipv6" if deleted[2] == "ip6" else "ipv4", deleted[1])
    match = _EVENT.match(line)
    if not match:
        return None
    family = "ipv6" if match[1] == "-6" else "ipv4"
    tokens = shlex.split(match[3])
    if len(tokens) < 2:
        raise ValueError(f"event without chain: {stripped[:120]!r}")
    flag, args = tokens[0], tokens[1:]
    if flag in ("-A", "-I"):
        return MonitorEvent("rule-add", family, match[2], args[0], parse_rule(args))
    if flag == "-D":
        return MonitorEvent("rule-del", family, match[2], args[0], parse_rule(args))
    if flag == "-N":
        return MonitorEvent("chain-add", family, match[2], args[0])
    if flag == "-X":
        return MonitorEvent("chain-del", family, match[2], args[0])
    return None


class IptablesNat:
    """The nat table of each family as chain -> rules (in order, each text once)."""

    def __init__(self) -> None:
        self.chains: dict[tuple[str, str], dict[str, Rule]] = {}

    def load_save(self, text: str, family: str = "ipv4") -> int:
        """Replace ``family``'s nat table with an ``iptables-save`` dump; returns the rule count.

        ValueError for a line of the nat section that cannot be read.
        """
        for key in [k for k in self.chains if k[0] == family]:
            del self.chains[key]
        table, count = None, 0
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("*"):
                table = line[1:]
            elif table != "nat" or not line or line.startswith("#") or line == "COMMIT":
                continue
            elif line.startswith(":"):
                self.chains.setdefault((family, line[1:].split()[0]), {})
            elif line.startswith("-A "):
                try:
                    rule = parse_rule(shlex.split(line)[1:])
                except (ValueError, IndexError) as exc:
                    raise ValueError(f"unreadable rule {line[:120]!r}: {exc}") from None
                self.chains.setdefault((family, rule.chain), {})[rule.text] = rule
                count += 1
        return count

    def apply(self, event: MonitorEvent) -> None:
        """Apply one monitor event (events of other tables are ignored)."""
        if event.table != "nat":
            return
        rule = event.rule
        apply_chain_event(
            self.chains, event.kind, event.family, event.chain, rule.text if rule else None, rule
        )

    def endpoints(self) -> set[Endpoint]:
        """The endpoints a service chain jumps to, through a KUBE-SEP chain with a DNAT rule."""
        found: set[Endpoint] = set()
        for (family, chain), rules in self.chains.items():
            if not chain.startswith(SERVICE_CHAIN_PREFIXES):
                continue
            for rule in rules.values():
                if rule.target and rule.target.startswith("KUBE-SEP-"):
                    found.update(self._dnat_targets(family, rule.target))
        return found

    def _dnat_targets(self, family: str, sep: str) -> list[Endpoint]:
        out = []
        for rule in self.chains.get((family, sep), {}).values():
            if rule.target != "DNAT" or not rule.to_destination:
                continue
            address = split_address(rule.to_destination)
            if address is None:
                continue
            out.append(
                Endpoint(
                    address[0],
                    address[1],
                    normalize_protocol(rule.protocol),
                    service_from_port_name(rule.comment),
                    sep,
                )
            )
        return out
