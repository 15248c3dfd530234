"""Jobs: one request for one phone and one date window, and the calendar that makes them.

A job's identity is ``(phone, period)``: ``period`` is the calendar-aligned first day of its window
(the day itself, the Monday of an ISO week, the 1st of a month). ``window_start``/``window_end``
are what is actually requested; they differ from the full period only where the harvest range
clips it (a week that began before ``harvest.start`` or has not ended yet). Keying on the period
means a clipped window fetched today is *replaced* by the full window fetched later, never added
to it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum


class Grain(StrEnum):
    """How long one request's date window is (``harvest.window``)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


# The calendar's last day, and the last day on which a whole week can begin before it.
MAX_DAY = dt.date.max
_LAST_WEEK_FITS = MAX_DAY - dt.timedelta(days=6)


def period_start(day: dt.date, grain: Grain) -> dt.date:
    """The first day of the calendar period of ``grain`` that contains ``day``."""
    if grain is Grain.DAY:
        return day
    if grain is Grain.WEEK:
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(start: dt.date, grain: Grain) -> dt.date:
    """The last day of the period that begins on ``start`` (never past the calendar's end: the
    last ISO week of 9999 ends on 9999-12-31, a Friday)."""
    if grain is Grain.DAY:
        return start
    if grain is Grain.WEEK:
        return start + dt.timedelta(days=6) if start <= _LAST_WEEK_FITS else MAX_DAY
    if start.month == 12:
        return start.replace(day=31)
    next_month = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return next_month - dt.timedelta(days=1)


def ymd(day: dt.date) -> str:
    """A date in the API's ``YYYYMMDD`` form (ISO 8601 without its dashes: 2.5x cheaper than
    formatting the three numbers, and every request's path has two)."""
    return day.isoformat().replace("-", "")


@dataclass(frozen=True, slots=True, order=True)
class Job:
    """One Diagnostic Flow request: a phone (or ``ALL``) over an inclusive date window."""

    phone: str
    period: dt.date
    window_start: dt.date
    window_end: dt.date
    grain: Grain = Grain.DAY

    @property
    def key(self) -> tuple[str, dt.date]:
        """The job's identity in the ledger."""
        return (self.phone, self.period)

    @property
    def complete(self) -> bool:
        """False when the harvest range clipped the window to less than its full period."""
        return self.window_start == self.period and self.window_end == period_end(
            self.period, self.grain
        )

    @property
    def path(self) -> str:
        """The request path below the API base URL."""
        return f"/path/{ymd(self.window_start)}/{ymd(self.window_end)}/{self.phone}"


def windows(
    start: dt.date, end: dt.date, grain: Grain
) -> Iterator[tuple[dt.date, dt.date, dt.date]]:
    """Yield ``(period, window_start, window_end)`` over ``start..end``, oldest first, clipped."""
    period = period_start(start, grain)
    while period <= end:
        last = period_end(period, grain)
        yield period, max(period, start), min(last, end)
        if last >= end:  # done; and the step below would leave the calendar at its end
            return
        period = last + dt.timedelta(days=1)


def windows_newest_first(
    start: dt.date, end: dt.date, grain: Grain
) -> Iterator[tuple[dt.date, dt.date, dt.date]]:
    """Like :func:`windows`, newest first, without materialising the range."""
    period = period_start(end, grain)
    while period_end(period, grain) >= start and period <= end:
        yield period, max(period, start), min(period_end(period, grain), end)
        if period <= start:  # done; and the step below would leave the calendar at its start
            return
        period = period_start(period - dt.timedelta(days=1), grain)


def due_for_late_refetch(
    fetched_as_of: int, window_end: int, today: int, lookback_days: int
) -> bool:
    """The late-data rule, written once: a done job is fetched again while it was at most
    ``lookback_days`` days old when last fetched ("as of" that run's today), unless it was
    fetched today already (docs/design.md, "Sync and late data"). Days are any consistent day
    numbers (ordinals, epoch days): the plan asks with dates' ordinals, the ledger's index with
    its stored epoch days."""
    return fetched_as_of < today and fetched_as_of - window_end <= lookback_days
