"""``auditor collect``: every node agent's log directory into one directory ``analyze --dir`` reads.

* :mod:`auditor.collect.layout` — reading a log directory or a collection of them, by node;
* :mod:`auditor.collect.fetch` — the client side, through the API server's pod proxy (``auditor.kubeapi``).

The file names are :mod:`auditor.model.logfiles`; the agent's read-only ``/logs`` routes are
:mod:`auditor.sinks.logserve` (served by the metrics server).
"""

from auditor.collect.layout import LogDir, find_log_dirs, scan_log_dir

__all__ = ["LogDir", "find_log_dirs", "scan_log_dir"]
