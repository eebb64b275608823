"""Read Kubernetes watch streams and lists into a :class:`~auditor.model.kube.KubeInput` timeline
(files merged in receipt order, then folded by :class:`~auditor.sources.kube_timeline.KubeTimeline`).

Accepted (auto-detected per JSON document, several kinds may share one file):

* ``kubectl get pods,endpointslices -A --watch --output-watch-events -o json``: concatenated,
  pretty-printed or one-per-line ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}``,
  each optionally with ``"observedAt"`` (RFC 3339, ns: when the watcher received it; *precise*) and
  ``"relisted": true`` when the watcher learnt the change by relisting after a 410 or a reconnect: its
  observedAt is then only an upper bound of when the change happened, used for ordering, not as a time;
* ``kubectl get events -A -o json`` / ``kubectl get pods -o json``: ``{"kind": "...List", "items": [...]}``
  (items are taken as ADDED, without observedAt);
* a single object (``kubectl get pod x -o json``), taken as ADDED.

A chunk that is not JSON or not a watch event becomes an :class:`InputProblem` naming file and line;
reading resumes at the next line starting with ``{``. Only a file without any readable document
raises :class:`AuditorError`. Events from several files are merged in observedAt order (events without
observedAt keep their place after the previous timed event of their file).

preStop kinds: ``sleep`` (native ``sleep`` action, or an exec hook that only sleeps: ``sleep 5``,
``sh -c "sleep 5"``), ``exec`` (other commands; ``prestop_sleep_s`` = the sleeps found in a shell script,
a lower bound, or None), ``http``/``tcp`` (duration unknown: None), ``none``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError
from auditor.model.kube import InputProblem, KubeInput, WatchEvent, parse_time_ns
from auditor.sources.kube_timeline import KubeTimeline

_WS = re.compile(r"\s*")
_OBJECT_TYPES = ("ADDED", "MODIFIED", "DELETED")


@dataclass(slots=True)
class _Item:
    """One object change, in reading order."""

    type: str
    obj: dict[str, Any]
    observed_ns: int | None
    file: str
    line: int
    order_ns: int = 0  # observedAt, or the last one before it in the same file
    bound_ns: int | None = None  # a relisted event's observedAt: orders it, but is no precise time


@dataclass(slots=True)
class _Reader:
    problems: list[InputProblem] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)
    skipped: int = 0

    def read_file(self, path: Path) -> None:
        name = path.name
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise AuditorError(
                f"cannot read ({exc.strerror or exc})", str(path), "check the path given to --kube"
            ) from exc
        documents = 0
        last_observed = 0
        start = len(self.items)
        for line, doc in _split_documents(text, name, self.problems):
            before = len(self.problems)
            if self._add_document(doc, name, line):
                documents += 1
            elif len(self.problems) == before:
                message = "not a JSON watch event (no type/object); skipped"
                self.problems.append(InputProblem(name, line, message))
                self.skipped += 1
        if documents == 0:
            raise AuditorError(
                "no readable Kubernetes watch event or list",
                str(path),
                "expected `kubectl get pods,endpointslices -A --watch --output-watch-events -o json` output "
                "or a `kubectl get ... -o json` list",
            )
        for item in self.items[start:]:
            seen = item.observed_ns if item.observed_ns is not None else item.bound_ns
            if seen is not None:
                last_observed = seen
            item.order_ns = last_observed

    def _add_document(self, doc: Any, file: str, line: int) -> bool:
        if not isinstance(doc, dict):
            self.problems.append(InputProblem(file, line, "not a JSON watch event (not an object); skipped"))
            self.skipped += 1
            return False
        etype = doc.get("type")
        if isinstance(etype, str) and "object" in doc:
            self._add_watch_event(doc, etype, file, line)
            return True
        items = doc.get("items")
        if isinstance(items, list):
            default_kind = str(doc.get("kind") or "").removesuffix("List")
            for obj in items:
                if isinstance(obj, dict):
                    obj.setdefault("kind", default_kind)
                    self.items.append(_Item("ADDED", obj, None, file, line))
                else:
                    self.skipped += 1
            return True
        if isinstance(doc.get("kind"), str) and isinstance(doc.get("metadata"), dict):
            self.items.append(_Item("ADDED", doc, None, file, line))
            return True
        return False

    def _add_watch_event(self, doc: dict[str, Any], etype: str, file: str, line: int) -> None:
        obj = doc.get("object")
        if etype == "BOOKMARK":
            self.skipped += 1
            return
        if etype == "ERROR":
            self.skipped += 1
            status = obj if isinstance(obj, dict) else {}
            self.problems.append(InputProblem(
                file, line,
                f"watch ERROR {status.get('code', '?')} {status.get('reason', '')}: "
                f"{status.get('message', '')}; events may be missing after this point".replace("  ", " "),
            ))  # fmt: skip
            return
        if etype not in _OBJECT_TYPES or not isinstance(obj, dict):
            self.skipped += 1
            self.problems.append(InputProblem(file, line, f"unknown watch event type {etype!r}; skipped"))
            return
        observed: int | None = None
        raw = doc.get("observedAt")
        if raw is not None:
            try:
                observed = parse_time_ns(raw)[0]
            except ValueError:
                self.problems.append(InputProblem(
                    file, line, f"bad observedAt {raw!r}; event used with its object times only"
                ))  # fmt: skip
        if doc.get("relisted") is True:
            self.items.append(_Item(etype, obj, None, file, line, bound_ns=observed))
        else:
            self.items.append(_Item(etype, obj, observed, file, line))


def _split_documents(text: str, file: str, problems: list[InputProblem]) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, document)`` for each JSON document in ``text``; resync after garbage."""
    decoder = json.JSONDecoder()
    pos, n, line, counted = 0, len(text), 1, 0
    while pos < n:
        ws = _WS.match(text, pos)
        pos = ws.end() if ws else pos
        if pos >= n:
            break
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            doc, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            problems.append(InputProblem(file, line, f"not a JSON watch event ({exc.msg}); skipped"))
            nxt = text.find("\n{", pos)
            pos = n if nxt < 0 else nxt + 1
            continue
        yield line, doc
        pos = end


def read_kube_streams(paths: Sequence[str | Path]) -> KubeInput:
    """Read watch streams / lists (see module doc) into one timeline; problems are returned, not raised."""
    if not paths:
        raise AuditorError("no Kubernetes input file given", hint="pass the output of kubectl --watch")
    reader = _Reader()
    for path in paths:
        reader.read_file(Path(path))
    items = sorted(reader.items, key=lambda it: it.order_ns)  # stable: keeps file order among equals
    timeline = KubeTimeline()
    for item in items:
        timeline.apply(WatchEvent(item.type, item.obj, item.observed_ns, item.bound_ns))
    return timeline.kube_input(reader.problems, skipped=reader.skipped)
