"""auditor: measure the endpoint propagation gap of Kubernetes rolling updates.

Pipeline: sources -> model -> enrich -> correlate -> sinks/report.

For notebooks, ``import auditor`` gives the API of :mod:`auditor.api` (``load_events``, ``load_kube``,
``analyze``, ``what_if``, the plots), loaded on first use so that importing the package stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = (
    "Audit",
    "CAUSE_MEANINGS",
    "analyze",
    "load_events",
    "load_kube",
    "plot_causes",
    "plot_delay_distribution",
    "plot_rollout_timeline",
    "plot_what_if",
    "what_if",
)

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module("auditor.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
