"""``auditor load``: a fixed-rate (open-loop) HTTP/1.1 load generator on asyncio and the standard library.

``http.py`` speaks HTTP/1.1 GET over asyncio streams, ``run.py`` schedules and runs the requests (the
schedule, connection reuse, retry and stop rules are in its docstring), ``records.py`` writes one record
a request in vegeta's JSON format (read back by ``auditor analyze --client``) and keeps the run's tally.
Imports nothing of auditor but ``model`` (a contract in pyproject.toml): it runs in a short-lived Job.
"""

from __future__ import annotations

from auditor.loadgen.http import Target, parse_target
from auditor.loadgen.records import ATTACK, RecordWriter, Tally
from auditor.loadgen.run import LATE_S, TICK_S, LoadRun, LoadSpec, run_load

__all__ = [
    "ATTACK",
    "LATE_S",
    "TICK_S",
    "LoadRun",
    "LoadSpec",
    "RecordWriter",
    "Tally",
    "Target",
    "parse_target",
    "run_load",
]
