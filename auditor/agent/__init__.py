"""The live node agent: packet sources -> live correlation -> event log, metrics, episode lines.

* :func:`run_agent` runs an :class:`Agent` in the foreground until SIGTERM (or a duration);
* :class:`PacketSource` is what a packet source provides (:class:`ProbeSource` wraps the eBPF probes);
* :class:`LiveCorrelator` audits each pod termination episode once it has settled.

Log directory layout: :mod:`auditor.model.logfiles` (the names), :mod:`auditor.sinks.eventlog` (segments).
"""

from auditor.agent.core import Agent, AgentConfig
from auditor.agent.correlator import EpisodeReport, LiveCorrelator, format_episode_line
from auditor.agent.run import configure_logging, run_agent
from auditor.agent.sources import PacketSource, ProbeSource

__all__ = [
    "Agent",
    "AgentConfig",
    "EpisodeReport",
    "LiveCorrelator",
    "PacketSource",
    "ProbeSource",
    "configure_logging",
    "format_episode_line",
    "run_agent",
]
