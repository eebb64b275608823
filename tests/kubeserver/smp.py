"""Strategic merge patch and JSON merge patch, as far as the fake API server and the tests need them.

Strategic merge (``application/strategic-merge-patch+json``, what ``kubectl patch`` sends by default):
maps merge key by key, ``null`` deletes a key, lists of objects with a merge key (``containers`` by
``name``, ``ports`` by ``containerPort``...) merge item by item (an item ``{"$patch": "delete", ...}``
removes it), every other list is replaced whole; a map with ``"$patch": "replace"`` replaces the map.
JSON merge patch (RFC 7386, ``application/merge-patch+json``): maps merge, ``null`` deletes, lists are
replaced.
"""

from __future__ import annotations

import copy
from typing import Any

# the patchMergeKey of the Kubernetes API's lists that are merged (not replaced) in a strategic merge
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name",
    "hostAliases": "ip", "volumeDevices": "devicePath", "conditions": "type", "topologySpreadConstraints": "topologyKey",
}  # fmt: skip


def strategic_merge(base: Any, patch: Any) -> Any:
    """``base`` with ``patch`` applied (neither is modified)."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list) and key in MERGE_KEYS:
            out[key] = _merge_list(out[key], value, MERGE_KEYS[key])
        elif isinstance(value, dict):
            out[key] = strategic_merge({}, value)  # drop directives and nulls of a new map
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(base: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    out = [copy.deepcopy(i) for i in base]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise ValueError(f"strategic merge: list item without its merge key {merge_key!r}: {item!r}")
        at = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                out.pop(at)
        elif at is None:
            out.append(strategic_merge({}, item))
        else:
            out[at] = strategic_merge(out[at], item)
    return out


def json_merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge_patch(out.get(key), value)
    return out


__all__ = ["MERGE_KEYS", "json_merge_patch", "strategic_merge"]
