"""Where the probes' C sources are: ``probes/`` of a source checkout, or the copy a wheel ships.

``AUDITOR_PROBES_DIR`` wins; then the repository's ``probes/`` next to the package (a checkout or
an editable install); then ``auditor/_probes/``, which the build copies into installed packages
(``setup.py``), e.g. in the DaemonSet's image, where the source tree is gone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[2]  # .../auditor


def find_probes_dir() -> Path:
    env = os.environ.get("AUDITOR_PROBES_DIR")
    if env:
        return Path(env)
    checkout = _PACKAGE.parent / "probes"
    if (checkout / "common.h").is_file():
        return checkout
    return _PACKAGE / "_probes"


PROBES_DIR = find_probes_dir()


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([A-Za-z0-9_.-]+\.h)"[ \t]*$', re.MULTILINE)


def inline_local_includes(text: str, directory: Path, done: set[str]) -> str:
    """``#include "x.h"`` of a header in ``directory`` replaced by the header's text, each header once
    (``done`` carries the names across the sources of one program). bcc turns ``map.lookup(...)``
    into BPF map calls only in the text it is given, not in files the preprocessor includes."""

    def expand(m: re.Match[str]) -> str:
        name = m.group(1)
        path = directory / name
        if not path.is_file():
            return m.group(0)  # not ours: the compiler's include path decides
        if name in done:
            return f"// {name}: included above"
        done.add(name)
        return inline_local_includes(path.read_text(), directory, done)

    return _LOCAL_INCLUDE.sub(expand, text)
