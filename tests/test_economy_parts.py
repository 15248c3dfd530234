"""The economy planner's parts: item-wise totals, calendar cuts, range limits, and the
benchmark script that measures the whole (its targets are the issue's "Done when")."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from harvester.economy import (
    DayRange,
    EconomyPlanner,
    EconomyPolicy,
    RangeLimits,
    Totals,
    drive,
    expected_requests,
)
from harvester.economy.split import calendar_pieces, chunks, halves, months, runs
from harvester.items import item_schema
from harvester.simulator import Shape, Simulator, SimulatorSettings

ROOT = Path(__file__).resolve().parents[1]
APP = "https://demos.plumgroup.com/vxml/start.php"
A = (APP, "main.php", "main_menu", "selection", 10, 9, 1, 0, 0, 0)
B = (APP, "helpdesk.php", "helpdesk_transfer", "transfer", 2, 1, 0, 0, 1, 2)


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def span(first: str, last: str) -> DayRange:
    return DayRange(d(first), d(last))


def test_totals_subtract_item_wise_and_drop_zero_items() -> None:
    both = Totals.from_rows([A, B])
    assert both - Totals.from_rows([B]) == Totals.from_rows([A])
    assert (both - both).is_empty() and (both - both).rows() == ()
    assert Totals.from_rows([A, A]).rows() == ((*A[:4], 20, 18, 2, 0, 0, 0),)  # listed twice: sum
    negative = Totals.from_rows([A]) - both
    assert negative.has_negative() and "visits=-2" in negative.describe()
    table = both.to_table()
    assert table.schema == item_schema() and Totals.from_table(table) == both
    assert Totals().to_table().num_rows == 0


def test_calendar_cuts() -> None:
    assert halves(span("2023-07-01", "2024-06-30")) == [
        span("2023-07-01", "2023-12-31"), span("2024-01-01", "2024-06-30")
    ]  # fmt: skip
    week = span("2024-06-03", "2024-06-09")  # Monday to Sunday: Mon-Wed / Thu-Sun
    assert halves(week) == [span("2024-06-03", "2024-06-05"), span("2024-06-06", "2024-06-09")]
    assert halves(span("2024-06-06", "2024-06-09"))[1] == span("2024-06-08", "2024-06-09")
    assert halves(span("2024-06-05", "2024-06-12"))[1].start == d("2024-06-10")  # the Monday
    assert [len(m) for m in months(span("2024-01-15", "2024-03-02"))] == [17, 29, 2]
    assert calendar_pieces(span("2024-06-05", "2024-06-12")) == [
        span("2024-06-05", "2024-06-09"), span("2024-06-10", "2024-06-12")
    ]  # fmt: skip
    assert [len(c) for c in chunks(span("2023-01-01", "2024-12-31"), 366)] == [365, 366]
    assert [len(c) for c in chunks(span("2024-01-01", "2024-01-31"), 10)] == [10, 10, 10, 1]
    assert runs([d("2024-01-03"), d("2024-01-01"), d("2024-01-02"), d("2024-01-05")]) == [
        span("2024-01-01", "2024-01-03"), span("2024-01-05", "2024-01-05")
    ]  # fmt: skip
    with pytest.raises(ValueError):
        span("2024-01-02", "2024-01-01")


def test_range_limits_halve_after_a_refusal() -> None:
    limits = RangeLimits()
    assert limits.cap(366) == 366
    limits.accepted(31)
    limits.refused(366)
    assert limits.cap(366) == 183
    limits.refused(183)
    assert limits.cap(366) == 92 and limits.shortest_refused == 183
    limits.refused(40)
    assert limits.cap(366) == 31  # never below what was accepted


def test_derivation_off_on_a_busy_number_goes_to_days_once_it_looks_dense() -> None:
    """Without derivation a range only prunes empties: for a number seen busy, its days are
    fetched straight away, so this costs little more than day by day."""
    sim = Simulator(SimulatorSettings(today=d("2024-07-01"), shapes={"6175550101": Shape.busy()}))
    planner = EconomyPlanner(EconomyPolicy(derive=False))
    year = span("2023-07-01", "2024-06-30")
    planner.add_phone("6175550101", year.days())
    out = drive(planner, lambda r: sim.truth_rows(r.phone, r.span.start, r.span.end))
    assert out.sent <= 1.1 * len(year)
    assert all(set(r.rows) == sim.truth_rows(r.phone, r.day, r.day) for r in out.days.values())


def test_expected_requests_follow_density() -> None:
    year = list(span("2023-07-01", "2024-06-30").days())
    assert expected_requests(year, 0.0) == 1  # one probe proves an idle year
    dense = expected_requests(year, 1.0)
    assert len(year) <= dense <= 1.01 * len(year)  # day by day plus the verification sample
    assert abs(expected_requests(year, None) - dense) <= 3  # unknown: assume the dearest
    sparse = [expected_requests(year, share) for share in (0.05, 0.2, 0.5)]
    assert sparse == sorted(sparse) and sparse[-1] < len(year)
    assert expected_requests(year, 0.3) == expected_requests(iter(year), 0.3)  # stable
    assert expected_requests(year, 1.0, policy=EconomyPolicy(derive=False)) == len(year)


def test_the_benchmark_meets_every_target() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "economy.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 8 and all(line.endswith("| yes |") for line in rows[2:])
