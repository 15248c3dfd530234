"""The planner's vocabulary: date ranges, requests, proofs, resolved days, events and policy.

Why it exists: these are the values the scheduler and the ledger exchange with the planner, so
they are small frozen records with no behaviour beyond what they mean. A :class:`Proof` names
only ranges that were *fetched* (their replies are in the raw archive), so a ledger row can say
exactly which stored replies a day's rows follow from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from harvester.economy.totals import Row, Totals
from harvester.jobs import ymd

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True, order=True)
class DayRange:
    """An inclusive range of days, as a Diagnostic Flow request asks for."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"range ends before it starts: {self.start}..{self.end}")

    @classmethod
    def day(cls, day: dt.date) -> DayRange:
        return cls(day, day)

    def __len__(self) -> int:
        return (self.end - self.start).days + 1

    def days(self) -> Iterator[dt.date]:
        day = self.start
        while day <= self.end:
            yield day
            day += _ONE_DAY

    def __str__(self) -> str:
        return ymd(self.start) if self.start == self.end else f"{ymd(self.start)}-{ymd(self.end)}"


class Kind(StrEnum):
    """How a day's rows are known (its provenance in the ledger)."""

    FETCHED = "fetched"  # a reply for that single day
    EMPTY = "empty"  # a fetched range that holds the day came back empty (needs only >= 0)
    DERIVED = "derived"  # a fetched range minus fetched parts of it (needs additivity)
    UNCHANGED = "unchanged"  # sync: a range reply equals the sum of the stored days


class Purpose(StrEnum):
    """Why a request is proposed (for logs and the raw archive; the caller treats all alike)."""

    PROBE = "probe"  # a range whose totals are unknown: is there any data, and how much?
    SPLIT = "split"  # part of a range with known totals: the rest follows by subtraction
    VERIFY = "verify"  # a direct fetch of a derived day, compared with its derivation
    RECHECK = "recheck"  # sync: a stored range fetched again to see whether it changed
    DAY = "day"  # a single day fetched directly (dense numbers, derivation off)


@dataclass(frozen=True, slots=True)
class Request:
    """One Diagnostic Flow request the planner wants sent; report it back exactly as given."""

    phone: str
    span: DayRange
    purpose: Purpose
    serial: int  # unique within a planner: two requests for one range stay distinct

    @property
    def path(self) -> str:
        """The request path below the API base URL."""
        return f"/path/{ymd(self.span.start)}/{ymd(self.span.end)}/{self.phone}"


@dataclass(frozen=True, slots=True)
class Proof:
    """``plus`` minus every range of ``minus``: all fetched ranges of the same phone."""

    plus: DayRange
    minus: tuple[DayRange, ...] = ()

    def __str__(self) -> str:
        return " - ".join(map(str, (self.plus, *self.minus)))


@dataclass(frozen=True, slots=True)
class DayResolution:
    """A day whose rows are proven: record it once every range of ``proof`` is stored.

    A later resolution of the same day supersedes an earlier one (after a mismatch, every day
    derived in the run is fetched again and resolved anew as fetched or empty).
    """

    phone: str
    day: dt.date
    kind: Kind
    rows: tuple[Row, ...]  # harvester.items.COLUMNS order; () for a day without data
    proof: Proof


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Additivity failed: a derivation disagreed with a direct fetch, or went below zero.

    From then on the run derives nothing: every day it derived is fetched again. The caller
    records it (``store.json``: derivation off for this store) and warns once.
    """

    phone: str
    span: DayRange
    derived: Totals
    fetched: Totals | None  # None: the derivation itself was negative

    def message(self) -> str:
        if self.fetched is None:
            negative = self.derived.negative_part().describe()
            return f"{self.phone} {self.span}: a derived total is negative: {negative}"
        diff = (self.fetched - self.derived).describe()
        return f"{self.phone} {self.span}: fetched minus derived: {diff}"


@dataclass(frozen=True, slots=True)
class Verified:
    """A sampled derivation agreed with the direct fetch of the same range."""

    phone: str
    span: DayRange


@dataclass(frozen=True, slots=True)
class RangeRefused:
    """The server refused a range as too long; ranges of this length are no longer proposed."""

    phone: str
    span: DayRange


Event = Mismatch | Verified | RangeRefused


# Figures of the issue (#14): verify the first derivation of a run and at least 1 in 20.
DEFAULT_VERIFY_EVERY = 20
# A number with at least this share of non-empty days gains nothing from range probes; it goes
# straight to days (month minus days). Weekday-only lines (5/7 = 0.71) stay below it.
DEFAULT_DENSE_SHARE = 0.8
# Longest range proposed before the server has said anything: a year, as the probes.
DEFAULT_MAX_RANGE_DAYS = 366


@dataclass(frozen=True, slots=True)
class EconomyPolicy:
    """How the planner may spend requests. ``derive=False`` keeps empty pruning only."""

    derive: bool = True
    verify_every: int = DEFAULT_VERIFY_EVERY  # >= 1; 1 verifies every derived day
    dense_share: float = DEFAULT_DENSE_SHARE
    max_range_days: int = DEFAULT_MAX_RANGE_DAYS

    def __post_init__(self) -> None:
        if self.verify_every < 1 or self.max_range_days < 1 or not 0 < self.dense_share <= 1:
            raise ValueError("verify_every and max_range_days >= 1, 0 < dense_share <= 1")


@dataclass(slots=True)
class RangeLimits:
    """What the server has told us about range lengths; shared by a run's phones.

    The caller may keep it across runs (``longest_accepted``, ``shortest_refused``) so a
    server that refuses long ranges is not asked for one again.
    """

    longest_accepted: int = 0
    shortest_refused: int | None = None
    _ceiling: int | None = None  # the length proposed since the last refusal

    def accepted(self, length: int) -> None:
        self.longest_accepted = max(self.longest_accepted, length)

    def refused(self, length: int) -> None:
        """A range of ``length`` days was refused: propose about half of it from now on."""
        self.shortest_refused = min(length, self.shortest_refused or length)
        ceiling = max(self.longest_accepted, (length + 1) // 2)
        self._ceiling = min(ceiling, self.shortest_refused - 1)

    def cap(self, policy_max: int) -> int:
        """The longest range to propose now."""
        cap = policy_max
        if self.shortest_refused is not None:
            cap = min(cap, self.shortest_refused - 1)
        if self._ceiling is not None:
            cap = min(cap, self._ceiling)
        return max(1, cap)
