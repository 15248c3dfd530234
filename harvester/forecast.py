"""What a pull or sync would send, what it costs at the quota, when it would finish, and what
cheaper shapes of the same range would cost: the data of ``harvester plan``.

Sends nothing and writes nothing: it reads the ledger (if the store exists) and counts, with
the same :class:`~harvester.plan.Plan` a run would execute, so its request count is the run's.
The CLI renders it (:mod:`harvester.cli.render_plan`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass

from harvester.config import Config, QuotaConfig
from harvester.economy import EconomyPolicy, expected_requests
from harvester.jobs import Grain
from harvester.plan import (
    Cost,
    LedgerLookup,
    Plan,
    PlanCount,
    count,
    count_jobs,
    economy_applies,
)
from harvester.store import open_index
from harvester.store.provenance import history, load_economy


@dataclass(frozen=True)
class Alternative:
    """The same range in another shape (coarser windows, or the merged ALL number only), on an
    empty store."""

    name: str
    cost: Cost


@dataclass(frozen=True)
class PlanForecast:
    """A plan counted against the store and priced at the configured quota."""

    plan: Plan
    today: dt.date
    quota: QuotaConfig
    counts: PlanCount
    cost: Cost
    # When a run started at the forecast's "now" would end; None past the calendar's end.
    finish_at: dt.datetime | None
    alternatives: tuple[Alternative, ...]
    # requests expected with request economy (harvest.economy = "auto", daily windows), from
    # each number's density in the store; equal to ``counts.to_fetch`` when it does not apply.
    # ``cost`` and ``finish_at`` follow this count.
    expected: int = 0
    economy: bool = False

    @property
    def budget(self) -> int:
        """Requests per quota window: the limit less the reserve left to other tools."""
        return self.quota.limit - self.quota.reserve


def forecast(
    config: Config, plan: Plan, today: dt.date, *, now: dt.datetime | None = None
) -> PlanForecast:
    """Count ``plan`` against the store of ``config`` and price it at its quota.

    ``now`` (default: the wall clock, in the local zone) is when the run is assumed to start.
    """
    index = open_index(config.store.path)
    counts = count(plan, index)
    q = config.quota
    budget = q.limit - q.reserve
    economy = economy_applies(plan, config.harvest.economy)
    pending = counts.to_fetch
    expected = _expected(config, plan, index) if economy and pending else pending
    cost = Cost.of(expected, budget, q.window_seconds)
    now = now or dt.datetime.now(dt.UTC).astimezone()
    alternatives = _alternatives(plan, budget, q.window_seconds)
    finish = _finish_at(now, cost.seconds)
    return PlanForecast(plan, today, q, counts, cost, finish, alternatives, expected, economy)


def _expected(config: Config, plan: Plan, index: LedgerLookup) -> int:
    """Requests the planner is expected to send for the plan's pending days, per phone at the
    share of non-empty days the store has seen for it (unknown: every day busy)."""
    known = history(config.store.path)
    policy = EconomyPolicy(derive=load_economy(config.store.path).get("derive", True) is True)
    days: dict[str, list[dt.date]] = {}
    for job in plan.pending(index):
        days.setdefault(job.phone, []).append(job.period)
    total = 0.0
    for phone, wanted in days.items():
        sample = wanted[:ESTIMATE_SAMPLE_DAYS]
        sent = expected_requests(sample, known.density.get(phone), policy=policy)
        total += sent * len(wanted) / len(sample)
    return math.ceil(total)


# The planner is run on at most this many days of a phone and its count scaled: a year shows
# the shapes ranges exploit (weeks, months), and keeps `plan` over decades of days quick.
ESTIMATE_SAMPLE_DAYS = 366


def _finish_at(now: dt.datetime, seconds: float) -> dt.datetime | None:
    """When a plan of ``seconds`` started ``now`` ends, or None past the calendar's end (a plan
    at one request a day over centuries of dates for many phones outlasts the calendar)."""
    try:
        return now + dt.timedelta(seconds=seconds)
    except OverflowError:
        return None


def _alternatives(plan: Plan, budget: int, window_seconds: float) -> tuple[Alternative, ...]:
    """Cost of the same range with coarser windows or with the merged ALL number only."""
    options: list[tuple[str, Plan]] = []
    for grain in Grain:
        if grain is not plan.grain:
            options.append((f"{grain.value} windows", dataclasses.replace(plan, grain=grain)))
    if plan.phones != ("ALL",):
        all_only = tuple(
            dataclasses.replace(plan.ranges[0], phone="ALL") for _ in range(1) if plan.ranges
        )
        options.append(
            (f"ALL only ({plan.grain.value})", dataclasses.replace(plan, ranges=all_only))
        )
    return tuple(
        Alternative(name, Cost.of(count_jobs(alt), budget, window_seconds)) for name, alt in options
    )
