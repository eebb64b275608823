"""kube-proxy's nftables-mode rules as text: ``nft -a list table`` dumps and ``nft -a monitor`` lines.

Pure parsing, no commands run here. kube-proxy (``--proxy-mode=nftables``) writes ``table ip
kube-proxy`` (and ``ip6``): a ``service-<hash>-ns/name/proto/port`` chain balances with
``numgen random mod N vmap { 0 : goto endpoint-<hash>-ns/name/proto/port__10.244.0.5/8080, ... }``
and each ``endpoint-...`` chain ends in ``dnat to 10.244.0.5:8080``. ``nft -a monitor`` prints::

    add rule ip kube-proxy service-ULMVA6XW-ns/web/tcp/http numgen random mod 1 vmap { 0 : goto endpoint-... } # handle 22
    delete rule ip kube-proxy service-ULMVA6XW-ns/web/tcp/http handle 15
    delete chain ip kube-proxy endpoint-AAAA-ns/web/tcp/http__10.244.0.5/8080
    # new generation 3 by process 30148 (nft)

Deleted rules carry only their handle, so :class:`NftTables` keeps the rules by handle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.sources.dataplane.endpoints import Endpoint, apply_chain_event, normalize_protocol, split_address

TABLE = "kube-proxy"
_FAMILIES = {"ip": "ipv4", "ip6": "ipv6", "inet": "inet"}
_NAME = r'"?([^\s"]+)"?'
_GEN_PID = re.compile(r"\bby process (\d+)")
_RULE = re.compile(rf"^(add|insert|delete|replace) rule (\S+) {_NAME} {_NAME}\s*(.*)$")
_CHAIN = re.compile(rf"^(add|delete) chain (\S+) {_NAME} {_NAME}")
_TABLE = re.compile(rf"^delete table (\S+) {_NAME}")
_HANDLE_TAIL = re.compile(r"(?:^|\s)#?\s*handle (\d+)\s*$")
_ENDPOINT_REF = re.compile(r'(?:goto|jump)\s+"?(endpoint-[^\s,}"]+)')
_DNAT = re.compile(r"\bdnat (?:ip6? )?to (\S+)")
_L4PROTO = re.compile(r"\bmeta l4proto (\w+)")
_ENDPOINT_CHAIN = re.compile(r"^endpoint-[A-Z0-9]+-([^/]+)/([^/]+)/(\w+)/")


@dataclass(frozen=True, slots=True)
class NftEvent:
    """One monitor line. ``kind``: rule-add | rule-del | chain-add | chain-del | table-del | generation."""

    kind: str
    family: str = "ipv4"
    chain: str = ""
    handle: int | None = None
    text: str = ""
    pid: int | None = None  # generation: the thread that committed it ("by process N")


def parse_nft_monitor_line(line: str) -> NftEvent | None:
    """One ``nft -a monitor`` line -> event; None for lines of other tables or objects we do not model.

    ValueError for a rule line of the kube-proxy table without a handle (monitor run without ``-a``).
    """
    stripped = line.strip()
    if stripped.startswith("# new generation"):
        pid = _GEN_PID.search(stripped)
        return NftEvent("generation", pid=int(pid[1]) if pid else None)
    match = _RULE.match(stripped)
    if match:
        verb, family, table, chain, rest = match.groups()
        if table != TABLE:
            return None
        handle = _HANDLE_TAIL.search(rest)
        if handle is None:
            raise ValueError(f"rule event without a handle (run nft -a monitor): {stripped[:120]!r}")
        text = rest[: handle.start()].strip()
        kind = "rule-del" if verb == "delete" else "rule-add"
        return NftEvent(kind, _FAMILIES.get(family, family), chain, int(handle[1]), text)
    match = _CHAIN.match(stripped)
    if match:
        verb, family, table, chain = match.groups()
        if table != TABLE:
            return None
        return NftEvent("chain-add" if verb == "add" else "chain-del", _FAMILIES.get(family, family), chain)
    match = _TABLE.match(stripped)
    if match and match[2] == TABLE:
        return NftEvent("table-del", _FAMILIES.get(match[1], match[1]))
    return None


class NftTables:
    """kube-proxy's nft tables (per family) as chain -> {handle: rule text}."""

    def __init__(self) -> None:
        self.chains: dict[tuple[str, str], dict[int, str]] = {}

    def load_list(self, text: str, family: str = "ipv4") -> int:
        """Replace ``family``'s table with an ``nft -a list table`` dump; returns the rule count."""
        for key in [k for k in self.chains if k[0] == family]:
            del self.chains[key]
        chain: str | None = None
        pending: list[str] = []
        count = 0
        for raw in text.splitlines():
            line = raw.strip()
            header = re.match(rf"^chain {_NAME} \{{", line)
            if header:
                chain, pending = header[1], []
                self.chains.setdefault((family, chain), {})
                continue
            if chain is None or not line:
                continue
            if line == "}" and not pending:
                chain = None
                continue
            handle = _HANDLE_TAIL.search(line)
            if handle is None:
                if not line.startswith(("type ", "policy ", "comment ")):
                    pending.append(line)  # a rule printed over several lines
                continue
            rule = " ".join([*pending, line[: handle.start()].strip()])
            pending = []
            self.chains[(family, chain)][int(handle[1])] = rule
            count += 1
        return count

    def apply(self, event: NftEvent) -> None:
        apply_chain_event(self.chains, event.kind, event.family, event.chain, event.handle, event.text)

    def endpoints(self) -> set[Endpoint]:
        """Endpoints an ``endpoint-...`` chain DNATs to, while another chain's rule goes to it."""
        found: set[Endpoint] = set()
        for (family, chain), rules in self.chains.items():
            if chain.startswith("endpoint-"):
                continue
            for rule in rules.values():
                for target in _ENDPOINT_REF.findall(rule):
                    found.update(self._dnat_targets(family, target))
        return found

    def _dnat_targets(self, family: str, chain: str) -> list[Endpoint]:
        named = _ENDPOINT_CHAIN.match(chain)
        service = f"{named[1]}/{named[2]}" if named else None
        out = []
        for rule in self.chains.get((family, chain), {}).values():
            dnat = _DNAT.search(rule)
            address = split_address(dnat[1].rstrip(",;")) if dnat else None
            if address is None:
                continue
            l4 = _L4PROTO.search(rule)
            protocol = l4[1] if l4 else (named[3] if named else None)
            out.append(Endpoint(address[0], address[1], normalize_protocol(protocol), service, chain))
        return out
