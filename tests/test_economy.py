"""The economy planner against the simulator's ground truth, in-process (no HTTP).

The simulator answers each proposed range with exactly what a 200 reply would carry
(:meth:`Simulator.truth_rows`); every test asserts that what the planner resolved equals the
day-by-day truth, and counts the requests it needed for that.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pytest

from harvester.economy import (
    Answer,
    DayRange,
    EconomyPlanner,
    EconomyPolicy,
    Kind,
    Mismatch,
    Outcome,
    Purpose,
    RangeLimits,
    RangeRefused,
    Request,
    Row,
    Verified,
    drive,
)
from harvester.simulator import Shape, Simulator, SimulatorSettings

TODAY = dt.date(2024, 7, 1)
P1, P2, P3 = "6175550101", "6175550103", "6175550108"
PHONES = (P1, P2, P3)
BUSY = dict.fromkeys(PHONES, Shape.busy())
QUARTER = DayRange(dt.date(2024, 4, 1), dt.date(2024, 6, 30))


def simulator(**knobs: object) -> Simulator:
    knobs.setdefault("today", TODAY)
    return Simulator(SimulatorSettings(**knobs))  # type: ignore[arg-type]


def answer_of(sim: Simulator) -> Answer:
    def answer(request: Request) -> set[Row]:
        return sim.truth_rows(request.phone, request.span.start, request.span.end)

    return answer


def assert_truth(sim: Simulator, out: Outcome, phones: Iterable[str], days: DayRange) -> None:
    """Every day resolved, and its rows exactly the simulator's reply for that single day."""
    for phone in phones:
        for day in days.days():
            resolution = out.days.get((phone, day))
            assert resolution is not None, f"{phone} {day} unresolved"
            truth = sim.truth_rows(phone, day, day)
            assert set(resolution.rows) == truth, f"{phone} {day} {resolution.kind}"
            assert len(resolution.rows) == len(truth)


def run(
    sim: Simulator,
    days: DayRange,
    phones: Iterable[str] = PHONES,
    *,
    density: float | None = None,
    policy: EconomyPolicy | None = None,
    concurrency: int = 4,
) -> Outcome:
    planner = EconomyPlanner(policy)
    for phone in phones:
        planner.add_phone(phone, days.days(), density=density)
    out = drive(planner, answer_of(sim), concurrency=concurrency)
    assert planner.done and not planner.unresolved()
    return out


@pytest.mark.parametrize(
    "shape",
    [Shape.busy(), Shape.dense(), Shape.weekdays(), Shape.never(), Shape.sparse(0.15),
     Shape.starting(dt.date(2024, 5, 20)), Shape(weekdays_only=True, starts=dt.date(2024, 6, 5))],
    ids=["busy", "dense", "weekdays", "idle", "sparse", "starting", "weekdays-starting"],
)  # fmt: skip
@pytest.mark.parametrize("concurrency", [1, 4])
def test_every_shape_resolves_to_day_by_day_truth(shape: Shape, concurrency: int) -> None:
    sim = simulator(shapes=dict.fromkeys(PHONES, shape))
    out = run(sim, QUARTER, concurrency=concurrency)
    assert_truth(sim, out, PHONES, QUARTER)
    verifications = sum(r.purpose is Purpose.VERIFY for r in out.requests)
    assert out.sent - verifications <= 3 * len(QUARTER)  # never more than day by day
    leaves = len({(r.phone, r.proof) for r in out.resolutions if r.kind is Kind.DERIVED})
    derived = leaves + verifications  # derivations: a derived empty weekend is one
    assert verifications >= min(1, derived) and verifications >= derived / 20


