"""Plans: which jobs a pull or a sync runs, and what that costs in quota and time.

A plan is a set of per-phone date ranges, never a list of jobs: jobs stream out of it window by
window, so a ten-year plan over five hundred numbers costs no memory. The same functions drive
``harvester plan`` (which only counts) and ``pull``/``sync`` (which run the jobs), so the plan's
request count is by construction the number of jobs the run will send at least once.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from harvester.jobs import Grain, Job, due_for_late_refetch, windows, windows_newest_first

if TYPE_CHECKING:
    from harvester.store import JobState

Command = Literal["pull", "sync"]


class LedgerLookup(Protocol):
    """What a plan asks of the store's ledger, job by job (:class:`harvester.store.JobIndex`
    implements it; tests use small fakes)."""

    def state(self, key: tuple[str, dt.date]) -> JobState | None:
        """``done``, ``failed`` or None (never recorded)."""
        ...

    def done_window(self, key: tuple[str, dt.date]) -> tuple[dt.date, dt.date] | None:
        """The window (start, end) of the job's current *done* record, else None."""
        ...

    def last_done_end(self, phone: str) -> dt.date | None:
        """The latest ``window_end`` among the phone's done jobs."""
        ...

    def done_as_of(self, key: tuple[str, dt.date]) -> dt.date | None:
        """The "today" of the run that made the job's current done fetch, else None."""
        ...

    def rejected(self, key: tuple[str, dt.date]) -> bool:
        """Whether the job failed because the server rejected the request (400/404/405)."""
        ...


@runtime_checkable
class CountingIndex(Protocol):
    """An index that can count a phone's daily states in bulk (the store's does).

    :func:`count` uses it so that ``harvester plan`` over half a million daily jobs asks once
    per phone instead of once per job.
    """

    @property
    def grain(self) -> Grain: ...

    def count_states(self, phone: str, first: dt.date, last: dt.date) -> tuple[int, int, int]:
        """``(done, failed, rejected)`` among ``phone``'s periods ``first..last``."""
        ...

    def count_late(
        self, phone: str, first: dt.date, last: dt.date, today: dt.date, lookback_days: int
    ) -> int:
        """Done daily jobs in ``first..last`` a sync with this lookback fetches again."""
        ...


@dataclass(frozen=True)
class PhoneRange:
    """The dates one phone's jobs cover; jobs from ``refetch_from`` on run even when done."""

    phone: str
    start: dt.date
    end: dt.date
    refetch_from: dt.date | None = None


@dataclass(frozen=True)
class Plan:
    """A pull or sync: per-phone ranges, a window grain and an order.

    A plan names the jobs a run covers, never which of them it sends: that is decided against a
    ledger when it is counted (:func:`count`) or run (:meth:`pending`), so the same plan value
    serves ``harvester plan``, :func:`harvester.harvest` (which resolves it once the store's
    lock is held) and a re-run after an interruption.
    """

    command: Command
    ranges: tuple[PhoneRange, ...]
    grain: Grain
    newest_first: bool
    only_failed: bool = False
    # sync: done jobs fetched when at most this many days old are fetched again (late data)
    lookback_days: int | None = None
    today: dt.date | None = None

    @property
    def phones(self) -> tuple[str, ...]:
        return tuple(r.phone for r in self.ranges)

    @property
    def span(self) -> tuple[dt.date, dt.date] | None:
        """The earliest start and latest end over all phones, or None for an empty plan."""
        live = [r for r in self.ranges if r.start <= r.end]
        if not live:
            return None
        return min(r.start for r in live), max(r.end for r in live)

    def jobs(self) -> Iterator[Job]:
        """Every job of the plan (done or not), streamed in the plan's order."""
        span = self.span
        if span is None:
            return
        source = windows_newest_first if self.newest_first else windows
        live = [r for r in self.ranges if r.start <= r.end]
        for period, window_start, window_end in source(span[0], span[1], self.grain):
            for r in live:
                start, end = max(window_start, r.start), min(window_end, r.end)
                if start <= end:
                    yield Job(r.phone, period, start, end, self.grain)

    def pending(self, index: LedgerLookup) -> Iterator[Job]:
        """The jobs that must be sent: not yet done, or due for a re-fetch."""
        for job in self.jobs():
            if self.is_pending(job, index.state(job.key), index):
                yield job

    def is_pending(self, job: Job, state: JobState | None, index: LedgerLookup) -> bool:
        """Whether ``job`` (whose ledger state is ``state``) must be sent by this plan."""
        if self.only_failed:
            return state == "failed"
        if state is None:
            return True
        since = self._refetch_from.get(job.phone)
        if since is not None and job.window_end >= since:
            return True
        if state == "failed":
            # a transient failure (5xx, timeouts, invalid bodies) is tried again by the next run;
            # one the server rejected (400/404/405) only by --retry-failed: it costs quota and
            # would get the same answer
            return not index.rejected(job.key)
        if self.lookback_days is not None and self._may_have_grown(job, index):
            return True
        # a clipped window fetched earlier that now covers more days is fetched again
        return _grew(index.done_window(job.key), job)

    def _may_have_grown(self, job: Job, index: LedgerLookup) -> bool:
        """Late data: was the job fetched while it was young, and not yet today?"""
        assert self.lookback_days is not None and self.today is not None
        as_of = index.done_as_of(job.key)
        if as_of is None:
            return False
        return due_for_late_refetch(
            as_of.toordinal(),
            job.window_end.toordinal(),
            self.today.toordinal(),
            self.lookback_days,
        )

    @cached_property
    def _refetch_from(self) -> dict[str, dt.date | None]:
        return {r.phone: r.refetch_from for r in self.ranges}


