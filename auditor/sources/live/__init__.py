"""Live source: bcc eBPF probes (probes/*.c), their pure decoders and the loader.

Only this package imports bcc, and only when loading: :meth:`ProbeSet.start` (the packet probes) and
:mod:`auditor.sources.live.commit_probes` (the dataplane's rule-commit probes, handed to
:mod:`auditor.sources.dataplane` as a ``ProbeOpener``).
"""

from auditor.sources.live.decode import decode_event
from auditor.sources.live.environment import BccEnvironment, prepare_bcc_environment
from auditor.sources.live.events import DecodeError
from auditor.sources.live.probeset import ProbeConfig, ProbeSet

__all__ = [
    "BccEnvironment",
    "DecodeError",
    "ProbeConfig",
    "ProbeSet",
    "decode_event",
    "prepare_bcc_environment",
]