def test_worked_example_of_the_docstring() -> None:
    sim = simulator(shapes={P1: Shape.weekdays()})
    week = DayRange(dt.date(2024, 6, 3), dt.date(2024, 6, 9))
    out = run(sim, week, [P1], concurrency=1)
    assert [str(r.span) for r in out.requests] == [
        "20240603-20240609", "20240603-20240605", "20240603", "20240604", "20240605",
        "20240606-20240607", "20240606",
    ]  # fmt: skip
    assert out.requests[4].purpose is Purpose.VERIFY
    kinds = {day.day: (day.kind, str(day.proof)) for day in out.days.values()}
    assert kinds[dt.date(2024, 6, 5)] == (Kind.FETCHED, "20240605")
    weekend = "20240603-20240609 - 20240603-20240605 - 20240606-20240607"
    assert kinds[dt.date(2024, 6, 8)] == kinds[dt.date(2024, 6, 9)] == (Kind.DERIVED, weekend)
    assert kinds[dt.date(2024, 6, 7)] == (Kind.DERIVED, "20240606-20240607 - 20240606")
    assert [r.day for r in out.resolutions][:3] == [dt.date(2024, 6, d) for d in (3, 4, 5)]
    assert_truth(sim, out, [P1], week)


def test_idle_year_costs_one_request_and_late_start_a_few_probes() -> None:
    start = dt.date(2023, 11, 20)
    sim = simulator(shapes={P1: Shape.never(), P2: Shape.starting(start)})
    year = DayRange(dt.date(2023, 7, 1), dt.date(2024, 6, 30))
    idle = run(sim, year, [P1])
    assert idle.sent == 1 and idle.kinds() == {Kind.EMPTY: 366}
    late = run(sim, year, [P2])
    assert_truth(sim, late, [P2], year)
    before = sum(1 for r in late.requests if r.span.end < start)
    assert before <= 8  # the empty months before the start cost a few probes, not 142 days
    assert late.sent <= len(DayRange(start, year.end)) + 8 + 10


def test_dense_hint_goes_straight_to_days() -> None:
    sim = simulator(shapes={P1: Shape.busy()})
    out = run(sim, QUARTER, [P1], density=1.0, concurrency=8)
    assert_truth(sim, out, [P1], QUARTER)
    spans = [r.span for r in out.requests]
    months = {
        DayRange(dt.date(2024, m, 1), dt.date(2024, m + 1, 1) - dt.timedelta(1)) for m in (4, 5, 6)
    }
    assert set(s for s in spans if len(s) > 1) == months  # each month, then single days
    derived = [r.day for r in out.resolutions if r.kind is Kind.DERIVED]
    assert derived == [dt.date(2024, 5, 31), dt.date(2024, 6, 30)]  # April's was verified
    assert out.sent == len(QUARTER) + 1  # one per day, plus the run's first verification


def test_zero_remainder_drops_requests_not_yet_sent() -> None:
    """A weekday line as a dense number: once a month's weekdays are fetched, the remainder is
    zero and the trailing weekend is derived empty without its requests ever being sent."""
    sim = simulator(shapes={P1: Shape.weekdays()})
    june = DayRange(dt.date(2024, 6, 1), dt.date(2024, 6, 30))  # ends Sat 29, Sun 30
    out = run(sim, june, [P1], density=1.0, concurrency=1)
    assert_truth(sim, out, [P1], june)
    weekend = DayRange(dt.date(2024, 6, 29), dt.date(2024, 6, 30))
    assert [r.span for r in out.requests if r.span.end >= weekend.start] == [june, weekend]
    assert out.requests[-1].purpose is Purpose.VERIFY  # the run's first derivation is checked
    assert out.sent == len(june)  # the month, 28 days, the weekend as one range


