"""Build hooks: the native pieces, the capture scanner's hot loop (auditor/sources/_scan.c) and the
capture engine of ``auditor capture`` (auditor/sources/_pcapcap.c, libpcap loaded at run time), and
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
_PCAPCAP = "auditor/sources/_pcapcap.c"
_CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
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
        Extension(name, sources=[src], extra_compile_args=_CFLAGS, libraries=libs)
        for name, src, libs in (
            ("auditor.sources._scan", _SCAN, []),
            # libpcap is dlopen()ed: no build dependency on its headers, a clear message without it
            ("auditor.sources._pcapcap", _PCAPCAP, ["dl"]),
        )
        if os.path.exists(src)
    ],
)
