"""Build hooks: the one native piece, the capture scanner's hot loop (auditor/sources/_scan.c), and
the probes' C sources (probes/), copied into the package as auditor/_probes/ so an installed agent
(the DaemonSet image) can compile them with bcc.

Everything else is declared in pyproject.toml.
"""

import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

_SCAN = "auditor/sources/_scan.c"
_PROBES = Path("probes")


class BuildWithProbes(build_py):
    def run(self) -> None:
        super().run()
        if _PROBES.is_dir() and not self.editable_mode:
            target = Path(self.build_lib) / "auditor" / "_probes"
            target.mkdir(parents=True, exist_ok=True)
            for src in sorted(_PROBES.iterdir()):
                if src.suffix in (".c", ".h"):
                    shutil.copy2(src, target / src.name)


setup(
    cmdclass={"build_py": BuildWithProbes},
    ext_modules=[
        Extension(
            "auditor.sources._scan",
            sources=[_SCAN],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
    if os.path.exists(_SCAN)
    else [],
)
