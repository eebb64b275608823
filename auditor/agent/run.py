"""Run an :class:`~auditor.agent.core.Agent` in the foreground: signals, logging, the exit code."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from auditor.agent.core import Agent, AgentConfig
from auditor.agent.correlator import EpisodeReport
from auditor.agent.sources import PacketSource
from auditor.sinks.logauth import AccessReviewer

log = logging.getLogger("auditor.agent")


def configure_logging(level: int = logging.INFO) -> None:
    """One line per record on stderr, UTC timestamps (idempotent)."""
    root = logging.getLogger("auditor")
    if not any(getattr(h, "_auditor_agent", False) for h in root.handlers):
        handler = logging.StreamHandler()
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = __import__("time").gmtime
        handler.setFormatter(formatter)
        handler._auditor_agent = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def run_agent(
    config: AgentConfig,
    sources: list[PacketSource],
    kube_client: Any = None,
    duration_s: float | None = None,
    on_episode: Callable[[EpisodeReport], None] | None = None,
    on_started: Callable[[Agent], None] | None = None,
    log_reviewer: AccessReviewer | None = None,
) -> dict[str, Any]:
    """Start, serve until SIGTERM/SIGINT (or ``duration_s``), shut down losslessly; returns the summary
    (also written to ``agent-<node>.json``), with ``clean_exit`` False if shutdown overran its bound.
    ``log_reviewer``: checks the bearer tokens of ``/logs`` requests (None: /logs answers 503 unless
    ``config.logs_auth`` is off)."""
    agent = Agent(config, sources, kube_client=kube_client, on_episode=on_episode, log_reviewer=log_reviewer)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _on_signal(signum: int, _frame: Any) -> None:
            log.info("received %s: flushing and stopping", signal.Signals(signum).name)
            agent.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        agent.start()
        log.info(
            "agent started on node %s: log %s (%s), metrics %s, /logs auth %s, kube %s, dataplane %s",
            config.node, config.log_dir, config.log_format, config.metrics_addr or "off", agent.log_access.mode,
            "on" if kube_client is not None else "off", agent.dataplane_note,
        )  # fmt: skip
        if on_started is not None:
            on_started(agent)
        summary = agent.run(duration_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    lost = {k: v for k, v in summary["lost"].items() if v}
    counts = summary.get("counts") or {}
    failures = {k: v for k, v in (counts.get("failures") or {}).items() if v}
    log.info(
        "agent stopped: received %d, written %d, lost %s, episodes %s; counted failures %s (%s)",
        summary["received_total"], summary["written"], lost or "none", summary["episodes"]["by_verdict"] or "none",
        failures or "none", counts.get("note", "no counts"),
    )  # fmt: skip
    return summary
