"""auditor: measure the endpoint propagation gap of Kubernetes rolling updates.

Pipeline: sources -> model -> enrich -> correlate -> sinks/report.
"""

__version__ = "0.1.0"