def test_proofs_name_only_ranges_already_answered() -> None:
    """Streaming: a day is handed to the caller only once every range of its proof came back."""
    sim = simulator(shapes={P1: Shape.weekdays(), P2: Shape.starting(dt.date(2024, 5, 9))})
    planner = EconomyPlanner()
    for phone in (P1, P2):
        planner.add_phone(phone, QUARTER.days())
    answered: set[tuple[str, DayRange]] = set()
    pending: list[Request] = []
    seen = 0
    while True:
        pending.extend(planner.next_requests(3 - len(pending)))
        if not pending:
            break
        request = pending.pop(0)
        planner.on_rows(
            request, sim.truth_rows(request.phone, request.span.start, request.span.end)
        )
        answered.add((request.phone, request.span))
        for r in planner.resolved():
            seen += 1
            for span in (r.proof.plus, *r.proof.minus):
                assert (r.phone, span) in answered
                assert span.start <= r.day <= span.end or span in r.proof.minus
            assert r.proof.plus.start <= r.day <= r.proof.plus.end
    assert seen >= 2 * len(QUARTER)


def test_resume_plans_only_what_is_not_stored() -> None:
    sim = simulator(shapes={P1: Shape.weekdays(), P2: Shape.sparse(0.3)})
    planner = EconomyPlanner()
    for phone in (P1, P2):
        planner.add_phone(phone, QUARTER.days())
    stored: dict[tuple[str, dt.date], tuple[Row, ...]] = {}
    for _ in range(25):  # killed after 25 replies: what was resolved so far is stored
        (request,) = planner.next_requests(1)
        planner.on_rows(
            request, sim.truth_rows(request.phone, request.span.start, request.span.end)
        )
        stored.update({(r.phone, r.day): r.rows for r in planner.resolved()})
    assert 0 < len(stored) < 2 * len(QUARTER)
    again = EconomyPlanner()
    for phone in (P1, P2):
        again.add_phone(phone, [d for d in QUARTER.days() if (phone, d) not in stored])
    out = drive(again, answer_of(sim))
    for key, resolution in out.days.items():
        assert key not in stored
        stored[key] = resolution.rows
    for phone in (P1, P2):
        for day in QUARTER.days():
            assert set(stored[phone, day]) == sim.truth_rows(phone, day, day)
    nothing = EconomyPlanner()
    nothing.add_phone(P1, [])
    assert nothing.next_requests(10) == [] and nothing.done


def lookback_store(sim: Simulator, phone: str, days: Iterable[dt.date]) -> dict[dt.date, set[Row]]:
    return {d: sim.truth_rows(phone, d, d) for d in days}


def test_sync_unchanged_lookback_costs_one_range() -> None:
    sim = simulator(settle_days=2, shapes=BUSY)
    lookback = DayRange(TODAY - dt.timedelta(4), TODAY - dt.timedelta(2))
    planner = EconomyPlanner()
    for phone in PHONES:
        stored = lookback_store(sim, phone, lookback.days())  # fetched earlier, nothing new
        planner.add_phone(phone, [TODAY - dt.timedelta(1)], recheck=stored)
    out = drive(planner, answer_of(sim))
    assert out.sent == 2 * len(PHONES)  # yesterday, and one range for the three lookback days
    assert {r.span for r in out.requests if r.purpose is Purpose.RECHECK} == {lookback}
    assert out.kinds() == {Kind.UNCHANGED: 9, Kind.FETCHED: 3}
    assert_truth(sim, out, PHONES, DayRange(lookback.start, TODAY - dt.timedelta(1)))


def test_sync_finds_the_day_that_grew() -> None:
    sim = simulator(settle_days=2, shapes=BUSY)
    before = simulator(settle_days=2, today=TODAY - dt.timedelta(1), shapes=BUSY)
    lookback = DayRange(TODAY - dt.timedelta(4), TODAY - dt.timedelta(2))
    planner = EconomyPlanner()
    for phone in PHONES:  # stored by yesterday's sync: the newest day was then still growing
        planner.add_phone(
            phone, [TODAY - dt.timedelta(1)], recheck=lookback_store(before, phone, lookback.days())
        )
    out = drive(planner, answer_of(sim))
    assert out.sent == 3 * len(PHONES)  # yesterday, the lookback range, its newest day
    assert_truth(sim, out, PHONES, DayRange(lookback.start, TODAY - dt.timedelta(1)))
    grown = {r.day for r in out.days.values() if r.kind is Kind.FETCHED}
    assert grown == {TODAY - dt.timedelta(1), TODAY - dt.timedelta(2)}
    unchanged = [r for r in out.days.values() if r.kind is Kind.UNCHANGED]
    assert len(unchanged) == 6 and all(
        str(r.proof) == f"{lookback} - {lookback.end:%Y%m%d}" for r in unchanged
    )


