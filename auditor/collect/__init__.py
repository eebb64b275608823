"""``auditor collect``: every node agent's log directory into one directory ``analyze --dir`` reads.

* :mod:`auditor.collect.layout` — log file names, and reading a directory or a collection of them;
* :mod:`auditor.collect.serve` — the agent's read-only ``/logs`` routes (served by the metrics server);
* :mod:`auditor.collect.fetch` — the client side, through the API server's pod proxy.
"""

from auditor.collect.layout import LogDir, classify_log_file, find_log_dirs, scan_log_dir

__all__ = ["LogDir", "classify_log_file", "find_log_dirs", "scan_log_dir"]
