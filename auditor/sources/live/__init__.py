"""Live source: bcc eBPF probes (probes/*.c), their pure decoders and the loader.

Only this package imports bcc, and only inside :meth:`ProbeSet.start`.
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
