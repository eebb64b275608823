"""The rollout lab: one Kubernetes node in network namespaces that reproduces the propagation gap."""

from tests.lab.rollout import LabConfig, LabRun, run_rollout

__all__ = ["LabConfig", "LabRun", "run_rollout"]
