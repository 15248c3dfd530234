"""Activity shapes: which days a phone number has any calls at all.

Why it exists: request economy (issue 14) is only worth measuring against numbers that look like
real accounts, where most numbers are not busy every day: a line never used, a business line
closed at weekends, a number put into service mid-year, a rarely used hotline. A :class:`Shape`
closes days on top of the data model of :mod:`harvester.simulator.traffic`; an open day keeps
exactly the counts it has without shapes, so every identity, the late data of ``settle_days`` (a
share of an open day's calls) and the range arithmetic (a range is the item-wise sum of its
days) hold unchanged. The default shape is today's behaviour.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from harvester.simulator.sampling import seeded_rng
from harvester.simulator.traffic import DayCounts, day_counts


@dataclass(frozen=True, slots=True)
class Shape:
    """Which days a number has calls. Fields combine (a weekday line that starts on a date).

    ``every_day`` overrides the data model's own closed days (holidays, ~3% outages, weekend
    closures of some profiles): the number has calls on every open day of its shape, which is
    what "busy every day" means in the benchmarks. ``share`` < 1 keeps a seeded ~share of the
    days (the same days in every process).
    """

    idle: bool = False  # never any call
    weekdays_only: bool = False  # no calls on Saturday or Sunday
    starts: dt.date | None = None  # no calls before this day
    share: float = 1.0  # sparse: the seeded share of days that have calls
    every_day: bool = False  # busy: calls on every day the shape leaves open

    @classmethod
    def dense(cls) -> Shape:
        """Today's behaviour: the data model decides (the default of every number)."""
        return cls()

    @classmethod
    def busy(cls) -> Shape:
        """Calls every single day: no holidays, outages or weekend closures."""
        return cls(every_day=True)

    @classmethod
    def never(cls) -> Shape:
        """An idle number: every reply for it is empty."""
        return cls(idle=True)

    @classmethod
    def weekdays(cls) -> Shape:
        """A business line: calls Monday to Friday only."""
        return cls(weekdays_only=True)

    @classmethod
    def starting(cls, day: dt.date) -> Shape:
        """A number put into service on ``day``: nothing before it."""
        return cls(starts=day)

    @classmethod
    def sparse(cls, share: float) -> Shape:
        """Calls on a seeded ~``share`` of the days."""
        return cls(share=share)

    def is_open(self, seed: int, phone: str, day: dt.date) -> bool:
        """Whether the shape lets ``phone`` have calls on ``day`` (pure: seeded by the day)."""
        if self.idle or (self.weekdays_only and day.weekday() >= 5):
            return False
        if self.starts is not None and day < self.starts:
            return False
        if self.share < 1.0:
            return seeded_rng(seed, "sparse", phone, day.toordinal()).random() < self.share
        return True


DEFAULT_SHAPE = Shape()


def check_shapes(shapes: Mapping[str, Shape], phones: tuple[str, ...]) -> None:
    """Raise ValueError for a shape of a number not on the account or an impossible share."""
    for phone, shape in shapes.items():
        if phone not in phones:
            raise ValueError(f"shapes: {phone!r} is not a phone of this account")
        if not isinstance(shape, Shape) or not 0.0 <= shape.share <= 1.0:
            raise ValueError(f"shapes: {phone!r} needs a Shape with 0 <= share <= 1")


def shaped_day_counts(
    shapes: Mapping[str, Shape], seed: int, phone: str, day: dt.date, settled: int, parts: int
) -> DayCounts:
    """One phone's counts for a day (``settled/parts`` of them); its shape's closed days empty."""
    shape = shapes.get(phone, DEFAULT_SHAPE)
    if not shape.is_open(seed, phone, day):
        return ()
    return day_counts(seed, phone, day.toordinal(), settled, parts, always_open=shape.every_day)


def shapes_key(shapes: Mapping[str, Shape]) -> tuple[tuple[str, Shape], ...]:
    """The shapes as a hashable value, for caches keyed by everything a reply depends on."""
    return tuple(sorted(shapes.items(), key=lambda kv: kv[0]))
