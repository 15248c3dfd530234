"""What a run reports as it goes: the :class:`ProgressSink` protocol the scheduler calls, and
:class:`NullProgress`, which reports nothing (library use, tests).

The displays (a live bar on a terminal, plain log lines elsewhere) render, so they live in
:mod:`harvester.cli.progress`; a caller of :func:`harvester.harvest` may pass its own sink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from harvester.gate import GateSnapshot, QuotaGate
    from harvester.jobs import Job
    from harvester.plan import PlanCount
    from harvester.summary import RunSummary


class ProgressSink(Protocol):
    """What the scheduler reports to; implementations must be cheap (called per job).

    ``started`` gets the plan's counts and the gate once the lock is held; ``job_finished``
    each job's final state (``done``/``failed``) and rows; ``tick`` the running summary and a
    snapshot of the quota (every ``PROGRESS_INTERVAL_SECONDS`` of :mod:`harvester.scheduler`,
    and once at the end); ``finished`` the final summary.
    """

    def started(self, command: str, counts: PlanCount, gate: QuotaGate) -> None: ...

    def job_finished(self, job: Job, state: str, rows: int) -> None: ...

    def tick(self, summary: RunSummary, gate: GateSnapshot) -> None: ...

    def finished(self, summary: RunSummary) -> None: ...


class NullProgress:
    """Reports nothing (library use, tests)."""

    def started(self, command: str, counts: PlanCount, gate: QuotaGate) -> None:
        pass

    def job_finished(self, job: Job, state: str, rows: int) -> None:
        pass

    def tick(self, summary: RunSummary, gate: GateSnapshot) -> None:
        pass

    def finished(self, summary: RunSummary) -> None:
        pass
