"""Where the probes' C sources are: ``probes/`` of a source checkout, or the copy a wheel ships.

``AUDITOR_PROBES_DIR`` wins; then the repository's ``probes/`` next to the package (a checkout or
an editable install); then ``auditor/_probes/``, which the build copies into installed packages
(``setup.py``), e.g. in the DaemonSet's image, where the source tree is gone.
"""

from __future__ import annotations

import os
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
