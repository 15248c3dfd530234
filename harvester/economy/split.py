"""Where the planner cuts a range: on calendar boundaries, into runs of days.

Why it exists: data follows the calendar (a number starts on some day and keeps going, business
lines close at weekends), so cuts on month and week boundaries make whole empty pieces likely:
an empty weekend is one leaf, not two. Each function returns pieces oldest first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from harvester.economy.model import DayRange

_ONE_DAY = dt.timedelta(days=1)


def runs(days: Iterable[dt.date]) -> list[DayRange]:
    """Maximal runs of consecutive days."""
    out: list[DayRange] = []
    for day in sorted(set(days)):
        if out and out[-1].end + _ONE_DAY == day:
            out[-1] = DayRange(out[-1].start, day)
        else:
            out.append(DayRange.day(day))
    return out


def single_days(span: DayRange) -> list[DayRange]:
    return [DayRange.day(d) for d in span.days()]


def months(span: DayRange) -> list[DayRange]:
    """``span`` cut at every first of a month."""
    out = []
    start = span.start
    while start <= span.end:
        next_month = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        end = min(span.end, next_month - _ONE_DAY)
        out.append(DayRange(start, end))
        start = end + _ONE_DAY
    return out


def chunks(span: DayRange, size: int) -> list[DayRange]:
    """``span`` in pieces of at most ``size`` days: whole months where they fit."""
    if len(span) <= size:
        return [span]
    out: list[DayRange] = []
    for month in months(span) if size >= 31 else [span]:
        last = out[-1] if out else None
        if last is not None and len(last) + len(month) <= size:
            out[-1] = DayRange(last.start, month.end)
            continue
        start = month.start
        while start <= month.end:
            end = min(month.end, start + dt.timedelta(days=size - 1))
            out.append(DayRange(start, end))
            start = end + _ONE_DAY
    return out


def calendar_pieces(span: DayRange) -> list[DayRange]:
    """``span`` cut into its months if it has several, else its ISO weeks, else its days."""
    pieces = months(span)
    if len(pieces) > 1:
        return pieces
    out: list[DayRange] = []
    for day in span.days():
        if out and day.weekday() != 0:
            out[-1] = DayRange(out[-1].start, day)
        else:
            out.append(DayRange.day(day))
    return out if len(out) > 1 else single_days(span)


def halves(span: DayRange) -> list[DayRange]:
    """Two pieces, cut at the first of a month nearest the middle, else the Monday nearest the
    middle, else the middle (the older piece is the shorter)."""
    if len(span) < 2:
        return [span]
    middle = span.start + dt.timedelta(days=len(span) // 2)
    inside = [span.start + dt.timedelta(days=n) for n in range(1, len(span))]
    for cuts in ([d for d in inside if d.day == 1], [d for d in inside if d.weekday() == 0]):
        if cuts:
            cut = min(cuts, key=lambda d: (abs((d - middle).days), d))
            return [DayRange(span.start, cut - _ONE_DAY), DayRange(cut, span.end)]
    return [DayRange(span.start, middle - _ONE_DAY), DayRange(middle, span.end)]
