"""The commands of a preStop shell script, as the audit reads them (its ``sleep`` parts only).

One home for how a script is cut into commands: the recorder keeps the ``sleep`` parts of a hook
(:mod:`auditor.model.reduce`) and the reader sums them (:mod:`auditor.sources.kube_pod`).
"""

from __future__ import annotations

import re
import shlex

SEPARATORS = re.compile(r"&&|\|\||;|\n")


def script_commands(script: str) -> list[tuple[str, list[str]]]:
    """Each non-empty command of a shell script (split at ``&&``, ``||``, ``;`` and newlines) with its
    words (shell quoting honoured where it parses, else split at white space)."""
    out: list[tuple[str, list[str]]] = []
    for part in SEPARATORS.split(script):
        part = part.strip()
        if not part:
            continue
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        out.append((part, words))
    return out


def is_sleep(words: list[str]) -> bool:
    """Is this command ``sleep`` (by any path: ``/bin/sleep``)?"""
    return bool(words) and words[0].rsplit("/", 1)[-1] == "sleep"
