"""Reconciliation: converge on the platforms' truth when webhooks never arrived, and check the LMS.

``lmsbridge reconcile`` runs :func:`reconcile_command`; the worker runs the platform pass
periodically (:mod:`.periodic`). Platform side: :mod:`.platform` (the pass), readers
:mod:`.exec_source` and :mod:`.limeplate_source`, the rules in :mod:`.findings`. LMS side:
:mod:`.lms`. What it prints and counts: :mod:`.report`.
"""

from lmsbridge.reconcile.findings import SourceReport
from lmsbridge.reconcile.run import reconcile_command

__all__ = ["SourceReport", "reconcile_command"]
