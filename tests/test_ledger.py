"""The ledger's job index: its slots (one per period of the store's grain) and the arrays it loads.

The truth is the project's calendar (``harvester.jobs``: ``windows``, ``period_start``), never the
index's own slot rule, so a slot that drifts (a week that does not start on Monday, a month
numbered from the wrong origin, a floor that rounds towards zero before 1970) shows up as a job in
the wrong place.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from harvester.items import item_schema
from harvester.jobs import Grain, Job, period_end, period_start, windows
from harvester.store import FetchMeta, Store
from harvester.store import schema as s
from harvester.store.ledger import _period_of, _slot_of

NOW = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)

# Ranges whose periods the tests walk: the first day a config accepts (a Monday) and the weeks
# after it; the turn of 1969 to 1970 (negative epoch days, 1969-12-29 a Monday whose ISO week
# ends in 1970); a year boundary that an ISO week straddles (2020-W53: 2020-12-28..2021-01-03).
RANGES = (
    (dt.date(1900, 1, 1), dt.date(1900, 2, 10)),
    (dt.date(1969, 11, 20), dt.date(1970, 2, 10)),
    (dt.date(2020, 11, 25), dt.date(2021, 2, 5)),
)


def periods(grain: Grain, first: dt.date, last: dt.date) -> list[dt.date]:
    return [period for period, _, _ in windows(first, last, grain)]


@pytest.mark.parametrize("grain", list(Grain))
def test_consecutive_periods_have_consecutive_slots_and_the_slot_gives_the_period_back(
    grain: Grain,
) -> None:
    walked = [
        *(p for first, last in RANGES for p in periods(grain, first, last)),
        *periods(grain, dt.date.min, dt.date.min + dt.timedelta(days=70)),  # the calendar's ends
        *periods(grain, dt.date.max - dt.timedelta(days=70), dt.date.max),
    ]
    for period in walked:
        assert _period_of(_slot_of(period, grain), grain) == period
    for first, last in (*RANGES, (dt.date.min, dt.date(1, 3, 1))):
        slots = [_slot_of(p, grain) for p in periods(grain, first, last)]
        assert slots == list(range(slots[0], slots[0] + len(slots)))
    if grain is Grain.WEEK:  # ISO weeks: the period is the Monday, across the year's end too
        assert {_period_of(_slot_of(p, grain), grain).weekday() for p in walked} == {0}
        assert _slot_of(dt.date(2021, 1, 4), grain) == _slot_of(dt.date(2020, 12, 28), grain) + 1
        assert _slot_of(dt.date(1970, 1, 5), grain) == _slot_of(dt.date(1969, 12, 29), grain) + 1


def new_store(tmp_path: Path, grain: Grain) -> Store:
    store = Store(tmp_path / "store")
    store.ensure_writable(grain)
    return store


def fetched(job: Job, attempts: int = 1) -> FetchMeta:
    return FetchMeta(fetched_at=NOW, attempts=attempts, http_status=200, request_path=job.path)


@pytest.mark.parametrize("grain", list(Grain))
def test_the_index_places_every_job_at_its_period_across_years_and_before_1970(
    tmp_path: Path, grain: Grain
) -> None:
    """Three phones with different spans and gaps, done and failed jobs, some windows clipped:
    every period of every range answers as recorded, and nothing else is recorded."""
    every = [p for first, last in RANGES for p in periods(grain, first, last)]
    plan = {  # phone -> the periods it records (gaps between; a span of its own)
        "+15550001": every[::2],
        "+15550002": every[len(every) // 3 :: 3],
        "ALL": every[1:4],
    }
    expected: dict[tuple[str, dt.date], tuple[str, tuple[dt.date, dt.date] | None, int]] = {}
    store = new_store(tmp_path, grain)
    with store.lock("run"), store.writer("run") as writer:
        for phone, recorded in plan.items():
            for n, period in enumerate(recorded):
                end = period_end(period, grain) - dt.timedelta(days=n % 2)  # some clipped
                job = Job(phone, period, period, end, grain)
                if n % 5 == 4:
                    writer.record_failed(job, "HTTP 500", None, fetched(job, attempts=n))
                    expected[job.key] = ("failed", None, n)
                else:
                    writer.record_done(job, item_schema().empty_table(), b"{}", fetched(job))
                    expected[job.key] = ("done", (period, end), 1)
    index = store.job_index()

    assert sorted(index) == sorted(expected)
    for phone in plan:
        for period in every:
            key = (phone, period)
            state, window, attempts = expected.get(key, (None, None, 0))
            assert (index.state(key), index.done_window(key), index.attempts(key)) == (
                state,
                window,
                attempts,
            ), key
            assert index.done_as_of(key) == (NOW.date() if window else None), key
            if grain is not Grain.DAY:  # a day inside the period is not a period
                assert index.state((phone, period + dt.timedelta(days=2))) is None
        done_ends = [w[1] for (p, _), (_, w, _) in expected.items() if p == phone and w]
        assert index.last_done_end(phone) == max(done_ends)
        for first, last in RANGES:
            start, stop = period_start(first, grain), period_start(last, grain)
            inside = [expected[k][0] for k in expected if k[0] == phone and start <= k[1] <= stop]
            done, failed = inside.count("done"), inside.count("failed")
            assert index.count_states(phone, start, stop) == (done, failed, 0)
    assert (index.done, index.failed) == (
        sum(v[0] == "done" for v in expected.values()),
        sum(v[0] == "failed" for v in expected.values()),
    )


def test_a_period_off_the_grain_does_not_shift_the_phones_after_it(tmp_path: Path) -> None:
    """A weekly store whose ledger holds Wednesdays as periods (the harvester never writes one;
    a hand-edited or foreign ledger might), one before the phone's first Monday and one inside
    a recorded week: the index leaves those jobs out, and every other job, of that phone and of
    the phone loaded after it, stays at its own period."""

    def week(phone: str, start: dt.date) -> Job:
        return Job(phone, start, start, start + dt.timedelta(days=6), Grain.WEEK)

    monday = dt.date(2024, 1, 1)
    store = new_store(tmp_path, Grain.WEEK)
    regular = [
        week(phone, monday + dt.timedelta(weeks=n))
        for phone in ("+15550001", "+15550002")
        for n in range(3)
    ]
    odd = [week("+15550001", monday + dt.timedelta(days=days)) for days in (-5, 2)]  # Wednesdays
    with store.lock("run"), store.writer("run") as writer:
        for job in (*odd, *regular):
            attempts = 7 if job in odd else 1
            writer.record_done(job, item_schema().empty_table(), b"{}", fetched(job, attempts))
    index = store.job_index()
    assert sorted(index) == sorted(job.key for job in regular)
    for job in regular:
        assert index.attempts(job.key) == 1, job.key
        assert index.done_window(job.key) == (job.window_start, job.window_end), job.key
    assert [index.state(job.key) for job in odd] == [None, None]


@pytest.mark.parametrize(
    "period",
    [dt.date(1900, 1, 1), dt.date(1969, 12, 31), dt.date(2024, 2, 29), dt.date(9999, 12, 31)],
)
def test_the_sql_forms_of_job_key_and_month_equal_the_python_ones(period: dt.date) -> None:
    """``harvester migrate`` writes job_key and month in SQL: the same rule as the writer's."""
    con = duckdb.connect()
    got = con.execute(
        f"SELECT {s.JOB_KEY_SQL}, {s.MONTH_SQL} FROM "
        "(SELECT '6175550101' AS phone, ?::DATE AS period, ?::DATE AS window_start)",
        [period, period],
    ).fetchone()
    assert got == (s.job_key("6175550101", period), s.month_of(period))
