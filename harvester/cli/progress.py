"""Progress displays for long runs: a live bar on a terminal, plain log lines everywhere else.

Both implement :class:`harvester.progress.ProgressSink`, the protocol the scheduler reports to.

The ETA comes from the quota, not from a running average: once the harvester is quota-bound the
only thing that decides when it finishes is how many windows the remaining requests need, and a
naive average (fast at the start of each window, idle at its end) would swing wildly.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from harvester.jobs import Job
from harvester.logs import format_duration
from harvester.progress import NullProgress, ProgressSink

if TYPE_CHECKING:
    from rich.console import Console

    from harvester.gate import GateSnapshot, QuotaGate
    from harvester.plan import PlanCount
    from harvester.summary import RunSummary

log = logging.getLogger("harvester")

# Plain-log mode: one status line at most this often, so cron mails stay readable.
LOG_INTERVAL_SECONDS = 30.0


def quota_eta(remaining_requests: int, gate: GateSnapshot, window_seconds: float) -> float:
    """Seconds until ``remaining_requests`` more requests can have been *sent* under the quota.

    What the current window still allows goes now; the rest needs whole windows of the
    per-window budget (the limit less reserve and what other tools were seen spending), the
    first of which starts at the next reset. Example: 300 to go, 20 left in a window that resets
    in 100 s, 150 per 900 s window: 20 now, 150 at the reset, 130 one window later: 1000 s.
    """
    if remaining_requests <= 0:
        return 0.0
    budget = max(1, gate.budget_per_window)
    now_left = max(0, gate.remaining)
    if remaining_requests <= now_left:
        return 0.0
    later = remaining_requests - now_left
    return max(0.0, gate.reset_in) + (math.ceil(later / budget) - 1) * window_seconds


class _Status:
    """The numbers both displays show."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self.total = 0
        self.completed = 0
        self.failed = 0

    def eta(self, gate: GateSnapshot) -> float:
        """From the quota: one request per job still to finish, less those already on the wire."""
        to_send = max(0, self.total - self.completed - gate.in_flight)
        return quota_eta(to_send, gate, self.window_seconds)

    def line(self, summary: RunSummary, gate: GateSnapshot) -> str:
        failed = f"{self.failed} failed · " if self.failed else ""
        return (
            f"{failed}requests {summary.requests} · 429s {summary.rate_limited} · "
            f"window: {gate.remaining} left, resets in {format_duration(gate.reset_in)} · "
            f"ETA {format_duration(self.eta(gate))}"
        )

    def count(self, state: str) -> None:
        self.completed += 1
        self.failed += state == "failed"


class LogProgress(_Status):
    """Plain log lines (stdout is not a terminal: cron, CI, pipes)."""

    def __init__(self, window_seconds: float) -> None:
        super().__init__(window_seconds)
        self._last = -math.inf

    def started(self, command: str, counts: PlanCount, gate: QuotaGate) -> None:
        self.total = counts.to_fetch
        log.info(
            "%s: %d jobs planned, %d already done, %d to fetch",
            command,
            counts.total,
            counts.done,
            counts.to_fetch,
        )

    def job_finished(self, job: Job, state: str, rows: int) -> None:
        self.count(state)

    def tick(self, summary: RunSummary, gate: GateSnapshot) -> None:
        if gate.now - self._last >= LOG_INTERVAL_SECONDS:
            self._last = gate.now
            log.info("%d/%d jobs · %s", self.completed, self.total, self.line(summary, gate))

    def finished(self, summary: RunSummary) -> None:
        pass


class BarProgress(_Status):
    """A live rich progress bar on stderr."""

    def __init__(self, window_seconds: float, console: Console | None = None) -> None:
        # rich costs ~40 ms to import: only a run on a terminal pays for it (not plan, not cron)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        super().__init__(window_seconds)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task("jobs", total=None, status="")

    def started(self, command: str, counts: PlanCount, gate: QuotaGate) -> None:
        self.total = counts.to_fetch
        self._progress.update(self._task, description=command, total=counts.to_fetch)
        self._progress.start()

    def job_finished(self, job: Job, state: str, rows: int) -> None:
        self.count(state)
        self._progress.advance(self._task)

    def tick(self, summary: RunSummary, gate: GateSnapshot) -> None:
        self._progress.update(self._task, status=self.line(summary, gate))

    def finished(self, summary: RunSummary) -> None:
        self._progress.stop()


def make_progress(window_seconds: float, *, interactive: bool, quiet: bool) -> ProgressSink:
    """The right display for where output goes."""
    if quiet:
        return NullProgress()
    if interactive:
        return BarProgress(window_seconds)
    return LogProgress(window_seconds)
