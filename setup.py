"""Build hook for the one native piece: the capture scanner's hot loop (auditor/sources/_scan.c).

Everything else is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "auditor.sources._scan",
            sources=["auditor/sources/_scan.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
