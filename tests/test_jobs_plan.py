"""Calendar windows, job identity and plans (pull and sync ranges, pending selection)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harvester.jobs import Grain, Job, windows, windows_newest_first, ymd
from harvester.plan import Cost, PlanCount, count, pull_plan, sync_plan

D = dt.date


class FakeIndex:
    """A ledger stand-in: a dict of key -> (state, window)."""

    def __init__(
        self,
        records: dict[tuple[str, dt.date], tuple[str, dt.date, dt.date]],
        as_of: dict[tuple[str, dt.date], dt.date] | None = None,
    ):
        self.records = records
        self.as_of = as_of or {}

    def state(self, key):  # type: ignore[no-untyped-def]
        rec = self.records.get(key)
        return rec[0] if rec else None

    def done_window(self, key):  # type: ignore[no-untyped-def]
        rec = self.records.get(key)
        return (rec[1], rec[2]) if rec and rec[0] == "done" else None

    def done_as_of(self, key):  # type: ignore[no-untyped-def]
        return self.as_of.get(key) if self.state(key) == "done" else None

    def rejected(self, key):  # type: ignore[no-untyped-def]
        rec = self.records.get(key)
        return bool(rec and rec[0] == "failed" and len(rec) > 3 and rec[3] == "rejected")

    def last_done_end(self, phone):  # type: ignore[no-untyped-def]
        ends = [r[2] for k, r in self.records.items() if k[0] == phone and r[0] == "done"]
        return max(ends) if ends else None


def done_days(phone: str, first: dt.date, last: dt.date) -> dict:  # type: ignore[type-arg]
    out = {}
    day = first
    while day <= last:
        out[(phone, day)] = ("done", day, day)
        day += dt.timedelta(days=1)
    return out


def test_day_windows_cover_range_inclusive() -> None:
    got = list(windows(D(2024, 2, 27), D(2024, 3, 1), Grain.DAY))
    assert [w[1] for w in got] == [D(2024, 2, 27), D(2024, 2, 28), D(2024, 2, 29), D(2024, 3, 1)]
    assert all(p == s == e for p, s, e in got)


def test_week_windows_are_iso_weeks_clipped_at_edges() -> None:
    got = list(windows(D(2024, 1, 3), D(2024, 1, 16), Grain.WEEK))
    # 2024-01-01 is a Monday
    assert got == [
        (D(2024, 1, 1), D(2024, 1, 3), D(2024, 1, 7)),
        (D(2024, 1, 8), D(2024, 1, 8), D(2024, 1, 14)),
        (D(2024, 1, 15), D(2024, 1, 15), D(2024, 1, 16)),
    ]


def test_month_windows_handle_leap_february() -> None:
    got = list(windows(D(2024, 1, 15), D(2024, 3, 31), Grain.MONTH))
    assert got == [
        (D(2024, 1, 1), D(2024, 1, 15), D(2024, 1, 31)),
        (D(2024, 2, 1), D(2024, 2, 1), D(2024, 2, 29)),
        (D(2024, 3, 1), D(2024, 3, 1), D(2024, 3, 31)),
    ]


@pytest.mark.parametrize("grain", list(Grain))
def test_newest_first_is_the_reverse_of_oldest_first(grain: Grain) -> None:
    start, end = D(2023, 11, 20), D(2024, 3, 3)
    assert list(windows_newest_first(start, end, grain)) == list(windows(start, end, grain))[::-1]


def test_job_path_key_and_completeness() -> None:
    job = Job("6175550101", D(2024, 1, 1), D(2024, 1, 3), D(2024, 1, 7), Grain.WEEK)
    assert job.path == "/path/20240103/20240107/6175550101"
    assert job.key == ("6175550101", D(2024, 1, 1))
    assert not job.complete
    assert Job("ALL", D(2024, 1, 1), D(2024, 1, 1), D(2024, 1, 1)).complete


def test_jobs_stream_phones_inside_windows() -> None:
    jobs = list(pull_plan(("1", "ALL"), D(2024, 1, 1), D(2024, 1, 2), Grain.DAY).jobs())
    assert [(j.phone, j.window_start.day) for j in jobs] == [
        ("1", 1),
        ("ALL", 1),
        ("1", 2),
        ("ALL", 2),
    ]


def test_a_plans_jobs_are_lazy_over_huge_plans() -> None:
    phones = tuple(str(1000 + i) for i in range(500))
    it = pull_plan(phones, D(2000, 1, 1), D(2030, 1, 1), Grain.DAY).jobs()
    assert next(it).phone == "1000"  # a 10-year x 500-number plan is never materialised


def test_pull_retries_transient_failures_and_only_retry_failed_takes_rejected_ones() -> None:
    plan = pull_plan(("1",), D(2024, 1, 1), D(2024, 1, 5), Grain.DAY)
    index = FakeIndex(
        {
            ("1", D(2024, 1, 1)): ("done", D(2024, 1, 1), D(2024, 1, 1)),
            ("1", D(2024, 1, 2)): ("failed", D(2024, 1, 2), D(2024, 1, 2)),  # 500s: retried
            ("1", D(2024, 1, 3)): ("failed", D(2024, 1, 3), D(2024, 1, 3), "rejected"),  # a 400
        }
    )
    assert [j.period.day for j in plan.pending(index)] == [2, 4, 5]
    assert count(plan, index) == PlanCount(
        total=5, done=1, failed=2, to_fetch=3, refetch=0, retry=1
    )
    retry = pull_plan(("1",), D(2024, 1, 1), D(2024, 1, 5), Grain.DAY, only_failed=True)
    assert [j.period.day for j in retry.pending(index)] == [2, 3]
    assert count(retry, index) == PlanCount(
        total=5, done=1, failed=2, to_fetch=2, refetch=0, retry=2
    )
    again = pull_plan(("1",), D(2024, 1, 1), D(2024, 1, 5), Grain.DAY, refetch=True)
    assert len(list(again.pending(index))) == 5


def test_pull_refetches_a_clipped_window_that_now_covers_more_days() -> None:
    index = FakeIndex({("1", D(2024, 1, 1)): ("done", D(2024, 1, 1), D(2024, 1, 3))})
    plan = pull_plan(("1",), D(2024, 1, 1), D(2024, 1, 10), Grain.WEEK)
    pending = list(plan.pending(index))
    assert [(j.window_start, j.window_end) for j in pending] == [
        (D(2024, 1, 1), D(2024, 1, 7)),
        (D(2024, 1, 8), D(2024, 1, 10)),
    ]


def daily_syncs(phone: str, first: dt.date, last: dt.date, lookback: int) -> FakeIndex:
    """The ledger after one sync a day through ``last + 1``: day d last fetched on d+1+lookback."""
    records = done_days(phone, first, last)
    sync_day = last + dt.timedelta(days=1)
    as_of = {k: min(k[1] + dt.timedelta(days=1 + lookback), sync_day) for k in records}
    return FakeIndex(records, as_of)


def test_sync_example_from_the_issue() -> None:
    # data through 09-10, today 09-12, lookback 2: fetch 09-09, 09-10, 09-11
    index = daily_syncs("1", D(2024, 9, 1), D(2024, 9, 10), 2)
    plan = sync_plan(("1",), D(2024, 9, 1), D(2024, 9, 12), Grain.DAY, 2)
    assert [j.period for j in plan.pending(index)] == [
        D(2024, 9, 11),
        D(2024, 9, 10),
        D(2024, 9, 9),
    ]


def test_sync_twice_sends_nothing_and_new_phone_backfills() -> None:
    records = done_days("1", D(2024, 9, 1), D(2024, 9, 11))
    index = FakeIndex(records, {k: D(2024, 9, 12) for k in records})  # all fetched today
    plan = sync_plan(("1", "2"), D(2024, 9, 1), D(2024, 9, 12), Grain.DAY, 3)
    pending = list(plan.pending(index))
    assert {j.phone for j in pending} == {"2"}
    assert len(pending) == 11  # the new phone is backfilled from harvest.start


def test_interrupted_newest_first_sync_resumes_the_hole_without_refetching() -> None:
    # a first sync today fetched 09-06..09-11 newest first, then stopped
    records = done_days("1", D(2024, 9, 6), D(2024, 9, 11))
    index = FakeIndex(records, {k: D(2024, 9, 12) for k in records})
    plan = sync_plan(("1",), D(2024, 9, 1), D(2024, 9, 12), Grain.DAY, 3)
    assert [j.period.day for j in plan.pending(index)] == [5, 4, 3, 2, 1]


def test_sync_retries_transient_failures_and_skips_rejected_ones() -> None:
    index = FakeIndex(
        {
            ("1", D(2024, 9, 9)): ("failed", D(2024, 9, 9), D(2024, 9, 9)),
            ("1", D(2024, 9, 10)): ("failed", D(2024, 9, 10), D(2024, 9, 10), "rejected"),
        }
    )
    plan = sync_plan(("1",), D(2024, 9, 9), D(2024, 9, 12), Grain.DAY, 3)
    assert [j.period.day for j in plan.pending(index)] == [11, 9]


def test_sync_week_lookback_refetches_the_whole_week() -> None:
    # a week fetched clipped through Wednesday 2024-01-03 on Thursday; today is Saturday 01-06
    key = ("1", D(2024, 1, 1))
    index = FakeIndex({key: ("done", D(2024, 1, 1), D(2024, 1, 3))}, {key: D(2024, 1, 4)})
    plan = sync_plan(("1",), D(2024, 1, 1), D(2024, 1, 6), Grain.WEEK, 1)
    pending = list(plan.pending(index))
    assert [(j.window_start, j.window_end) for j in pending] == [(D(2024, 1, 1), D(2024, 1, 5))]


def test_cost_counts_whole_windows() -> None:
    assert Cost.of(0, 150, 900) == Cost(0, 0, 0.0)
    assert Cost.of(150, 150, 900) == Cost(150, 1, 0.0)
    assert Cost.of(18250, 150, 900).windows == 122
    assert Cost.of(18250, 150, 900).seconds == 121 * 900


# -- the ends of the calendar ----------------------------------------------------------------------


@pytest.mark.parametrize("grain", list(Grain))
def test_windows_reach_the_ends_of_the_calendar_without_overflowing(grain: Grain) -> None:
    """The config keeps dates far inside the calendar; the library itself must not crash at its
    ends either (the last ISO week of 9999 is cut at 9999-12-31, a Friday)."""
    last_days = list(windows(D(9999, 12, 1), dt.date.max, grain))
    assert last_days[-1][2] == dt.date.max
    assert list(windows_newest_first(D(9999, 12, 1), dt.date.max, grain)) == last_days[::-1]
    first_days = list(windows(dt.date.min, D(1, 2, 3), grain))
    assert first_days[0][1] == dt.date.min
    assert list(windows_newest_first(dt.date.min, D(1, 2, 3), grain)) == first_days[::-1]
    days = sum((end - start).days + 1 for _, start, end in last_days)
    assert days == 31


def test_a_plan_that_outlasts_the_calendar_says_so(tmp_path: Path) -> None:
    """At one request a day, a plan finishing after 9999-12-31 has no finish date to print
    (it was an OverflowError)."""
    from harvester.cli.render_plan import render_plan
    from harvester.config import Config, HarvestConfig, QuotaConfig, StoreConfig
    from harvester.forecast import forecast

    config = Config(
        quota=QuotaConfig(limit=1, window_seconds=86_400),
        store=StoreConfig(path=tmp_path / "store"),
        harvest=HarvestConfig(economy="off"),  # one request per day, exactly
    )
    plan = pull_plan(("ALL",), D(2024, 1, 1), D(2024, 3, 31), Grain.DAY)
    late = dt.datetime(9999, 12, 1, tzinfo=dt.UTC)
    never = forecast(config, plan, D(2024, 4, 1), now=late)
    assert never.finish_at is None and never.cost.requests == 91
    assert "finishing after the year 9999" in render_plan(never, as_json=False)
    data = json.loads(render_plan(never, as_json=True))
    assert data["finish_at"] is None and data["requests"] == 91
    soon = forecast(config, plan, D(2024, 4, 1))
    assert soon.finish_at is not None
    assert json.loads(render_plan(soon, as_json=True))["finish_at"] is not None


@given(st.dates())
def test_a_request_path_names_its_days_as_yyyymmdd(day: dt.date) -> None:
    job = Job("ALL", day, day, day)
    stamp = f"{day.year:04d}{day.month:02d}{day.day:02d}"  # the API's form, years below 1000 too
    assert ymd(day) == stamp
    assert job.path == f"/path/{stamp}/{stamp}/ALL"