@pytest.mark.parametrize("share", [1.0, 0.3])
def test_non_additive_server_is_detected_and_every_derived_day_fetched(share: float) -> None:
    sim = simulator(non_additive=share, shapes={P1: Shape.weekdays(), P2: Shape.sparse(0.3)})
    planner = EconomyPlanner()
    for phone in PHONES:
        planner.add_phone(phone, QUARTER.days())
    out = drive(planner, answer_of(sim))
    assert out.mismatches and not planner.derivation_on
    assert_truth(sim, out, PHONES, QUARTER)
    assert set(out.kinds()) <= {Kind.FETCHED, Kind.EMPTY}  # nothing left resting on additivity
    refetched = {(r.phone, r.day) for r in out.resolutions if r.kind is Kind.DERIVED}
    assert all(out.days[key].kind is not Kind.DERIVED for key in refetched)


def test_negative_derivation_is_a_mismatch() -> None:
    sim = simulator(shapes={P1: Shape.busy()})

    def shrinking(request: Request) -> set[Row]:  # multi-day ranges lose half their calls
        rows = sim.truth_rows(request.phone, request.span.start, request.span.end)
        if len(request.span) == 1:
            return rows
        return {(*r[:4], *(c // 2 for c in r[4:])) for r in rows}  # type: ignore[misc]

    planner = EconomyPlanner()
    planner.add_phone(P1, QUARTER.days())
    out = drive(planner, shrinking)
    first = out.mismatches[0]
    assert first.fetched is None and first.derived.has_negative()
    assert "negative" in first.message() and "=-" in first.message()
    assert_truth(sim, out, [P1], QUARTER)


def test_inflated_ranges_are_caught_by_the_verification_sample() -> None:
    """Ranges one call too high never make a derivation negative: only the sampled direct fetch
    of the run's first derived day can see it; then every derived day is fetched again."""
    sim = simulator(shapes={P1: Shape.busy(), P2: Shape.busy()})  # busy: no zero to go below

    def inflated(request: Request) -> list[Row]:
        rows = sorted(sim.truth_rows(request.phone, request.span.start, request.span.end))
        if len(request.span) > 1 and rows:  # one more call on the busiest item: the entry menu
            i = max(range(len(rows)), key=lambda k: rows[k][4])
            r = rows[i]
            rows[i] = (*r[:4], r[4] + 1, r[5] + 1, *r[6:])  # a caller more who chose
        return rows

    planner = EconomyPlanner()
    for phone in (P1, P2):
        planner.add_phone(phone, QUARTER.days())
    out = drive(planner, inflated)
    first = out.mismatches[0]
    assert first.fetched is not None and len(first.span) == 1
    assert "visits=" in first.message() and "filled=" in first.message()
    verify = [r for r in out.requests if r.purpose is Purpose.VERIFY]
    assert verify[0].span == first.span  # found by checking the run's first derivation
    assert_truth(sim, out, [P1, P2], QUARTER)
    assert set(out.kinds()) <= {Kind.FETCHED, Kind.EMPTY} and not planner.derivation_on


def test_policy_without_derivation_keeps_empty_pruning() -> None:
    sim = simulator(shapes={P1: Shape.never(), P2: Shape.weekdays()})
    out = run(sim, QUARTER, [P1, P2], policy=EconomyPolicy(derive=False))
    assert_truth(sim, out, [P1, P2], QUARTER)
    assert set(out.kinds()) <= {Kind.FETCHED, Kind.EMPTY}
    assert sum(r.phone == P1 for r in out.requests) == 1


def test_long_ranges_refused_fall_back_and_the_limit_is_kept() -> None:
    sim = simulator(shapes={P1: Shape.starting(dt.date(2024, 6, 10)), P2: Shape.never()})

    def refusing(request: Request) -> set[Row] | None:
        if len(request.span) > 40:
            return None
        return sim.truth_rows(request.phone, request.span.start, request.span.end)

    limits = RangeLimits()
    planner = EconomyPlanner(limits=limits)
    for phone in (P1, P2):
        planner.add_phone(phone, QUARTER.days())
    out = drive(planner, refusing)
    assert_truth(sim, out, [P1, P2], QUARTER)
    refused = [e for e in out.events if isinstance(e, RangeRefused)]
    assert refused and limits.shortest_refused is not None and limits.shortest_refused > 40
    assert sum(len(r.span) > 40 for r in out.requests) <= 2  # then at most about half
    again = EconomyPlanner(limits=limits)  # the next run remembers
    again.add_phone(P2, QUARTER.days())
    assert all(len(r.span) <= 40 for r in drive(again, refusing).requests)


def test_failed_requests_leave_their_days_unresolved() -> None:
    sim = simulator()
    planner = EconomyPlanner()
    planner.add_phone(P1, QUARTER.days(), density=1.0)
    while not planner.done:
        for request in planner.next_requests(4):
            if request.span.start.month == 5:
                planner.on_failed(request)
            else:
                planner.on_rows(request, sim.truth_rows(P1, request.span.start, request.span.end))
    left = planner.unresolved()[P1]
    assert left and all(d.month == 5 for d in left)
    got = {r.day for r in planner.resolved()}
    assert got == set(QUARTER.days()) - set(left)


def test_a_failed_part_is_derived_from_its_parent() -> None:
    sim = simulator(shapes={P1: Shape.busy()})
    planner = EconomyPlanner()
    planner.add_phone(P1, QUARTER.days(), density=1.0)  # months, then days: month minus days
    failed: list[Request] = []
    while not planner.done:
        for request in planner.next_requests(4):
            if request.span == DayRange.day(dt.date(2024, 5, 7)):
                failed.append(request)
                planner.on_failed(request)
            else:
                planner.on_rows(request, sim.truth_rows(P1, request.span.start, request.span.end))
    assert len(failed) == 1 and not planner.unresolved()
    days = {r.day: r for r in planner.resolved()}
    assert days[dt.date(2024, 5, 7)].kind in (Kind.DERIVED, Kind.FETCHED)  # FETCHED: verified
    assert days[dt.date(2024, 5, 31)].kind is Kind.FETCHED  # the last day fetched instead
    for day, r in days.items():
        assert set(r.rows) == sim.truth_rows(P1, day, day)


def test_verification_sample_rate_is_configurable() -> None:
    sim = simulator(shapes=dict.fromkeys(PHONES, Shape.sparse(0.4)))
    every = run(sim, QUARTER, policy=EconomyPolicy(verify_every=1))
    assert not any(r.kind is Kind.DERIVED for r in every.days.values())  # all checked
    verified = [e for e in every.events if isinstance(e, Verified)]
    assert len(verified) == sum(r.purpose is Purpose.VERIFY for r in every.requests) > 10
    assert_truth(sim, every, PHONES, QUARTER)


def test_bad_use_is_refused() -> None:
    planner = EconomyPlanner()
    planner.add_phone(P1, QUARTER.days())
    with pytest.raises(ValueError, match="already planned"):
        planner.add_phone(P1, [])
    stranger = Request(P2, QUARTER, Purpose.PROBE, 999)
    with pytest.raises(ValueError, match="not planned"):
        planner.on_rows(stranger, [])
    with pytest.raises(ValueError, match="not a request"):
        planner.on_rows(Request(P1, QUARTER, Purpose.PROBE, 999), [])
    with pytest.raises(ValueError):
        EconomyPolicy(verify_every=0)
    assert isinstance(Mismatch, type)
