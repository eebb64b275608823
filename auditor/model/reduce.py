"""What is kept of a Kubernetes object: only the fields the audit reads, before anything records it.

Pods carry secrets in plain text (container env values, args, commands, annotations such as
``kubectl.kubernetes.io/last-applied-configuration``), and the agent writes every object it watches to
its log directory, which ``auditor collect`` copies off the node. So the watch reduces every object as
it arrives (:mod:`auditor.kubeapi.watcher`, before its own relist cache, the recorder and the agent's
live timeline see it), and the recorder reduces again (idempotent) whatever it is handed. The offline
reader (:mod:`auditor.sources.kube_stream`, :mod:`auditor.sources.kube_timeline`) reads only fields
kept here; ``tests/unit/test_reduce.py`` checks that it draws the same facts from a full and a reduced
object.

One pure function per kind, plain dicts in and out (the API's JSON, camelCase), the input never
modified. Kept:

* **Pod**: ``metadata`` name, namespace, uid, labels, ownerReferences (apiVersion, kind, name, uid,
  controller), creationTimestamp, deletionTimestamp, deletionGracePeriodSeconds, resourceVersion, and
  the annotations of :data:`POD_ANNOTATIONS`; ``spec`` nodeName, hostNetwork,
  terminationGracePeriodSeconds, per container name, ports, ``lifecycle.preStop`` and
  ``readinessProbe`` (:func:`reduce_handler`: no exec command, no HTTP headers); ``status`` phase,
  podIP, podIPs, conditions (type, status, reason, lastTransitionTime), containerStatuses (name, ready,
  restartCount, state and lastState without messages).
* **preStop exec**: the reader needs the command to find ``sleep N``; only that survives
  (:func:`reduce_prestop_command`): ``sleep`` with its arguments, a shell's ``-c`` script with every
  part that is not a ``sleep`` replaced by ``…`` (so it still reads as "sleeps N, then does more"),
  any other program without its arguments.
* **EndpointSlice**: name, namespace, uid, resourceVersion, creationTimestamp, the label
  ``kubernetes.io/service-name``, the annotation ``endpoints.kubernetes.io/last-change-trigger-time``;
  addressType, ports; per endpoint addresses, conditions, targetRef, nodeName.
* **Event** (core/v1 and events.k8s.io/v1): name, namespace, uid, resourceVersion, creationTimestamp;
  involvedObject / regarding (kind, namespace, name, uid, fieldPath), type, reason, message / note,
  eventTime, first/last timestamps, count, series.

Anything else (env, args, command, volumes, images, other annotations, managedFields, status
messages) is dropped. Objects of other kinds keep their kind, apiVersion and identity only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from auditor.model.shell import is_sleep, script_commands

Obj = dict[str, Any]

POD_ANNOTATIONS = ("kubectl.kubernetes.io/restartedAt",)  # a `kubectl rollout restart`: when it was asked
SLICE_LABELS = ("kubernetes.io/service-name",)
SLICE_ANNOTATIONS = ("endpoints.kubernetes.io/last-change-trigger-time",)
REDACTED = "…"  # stands for a dropped part of a preStop script

_IDENTITY = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
_POD_META = (*_IDENTITY, "deletionTimestamp", "deletionGracePeriodSeconds")
_OWNER = ("apiVersion", "kind", "name", "uid", "controller")
_PORT = ("name", "containerPort", "hostPort", "protocol")
_PROBE_TIMING = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold",
                 "failureThreshold", "terminationGracePeriodSeconds")  # fmt: skip
_CONDITION = ("type", "status", "reason", "lastTransitionTime")
_STATE = {"running": ("startedAt",), "waiting": ("reason",),
          "terminated": ("exitCode", "signal", "reason", "startedAt", "finishedAt")}  # fmt: skip
_REF = ("apiVersion", "kind", "namespace", "name", "uid", "fieldPath")
_EVENT = ("type", "reason", "message", "note", "action", "eventTime", "firstTimestamp", "lastTimestamp",
          "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "count", "deprecatedCount")  # fmt: skip
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "busybox"})


# -- helpers ---------------------------------------------------------------------------------------
def _pick(source: Any, keys: Iterable[str]) -> Obj:
    """The given keys of a mapping (absent keys stay absent); anything else -> {}."""
    if not isinstance(source, Mapping):
        return {}
    return {k: source[k] for k in keys if k in source}


def _dicts(items: Any) -> list[Mapping[str, Any]]:
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def _pick_map(source: Any, keys: Iterable[str]) -> dict[str, str]:
    """A string map (labels, annotations) restricted to ``keys``."""
    return {k: v for k, v in _pick(source, keys).items() if isinstance(v, str)}


def _top(obj: Mapping[str, Any]) -> Obj:
    return _pick(obj, ("kind", "apiVersion"))


# -- Pod -------------------------------------------------------------------------------------------
def reduce_pod(obj: Mapping[str, Any]) -> Obj:
    """A Pod with only what the audit reads (module doc)."""
    meta = obj.get("metadata") or {}
    out_meta = _pick(meta, _POD_META)
    if isinstance(meta.get("labels"), Mapping):
        out_meta["labels"] = {k: v for k, v in meta["labels"].items() if isinstance(v, str)}
    owners = [_pick(ref, _OWNER) for ref in _dicts(meta.get("ownerReferences"))]
    if owners:
        out_meta["ownerReferences"] = owners
    annotations = _pick_map(meta.get("annotations"), POD_ANNOTATIONS)
    if annotations:
        out_meta["annotations"] = annotations
    spec = obj.get("spec") or {}
    out_spec = _pick(spec, ("nodeName", "hostNetwork", "terminationGracePeriodSeconds"))
    if "containers" in spec:
        out_spec["containers"] = [_container(c) for c in _dicts(spec.get("containers"))]
    status = obj.get("status") or {}
    out_status = _pick(status, ("phase", "podIP"))
    if "podIPs" in status:
        out_status["podIPs"] = [_pick(p, ("ip",)) for p in _dicts(status.get("podIPs"))]
    if "conditions" in status:
        out_status["conditions"] = [_pick(c, _CONDITION) for c in _dicts(status.get("conditions"))]
    if "containerStatuses" in status:
        out_status["containerStatuses"] = [
            _container_status(s) for s in _dicts(status.get("containerStatuses"))
        ]
    out = {**_top(obj), "metadata": out_meta, "spec": out_spec}
    if out_status or "status" in obj:
        out["status"] = out_status
    return out


def _container(c: Mapping[str, Any]) -> Obj:
    out = _pick(c, ("name",))
    if "ports" in c:
        out["ports"] = [_pick(p, _PORT) for p in _dicts(c.get("ports"))]
    lifecycle = c.get("lifecycle")
    pre_stop = lifecycle.get("preStop") if isinstance(lifecycle, Mapping) else None
    if isinstance(pre_stop, Mapping):
        out["lifecycle"] = {"preStop": reduce_handler(pre_stop, keep_command=True)}
    probe = c.get("readinessProbe")
    if isinstance(probe, Mapping) and probe:
        out["readinessProbe"] = {**reduce_handler(probe, keep_command=False), **_pick(probe, _PROBE_TIMING)}
    return out


def reduce_handler(handler: Mapping[str, Any], keep_command: bool) -> Obj:
    """A lifecycle handler or probe: its kind and where it points, never headers or a command line
    (``keep_command``: a preStop's exec command, reduced by :func:`reduce_prestop_command`). Never
    empty, so "has a readiness probe" survives."""
    out: Obj = {}
    if isinstance(handler.get("sleep"), Mapping):
        out["sleep"] = _pick(handler["sleep"], ("seconds",))
    if isinstance(handler.get("exec"), Mapping):
        command = handler["exec"].get("command")
        out["exec"] = {}
        if keep_command and isinstance(command, list):
            out["exec"]["command"] = reduce_prestop_command([str(a) for a in command])
    if isinstance(handler.get("httpGet"), Mapping):
        http = _pick(handler["httpGet"], ("port", "scheme"))
        path = handler["httpGet"].get("path")
        if isinstance(path, str):
            http["path"] = path.split("?", 1)[0]  # a query string may carry a credential
        out["httpGet"] = http
    for name in ("tcpSocket", "grpc"):
        if isinstance(handler.get(name), Mapping):
            out[name] = _pick(handler[name], ("port", "service"))
    return out or {"handler": "unknown"}


def reduce_prestop_command(command: list[str]) -> list[str]:
    """The part of a preStop exec command that tells how long it sleeps, and nothing else.

    ``["sleep", "5"]`` stays; ``["sh", "-c", "sleep 5 && curl -H 'token: x' ..."]`` becomes
    ``["sh", "-c", "sleep 5 && …"]`` (same separators' effect: the reader sees a sleep of 5 s
    followed by other commands); ``["/bin/drain", "--token", "x"]`` becomes ``["/bin/drain"]``.
    """
    if not command:
        return []
    program = command[0].rsplit("/", 1)[-1]
    if program == "sleep":
        return list(command)
    if program in _SHELLS and "-c" in command:
        i = command.index("-c")
        if i + 1 < len(command):
            return [command[0], "-c", _reduce_script(command[i + 1])]
        return [command[0], "-c"]
    return [command[0]]


def _reduce_script(script: str) -> str:
    """Keep the ``sleep`` parts of a shell script, one ``…`` for every other part."""
    return "; ".join(part if is_sleep(words) else REDACTED for part, words in script_commands(script))


def _container_status(s: Mapping[str, Any]) -> Obj:
    out = _pick(s, ("name", "ready", "started", "restartCount"))
    for key in ("state", "lastState"):
        if isinstance(s.get(key), Mapping):
            out[key] = {
                name: _pick(s[key][name], fields)
                for name, fields in _STATE.items()
                if isinstance(s[key].get(name), Mapping)
            }
    return out


# -- EndpointSlice ---------------------------------------------------------------------------------
def reduce_endpoint_slice(obj: Mapping[str, Any]) -> Obj:
    """An EndpointSlice with only what the audit reads (module doc)."""
    meta = obj.get("metadata") or {}
    out_meta = _pick(meta, _IDENTITY)
    for key, keep in (("labels", SLICE_LABELS), ("annotations", SLICE_ANNOTATIONS)):
        picked = _pick_map(meta.get(key), keep)
        if picked:
            out_meta[key] = picked
    out = {**_top(obj), "metadata": out_meta, **_pick(obj, ("addressType",))}
    if "ports" in obj:
        out["ports"] = [
            _pick(p, ("name", "port", "protocol", "appProtocol")) for p in _dicts(obj.get("ports"))
        ]
    if "endpoints" in obj:
        out["endpoints"] = [_endpoint(e) for e in _dicts(obj.get("endpoints"))]
    return out


def _endpoint(e: Mapping[str, Any]) -> Obj:
    out = _pick(e, ("nodeName",))
    if isinstance(e.get("addresses"), list):
        out["addresses"] = [str(a) for a in e["addresses"]]
    if isinstance(e.get("conditions"), Mapping):
        out["conditions"] = _pick(e["conditions"], ("ready", "serving", "terminating"))
    if isinstance(e.get("targetRef"), Mapping):
        out["targetRef"] = _pick(e["targetRef"], _REF)
    return out


# -- Event -----------------------------------------------------------------------------------------
def reduce_event(obj: Mapping[str, Any]) -> Obj:
    """An Event (core/v1 or events.k8s.io/v1) with only what the audit reads (module doc)."""
    out = {**_top(obj), "metadata": _pick(obj.get("metadata"), _IDENTITY), **_pick(obj, _EVENT)}
    for key in ("involvedObject", "regarding"):
        if isinstance(obj.get(key), Mapping):
            out[key] = _pick(obj[key], _REF)
    if isinstance(obj.get("series"), Mapping):
        out["series"] = _pick(obj["series"], ("count", "lastObservedTime"))
    return out


def reduce_other(obj: Mapping[str, Any]) -> Obj:
    """An object of a kind the audit does not read: its kind and identity only."""
    return {**_top(obj), "metadata": _pick(obj.get("metadata"), _IDENTITY)}


REDUCERS: dict[str, Callable[[Mapping[str, Any]], Obj]] = {
    "Pod": reduce_pod,
    "EndpointSlice": reduce_endpoint_slice,
    "Event": reduce_event,
}


def reduce_object(obj: Mapping[str, Any], kind: str | None = None) -> Obj:
    """Reduce by ``kind`` (default: the object's own ``kind``); idempotent."""
    reducer = REDUCERS.get(kind or str(obj.get("kind") or ""), reduce_other)
    return reducer(obj)


__all__ = [
    "POD_ANNOTATIONS",
    "REDACTED",
    "REDUCERS",
    "SLICE_ANNOTATIONS",
    "SLICE_LABELS",
    "reduce_endpoint_slice",
    "reduce_event",
    "reduce_handler",
    "reduce_object",
    "reduce_other",
    "reduce_pod",
    "reduce_prestop_command",
]
