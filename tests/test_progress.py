"""Progress displays: the quota ETA's arithmetic, plain log lines, and the rich bar's rendering."""

from __future__ import annotations

import datetime as dt
import io
import logging

import pytest
from rich.console import Console

from harvester.cli.progress import (
    LOG_INTERVAL_SECONDS,
    BarProgress,
    LogProgress,
    make_progress,
    quota_eta,
)
from harvester.gate import GateSnapshot, QuotaGate
from harvester.jobs import Job
from harvester.logs import format_duration
from harvester.plan import PlanCount
from harvester.progress import NullProgress
from harvester.scheduler import RunSummary

WINDOW = 900.0
JOB = Job("ALL", dt.date(2024, 3, 1), dt.date(2024, 3, 1), dt.date(2024, 3, 1))
COUNTS = PlanCount(total=12, done=2, failed=0, to_fetch=10, refetch=0)


def snapshot(
    *,
    remaining: int = 20,
    reset_in: float = 100.0,
    budget: int = 150,
    now: float = 1_000.0,
    in_flight: int = 0,
) -> GateSnapshot:
    return GateSnapshot(
        now=now,
        mode="quota",
        sent=40,
        replies=40 - in_flight,
        throttled=1,
        in_flight=in_flight,
        remaining=remaining,
        next_reset=now + reset_in,
        reset_in=reset_in,
        budget_per_window=budget,
        clock_offset=0.2,
        clock_offset_error=0.01,
    )


def summary(requests: int = 42, rate_limited: int = 1) -> RunSummary:
    return RunSummary("pull", "run", requests=requests, rate_limited=rate_limited)


# -- the ETA comes from the quota -------------------------------------------------------------


@pytest.mark.parametrize(
    ("to_send", "expected"),
    [
        (0, 0.0),  # nothing left
        (20, 0.0),  # what the current window still allows goes now
        (21, 100.0),  # one more: at the reset
        (170, 100.0),  # the whole next window's budget: still at that reset
        (171, 100.0 + WINDOW),  # one request into the window after
        (300, 100.0 + WINDOW),  # the docstring's example
        (20 + 150 * 3, 100.0 + 2 * WINDOW),
    ],
)
def test_quota_eta(to_send: int, expected: float) -> None:
    assert quota_eta(to_send, snapshot(), WINDOW) == pytest.approx(expected)


def test_quota_eta_uses_what_other_tools_leave_us() -> None:
    """Other tools spend 50 of every 150: 200 requests after this window need two more."""
    eta = quota_eta(200, snapshot(remaining=0, reset_in=10.0, budget=100), WINDOW)
    assert eta == pytest.approx(10.0 + WINDOW)


def test_quota_eta_never_divides_by_zero() -> None:
    assert quota_eta(5, snapshot(remaining=0, budget=0), WINDOW) == pytest.approx(
        100.0 + 4 * WINDOW
    )


def test_the_eta_does_not_count_requests_already_on_the_wire() -> None:
    bar = LogProgress(WINDOW)
    bar.total = 24
    assert bar.eta(snapshot(remaining=20, in_flight=4)) == 0.0
    assert bar.eta(snapshot(remaining=20, in_flight=3)) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (12.4, "12s"), (250, "4m 10s"), (3 * 3600 + 300, "3h 05m"), (-3, "0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# -- plain log lines when output is not a terminal ----------------------------------------------


def test_log_progress_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="harvester")
    progress = LogProgress(WINDOW)
    progress.started("pull", COUNTS, QuotaGate(limit=150, window_seconds=WINDOW))
    assert caplog.messages == ["pull: 12 jobs planned, 2 already done, 10 to fetch"]

    for state in ("done", "done", "failed"):
        progress.job_finished(JOB, state, 3)
    progress.tick(summary(), snapshot(remaining=4, reset_in=125.0))
    assert caplog.messages[-1] == (
        "3/10 jobs · 1 failed · requests 42 · 429s 1 · "
        "window: 4 left, resets in 2m 05s · ETA 2m 05s"
    )

    lines = len(caplog.messages)
    progress.tick(summary(), snapshot(now=1_000.0 + LOG_INTERVAL_SECONDS / 2))
    assert len(caplog.messages) == lines  # at most one line per LOG_INTERVAL_SECONDS
    progress.tick(summary(), snapshot(now=1_000.0 + LOG_INTERVAL_SECONDS))
    assert len(caplog.messages) == lines + 1
    progress.finished(summary())


# -- the live bar on a terminal ----------------------------------------------------------------


def test_bar_progress_renders_jobs_requests_window_and_eta() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    bar = BarProgress(WINDOW, console=console)
    bar.started("pull", COUNTS, QuotaGate(limit=150, window_seconds=WINDOW))
    for _ in range(4):
        bar.job_finished(JOB, "done", 7)
    bar.tick(summary(requests=5, rate_limited=0), snapshot(remaining=0, reset_in=61.0))
    bar.finished(summary())
    text = out.getvalue()
    assert "pull" in text and "4/10" in text
    assert "requests 5 · 429s 0 · window: 0 left, resets in 1m 01s · ETA 1m 01s" in text


def test_make_progress_picks_the_display() -> None:
    assert isinstance(make_progress(WINDOW, interactive=True, quiet=False), BarProgress)
    assert isinstance(make_progress(WINDOW, interactive=False, quiet=False), LogProgress)
    assert isinstance(make_progress(WINDOW, interactive=True, quiet=True), NullProgress)