def _grew(held: tuple[dt.date, dt.date] | None, job: Job) -> bool:
    return held is not None and (job.window_start < held[0] or job.window_end > held[1])


def pull_plan(
    phones: tuple[str, ...],
    start: dt.date,
    end: dt.date,
    grain: Grain,
    *,
    newest_first: bool = False,
    only_failed: bool = False,
    refetch: bool = False,
    today: dt.date | None = None,
) -> Plan:
    """The one-shot historical pull of ``start..end`` for every phone."""
    ranges = tuple(PhoneRange(p, start, end, start if refetch else None) for p in phones)
    return Plan("pull", ranges, grain, newest_first, only_failed, today=today)


def sync_plan(
    phones: tuple[str, ...],
    harvest_start: dt.date,
    today: dt.date,
    grain: Grain,
    lookback_days: int,
    *,
    newest_first: bool = True,
) -> Plan:
    """Incremental: every job through yesterday that is not done, plus the late-data re-fetch.

    A day is fetched again while it was younger than ``lookback_days`` + 1 days when last fetched
    (and not already today): with daily syncs, data through 09-10, today 09-12 and lookback 2,
    that is 09-09 and 09-10, plus the new 09-11. Judging by the day a job was fetched, rather
    than by where each phone's data ends, is what makes an interrupted newest-first sync resume
    exactly where it stopped, and a second sync on the same day send nothing. A phone new to
    the config is backfilled from ``harvest_start``; never today (an unfinished day).
    """
    yesterday = today - dt.timedelta(days=1)
    ranges = tuple(PhoneRange(phone, harvest_start, yesterday) for phone in phones)
    return Plan("sync", ranges, grain, newest_first, lookback_days=lookback_days, today=today)


@dataclass(frozen=True)
class Cost:
    """What a number of requests costs at the quota."""

    requests: int
    windows: int
    seconds: float

    @classmethod
    def of(cls, requests: int, budget_per_window: int, window_seconds: float) -> Cost:
        """Requests go out at the start of each window until its budget is spent.

        The first window is assumed to start now, and the last window's requests go out as it
        opens, so the wall time is the windows before the last one; the time the requests take
        on the wire is not counted (150 requests at 150 per 900 s: one window, 0 s).
        """
        if requests <= 0:
            return cls(0, 0, 0.0)
        windows_needed = math.ceil(requests / budget_per_window)
        seconds = (windows_needed - 1) * window_seconds
        return cls(requests, windows_needed, seconds)


@dataclass(frozen=True)
class PlanCount:
    """Counts of one plan against the store."""

    total: int
    done: int
    failed: int  # rejected ones included
    to_fetch: int
    refetch: int  # done jobs fetched again (late data, --refetch, grown windows)
    retry: int = 0  # failed jobs fetched again


def count(plan: Plan, index: LedgerLookup) -> PlanCount:
    """Count the plan's jobs by state: per phone in bulk for daily plans, else job by job."""
    if isinstance(index, CountingIndex):
        bulk = _count_days(plan, index)
        if bulk is not None:
            return bulk
    total = done = failed = to_fetch = retry = 0
    for job in plan.jobs():
        total += 1
        state = index.state(job.key)
        pending = plan.is_pending(job, state, index)
        if state == "done":
            done += 1
        elif state == "failed":
            failed += 1
            retry += pending
        to_fetch += pending
    new = 0 if plan.only_failed else total - done - failed
    return PlanCount(total, done, failed, to_fetch, to_fetch - new - retry, retry)


def _count_days(plan: Plan, index: CountingIndex) -> PlanCount | None:
    """:func:`count` from per-phone array counts, or None where that would not be exact.

    Exact for daily plans over a daily index without ``--refetch`` or ``--retry-failed``: a day's
    window never grows, so a job is pending iff it was never recorded, failed without being
    rejected, or is done and due for the late-data re-fetch (:meth:`Plan._may_have_grown`,
    which ``count_late`` mirrors).
    """
    if plan.grain is not Grain.DAY or index.grain is not Grain.DAY or plan.only_failed:
        return None
    if any(r.refetch_from is not None for r in plan.ranges):
        return None
    total = done = failed = rejected = late = 0
    for r in plan.ranges:
        if r.start > r.end:
            continue
        total += (r.end - r.start).days + 1
        phone_done, phone_failed, phone_rejected = index.count_states(r.phone, r.start, r.end)
        done += phone_done
        failed += phone_failed
        rejected += phone_rejected
        if plan.lookback_days is not None:
            assert plan.today is not None
            late += index.count_late(r.phone, r.start, r.end, plan.today, plan.lookback_days)
    new, retry = total - done - failed, failed - rejected
    return PlanCount(total, done, failed, new + retry + late, late, retry)


def economy_applies(plan: Plan, mode: str) -> bool:
    """Whether a run of ``plan`` plans by range arithmetic (request economy): with
    ``harvest.economy = "auto"`` and daily windows; weekly and monthly windows stay one request
    per job, and so does ``--retry-failed`` (only the few failed jobs)."""
    return mode == "auto" and plan.grain is Grain.DAY and not plan.only_failed


def count_jobs(plan: Plan) -> int:
    """How many jobs a plan holds in all (for alternatives: no store involved)."""
    return sum(1 for _ in plan.jobs())
