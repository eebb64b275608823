"""Build hook for the one native piece: the capture scanner's hot loop (auditor/sources/_scan.c).

Everything else is declared in pyproject.toml.
"""

import os

from setuptools import Extension, setup

_SCAN = "auditor/sources/_scan.c"

setup(
    ext_modules=[
        Extension(
            "auditor.sources._scan",
            sources=[_SCAN],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
    if os.path.exists(_SCAN)
    else []
)
