"""``auditor doctor``: can this node run the agent? Each check is a small function returning a Check.

Checks never raise for a missing feature: a problem is a ``fail`` or ``warn`` row with a fix hint.
"""

from auditor.doctor.check import Check, Status, run_checks

__all__ = ["Check", "Status", "run_checks"]
