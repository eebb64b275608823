"""``auditor rollout-test``: the zero-downtime experiment as one command, and the fix as a patch.

* :mod:`~auditor.rollout.workload` — ``deployment/NAME`` and what a workload's pod template says;
* :mod:`~auditor.rollout.static` — the static audit: findings with why and the fix;
* :mod:`~auditor.rollout.fix` — the strategic-merge patch (native sleep or exec, grace period, the
  readinessProbe suggestion), from the audit's recommended seconds;
* :mod:`~auditor.rollout.load` — the load Job (``auditor load`` with the auditor image) or a local load;
* :mod:`~auditor.rollout.status` — when a rollout is complete, or stalled;
* :mod:`~auditor.rollout.evidence` — the node agents' logs (as ``auditor collect``) or the client alone,
  analyzed with ``load_inputs`` and ``audit``;
* :mod:`~auditor.rollout.runner` — the run: load, restart, watch, evidence, verdict, patch, apply, again;
* :mod:`~auditor.rollout.report` — the text and the ``--json`` document.

The Kubernetes API is reached only through :mod:`auditor.kubeapi.workloads` and :mod:`auditor.collect`.
"""
