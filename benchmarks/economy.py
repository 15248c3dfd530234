"""Request economy: how many requests the planner needs, against one request per phone-day.

Run from the repo root (the package must be importable, e.g. in ``.venv``)::

    python benchmarks/economy.py            # every scenario, a Markdown table (a few seconds)
    python benchmarks/economy.py --json     # the same figures as JSON

These are *planner* figures, in-process: :func:`harvester.economy.drive` answers each proposed
range with the simulator's ground truth for it (``Simulator.truth_rows``, exactly the rows a 200
reply carries), four requests outstanding at a time, replies in the order sent. There is no HTTP,
no quota and no store: the request counts are what a pull or sync would send, the wall times are
what they would take at the real quota (150 requests per 15 minutes). End-to-end pulls and
syncs over loopback are measured by ``benchmarks/economy_e2e.py``.

Each scenario checks that every resolved day equals the simulator's day-by-day truth (after a
sync: the truth as the server reports it that day), and compares the request count with the
issue's target (#14, "Done when"). Day by day is today's harvester: one request per phone-day of
a backfill; per daily sync, one per new day and one per day of the ``lookback_days`` re-fetch.
"Empty pruning only" is the planner with derivation off (what a store falls back to after a
mismatch). Exit status 1 if a target is missed or a day differs from the truth.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from harvester.economy import (
    DayRange,
    EconomyPlanner,
    EconomyPolicy,
    Outcome,
    Purpose,
    Request,
    Row,
    drive,
)
from harvester.simulator import Shape, Simulator, SimulatorSettings

QUOTA_PER_HOUR = 600  # 150 requests per 15-minute window (the API document)
CONCURRENCY = 4  # the harvester's default api.concurrency
TODAY = dt.date(2024, 7, 1)
YEAR = DayRange(dt.date(2023, 7, 1), dt.date(2024, 6, 30))
QUARTER = DayRange(dt.date(2024, 4, 1), dt.date(2024, 6, 30))
LATE_START = dt.date(2024, 5, 16)  # the late-starting number of the quarter: half-way through
LOOKBACK_DAYS = 3  # harvest.lookback_days, the default
SYNCS = 30  # daily syncs in the sync scenarios


def phones(n: int) -> tuple[str, ...]:
    return tuple(f"61755501{k:02d}" for k in range(10, 10 + n))  # 555-01xx: fictional


@dataclass
class Result:
    scenario: str
    numbers: int
    days: int
    day_by_day: int
    economy: int
    target: float | None
    pruning_only: int | None = None
    verifications: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    mismatches: int = 0
    exact: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.economy / self.day_by_day

    @property
    def ok(self) -> bool:
        return self.exact and (self.target is None or self.ratio <= self.target)


def answer_of(sim: Simulator) -> Callable[[Request], set[Row]]:
    def answer(request: Request) -> set[Row]:
        return sim.truth_rows(request.phone, request.span.start, request.span.end)

    return answer


def backfill(
    sim: Simulator, span: DayRange, *, density: float | None = None, derive: bool = True
) -> Outcome:
    planner = EconomyPlanner(EconomyPolicy(derive=derive))
    for phone in sim.settings.phones:
        planner.add_phone(phone, span.days(), density=density)
    out = drive(planner, answer_of(sim), concurrency=CONCURRENCY)
    assert planner.done and not planner.unresolved()
    return out


def exact(sim: Simulator, out: Outcome, span: DayRange) -> bool:
    return all(
        (phone, day) in out.days
        and set(out.days[phone, day].rows) == sim.truth_rows(phone, day, day)
        for phone in sim.settings.phones
        for day in span.days()
    )


def summary(out: Outcome) -> tuple[int, dict[str, int]]:
    verifications = sum(r.purpose is Purpose.VERIFY for r in out.requests)
    return verifications, {str(k): v for k, v in sorted(out.kinds().items())}


def backfill_scenario(
    name: str,
    shapes: Sequence[Shape],
    span: DayRange,
    target: float | None,
    *,
    density: float | None = None,
    non_additive: float = 0.0,
    note: str = "",
) -> Result:
    numbers = phones(len(shapes))
    settings = SimulatorSettings(
        phones=numbers, today=TODAY, shapes=dict(zip(numbers, shapes, strict=True)),
        non_additive=non_additive,
    )  # fmt: skip
    sim = Simulator(settings)
    out = backfill(sim, span, density=density)
    pruning = backfill(sim, span, density=density, derive=False)
    verifications, kinds = summary(out)
    return Result(
        name, len(numbers), len(span), len(numbers) * len(span), out.sent, target,
        pruning.sent, verifications, kinds, len(out.mismatches),
        exact(sim, out, span) and exact(sim, pruning, span), note,
    )  # fmt: skip


def sync_scenario(name: str, settle_days: int, target: float, note: str) -> Result:
    """``SYNCS`` daily syncs of five busy numbers; the store as the ledger would hold it."""
    numbers = phones(5)
    shapes = dict.fromkeys(numbers, Shape.busy())
    sim = Simulator(SimulatorSettings(phones=numbers, settle_days=settle_days, shapes=shapes))
    first = TODAY - dt.timedelta(days=SYNCS)
    # before the first sync: what yesterday's daily sync left (the steady state): the days it
    # fetched or re-fetched, as the server reported them then, as of yesterday
    store: dict[tuple[str, dt.date], tuple[frozenset[Row], dt.date]] = {}
    sim.settings.today = first - dt.timedelta(days=1)
    for back in range(2, LOOKBACK_DAYS + 3):
        day = first - dt.timedelta(days=back)
        for phone in numbers:
            store[phone, day] = (frozenset(sim.truth_rows(phone, day, day)), sim.settings.today)
    day_by_day = economy = verifications = mismatches = 0
    kinds: Counter[str] = Counter()
    for n in range(SYNCS):
        today = first + dt.timedelta(days=n)
        sim.settings.today = today
        planner = EconomyPlanner()
        for phone in numbers:
            new = [today - dt.timedelta(days=1)]
            recheck = {
                day: rows
                for (p, day), (rows, as_of) in store.items()
                if p == phone and as_of < today and (as_of - day).days <= LOOKBACK_DAYS
            }  # harvester.plan: fetched again while younger than lookback_days + 1 days
            day_by_day += len(new) + len(recheck)
            planner.add_phone(phone, new, recheck=recheck)
        out = drive(planner, answer_of(sim), concurrency=CONCURRENCY)
        economy += out.sent
        v, k = summary(out)
        verifications += v
        kinds.update(k)
        mismatches += len(out.mismatches)
        for (phone, day), resolution in out.days.items():
            store[phone, day] = (frozenset(resolution.rows), today)
    sim.settings.today = first + dt.timedelta(days=SYNCS - 1)
    ok = all(set(rows) == sim.truth_rows(p, d, d) for (p, d), (rows, _) in store.items())
    return Result(
        name, len(numbers), SYNCS, day_by_day, economy, target, None, verifications,
        dict(kinds), mismatches, ok, note,
    )  # fmt: skip


def scenarios() -> list[Result]:
    busy, dense, idle = Shape.busy(), Shape.dense(), Shape.never()
    return [
        backfill_scenario("every number busy every day, 1 year", [busy] * 5, YEAR, 1.05,
                          note="first pull: density unknown"),
        backfill_scenario("the same, density known from the store", [busy] * 5, YEAR, 1.05,
                          density=1.0, note="density hint 1.0: month minus days"),
        backfill_scenario("a quarter: dense, idle, weekday-only, late-starting",
                          [dense, idle, Shape.weekdays(), Shape.starting(LATE_START)], QUARTER,
                          0.65, note=f"late start {LATE_START}"),
        backfill_scenario("ten numbers, nine idle, 1 year", [dense] + [idle] * 9, YEAR, 0.12),
        sync_scenario(f"daily sync, lookback_days = {LOOKBACK_DAYS}, nothing changed", 0, 0.5,
                      f"{SYNCS} syncs, per sync and number: yesterday + 3 days"),
        sync_scenario("daily sync, yesterday still growing at every sync", 2, 0.75,
                      f"settle_days = 2, {SYNCS} syncs"),
        backfill_scenario("a non-additive server (every multi-day range off)",
                          [dense, Shape.weekdays(), Shape.sparse(0.3)], QUARTER, None,
                          non_additive=1.0, note="mismatch -> derivation off, derived re-fetched"),
        backfill_scenario("a non-additive server (30% of ranges off)",
                          [dense, Shape.weekdays(), Shape.sparse(0.3)], QUARTER, None,
                          non_additive=0.3, note="mismatch -> derivation off, derived re-fetched"),
    ]  # fmt: skip


def hours(requests: int) -> str:
    return f"{requests / QUOTA_PER_HOUR:.1f}"


def table(results: Iterable[Result]) -> str:
    lines = [
        "| scenario | numbers x days | day by day | economy | ratio | target | empty pruning only "
        "| quota hours (day by day / economy) | verified | days by provenance | mismatch "
        "| = truth |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in results:
        target = f"<= {r.target:.2f}" if r.target is not None else "detected"
        if r.target is None:
            target += " (yes)" if r.mismatches else " (NO)"
        pruning = f"{r.pruning_only / r.day_by_day:.3f}" if r.pruning_only is not None else "-"
        kinds = ", ".join(f"{k} {v}" for k, v in r.kinds.items())
        lines.append(
            f"| {r.scenario} | {r.numbers} x {r.days} | {r.day_by_day} | {r.economy} "
            f"| {r.ratio:.3f} | {target} | {pruning} | {hours(r.day_by_day)} / {hours(r.economy)} "
            f"| {r.verifications} | {kinds} | {r.mismatches} | {'yes' if r.exact else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = scenarios()
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps([asdict(r) | {"ratio": r.ratio, "ok": r.ok} for r in results], indent=2))
    else:
        print(table(results))
        print(f"\n{len(results)} scenarios in {elapsed:.1f} s; sync scenarios: {SYNCS} syncs each")
    failed = [r.scenario for r in results if not r.ok or (r.target is None and not r.mismatches)]
    for name in failed:
        print(f"FAILED: {name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
