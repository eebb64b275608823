"""A patch as YAML text with comments where they belong (PyYAML cannot write comments).

Only what a patch holds: maps, lists of maps (each addressed by its ``name``), lists of scalars, strings
(written as JSON strings, which YAML reads back unchanged), numbers, booleans and ``null``. Comments are
given per path: ``("spec", "template", "spec", "containers", "web")`` is the container named ``web``.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

Path = tuple[str, ...]
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")  # read back as the same string by any YAML parser
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}
WIDTH = 100


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    raise TypeError(f"not a scalar: {type(value).__name__}")


def comment_lines(texts: list[str], indent: str) -> list[str]:
    out: list[str] = []
    for text in texts:
        if text.startswith("  ") or not text:  # preformatted (a suggested snippet)
            out.append(f"{indent}#{text}".rstrip())
            continue
        wrapped = textwrap.wrap(text, WIDTH - len(indent) - 2, subsequent_indent="  ") or [""]
        out += [f"{indent}# {line}".rstrip() for line in wrapped]
    return out


def to_yaml(value: dict[str, Any], comments: dict[Path, list[str]] | None = None) -> str:
    """The map as block YAML, each comment above the key (or list item) its path names."""
    return "\n".join(_map(value, comments or {}, (), 0)) + "\n"


def _map(value: dict[str, Any], comments: dict[Path, list[str]], path: Path, depth: int) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for key, item in value.items():
        here = (*path, str(key))
        lines += comment_lines(comments.get(here, []), pad)
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{key}:")
            lines += _map(item, comments, here, depth + 1)
        elif isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
            lines.append(f"{pad}{key}:")
            for element in item:
                where = (*here, str(element.get("name", "")))
                lines += comment_lines(comments.get(where, []), pad + "  ")
                body = _map(element, comments, where, depth + 2)
                first = next(i for i, line in enumerate(body) if not line.lstrip().startswith("#"))
                body[first] = f"{pad}  - {body[first].lstrip()}"
                lines += body
        else:
            lines.append(f"{pad}{key}: {scalar(item)}")
    return lines


__all__ = ["comment_lines", "scalar", "to_yaml"]
