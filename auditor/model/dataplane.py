"""Dataplane rule changes on a node: a backend address appearing in / vanishing from the service rules.

One JSON object per line (JSONL); the format is documented in ``docs/dataplane-record.md``. The live
agent writes it; :mod:`auditor.sources.dataplane_file` reads it.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from auditor.model.kube import InputProblem, format_time_ns, parse_time_ns

if TYPE_CHECKING:
    import pandas as pd

PROTOCOLS = ("TCP", "UDP", "SCTP")
class RuleOp(StrEnum):
    ADDED = "added"  # the node started routing new connections to the endpoint
    REMOVED = "removed"  # the node stopped routing new connections to it


OPS = tuple(op.value for op in RuleOp)
BACKENDS = ("iptables-nft", "iptables-legacy", "nftables", "ipvs")


@dataclass(frozen=True, slots=True)
class DataplaneRecord:
    """One rule change. Field order is the column order of the table (``time_ns`` -> ``time``)."""

    time_ns: int  # UTC ns since the epoch; when the change was observed on the node
    node: str
    ip: str  # the backend (endpoint) address
    port: int
    protocol: str  # "TCP" | "UDP" | "SCTP"
    op: str  # "added" | "removed"
    backend: str  # "iptables-nft" | "iptables-legacy" | "nftables" | "ipvs"
    service: str | None = None  # "namespace/name"
    chain: str | None = None  # e.g. "KUBE-SEP-4XBCOW2OFE2WC5QH"
    source: str | None = None  # how it was observed, e.g. "nft-monitor", "iptables-save-diff"

    def to_json_line(self) -> str:
        """The JSONL line (no newline); ``from_json`` reads it back to an equal record."""
        data = asdict(self)
        data["time"] = format_time_ns(data.pop("time_ns"))
        ordered = {"time": data["time"], **{k: v for k, v in data.items() if k != "time"}}
        return json.dumps(ordered, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | dict[str, Any]) -> DataplaneRecord:
        """Validate one record (a line or a parsed object); ``ValueError`` says which field is wrong."""
        obj = json.loads(data) if isinstance(data, str) else data
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in ("time", "node", "ip", "port", "protocol", "op", "backend") if obj.get(k) is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        time_ns = parse_time_ns(obj["time"])[0] if isinstance(obj["time"], str) else None
        if time_ns is None:
            raise ValueError(f"time is not an RFC 3339 string: {obj['time']!r}")
        try:
            ip = str(ipaddress.ip_address(obj["ip"]))
        except ValueError:
            raise ValueError(f"ip is not an address: {obj['ip']!r}") from None
        port = obj["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port is not 0..65535: {port!r}")
        for name, allowed in (("protocol", PROTOCOLS), ("op", OPS), ("backend", BACKENDS)):
            if obj[name] not in allowed:
                raise ValueError(f"{name} must be one of {'|'.join(allowed)}, not {obj[name]!r}")
        optional = {}
        for name in ("service", "chain", "source"):
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or null, not {value!r}")
            optional[name] = value
        if not isinstance(obj["node"], str) or not obj["node"]:
            raise ValueError(f"node must be a non-empty string, not {obj['node']!r}")
        return cls(time_ns, obj["node"], ip, port, obj["protocol"], obj["op"], obj["backend"], **optional)


DATAPLANE_COLUMNS: tuple[str, ...] = tuple(
    "time" if f.name == "time_ns" else f.name for f in fields(DataplaneRecord)
)


def dataplane_frame(records: list[DataplaneRecord] | None = None) -> pd.DataFrame:
    """The pandas table (sorted by time; empty with the right dtypes if no record)."""
    import pandas as pd

    rows = records or []
    data: dict[str, Any] = {}
    for f in fields(DataplaneRecord):
        values = [getattr(r, f.name) for r in rows]
        if f.name == "time_ns":
            data["time"] = pd.to_datetime(pd.Series(values, dtype="int64"), unit="ns", utc=True)
        elif f.name == "port":
            data["port"] = pd.Series(values, dtype="uint16")
        elif f.name in ("service", "chain", "source"):
            data[f.name] = pd.Series(values, dtype="string")
        else:
            data[f.name] = pd.Series(values, dtype="object").astype("category")
    df = pd.DataFrame(data, columns=list(DATAPLANE_COLUMNS))
    return df.sort_values("time", kind="stable").reset_index(drop=True)


@dataclass(slots=True)
class DataplaneInput:
    """Rule changes read from one or more files, with what could not be read."""

    changes: pd.DataFrame  # DATAPLANE_COLUMNS, sorted by time
    problems: list[InputProblem] = field(default_factory=list)
    records_read: int = 0
    records_skipped: int = 0

    @property
    def table(self) -> pd.DataFrame:  # alias
        return self.changes
