"""Incremental sync, planning and coverage against the simulator with a movable "today"."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harvester.jobs import ymd
from harvester.simulator import SimulatorServer, SimulatorSettings
from tests.support import (
    assert_store_matches_truth,
    cli_env,
    ledger_states,
    run_cli,
    start_cli,
    stored_rows,
    write_config,
)

D = dt.date
START = D(2024, 3, 1)
PHONES = ["6175550101", "ALL"]


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    # settle_days: a day's numbers keep growing for 3 days, so the lookback has real work to do
    settings = SimulatorSettings(limit=200, window_seconds=2, today=D(2024, 3, 10), settle_days=3)
    with SimulatorServer(settings) as server:
        yield server


def fetched_paths(sim: SimulatorServer, since: int = 0) -> Counter[str]:
    return Counter(e.path for e in sim.log.entries()[since:] if e.outcome == "ok")


def path(phone: str, day: dt.date) -> str:
    return f"/path/{ymd(day)}/{ymd(day)}/{phone}"


def sync(config: Path, sim: SimulatorServer, today: dt.date) -> dict:  # type: ignore[type-arg]
    sim.settings.today = today
    done = run_cli(
        ["sync", "-c", str(config), "--json", "--today", today.isoformat()], env=cli_env(sim)
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_day_two_sync_fetches_the_new_day_plus_lookback_and_replaces_late_data(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    config = write_config(tmp_path, sim, phones=PHONES, start=START, lookback_days=2)
    first = sync(config, sim, D(2024, 3, 10))
    assert first["done"] == 2 * 9  # 03-01..03-09, never today
    assert set(fetched_paths(sim).values()) == {1}

    mark = len(sim.log)
    plan = run_cli(
        ["plan", "--sync", "-c", str(config), "--json", "--today", "2024-03-11"], env=cli_env(sim)
    )
    assert plan.returncode == 0, plan.stderr
    second = sync(config, sim, D(2024, 3, 11))
    expected = {path(p, d) for p in PHONES for d in (D(2024, 3, 8), D(2024, 3, 9), D(2024, 3, 10))}
    assert fetched_paths(sim, mark) == Counter(expected)  # the new day + 2 lookback days, once
    assert second["done"] == len(expected) == json.loads(plan.stdout)["requests"]
    # late data replaced the earlier rows: the store equals the truth as of 03-11, no duplicates
    assert_store_matches_truth(tmp_path / "store", sim, PHONES, START, D(2024, 3, 10))


def test_second_sync_on_the_same_day_sends_nothing(tmp_path: Path, sim: SimulatorServer) -> None:
    config = write_config(tmp_path, sim, phones=PHONES, start=START, lookback_days=3)
    sync(config, sim, D(2024, 3, 10))
    mark = len(sim.log)
    again = sync(config, sim, D(2024, 3, 10))
    assert len(sim.log) == mark
    assert again["done"] == 0 and again["to_fetch"] == 0


def test_new_phone_is_backfilled_and_removed_phone_keeps_its_data(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    config = write_config(tmp_path, sim, phones=["6175550101"], start=START, lookback_days=0)
    sync(config, sim, D(2024, 3, 5))
    config = write_config(tmp_path, sim, phones=["6175550103"], start=START, lookback_days=0)
    mark = len(sim.log)
    sync(config, sim, D(2024, 3, 5))
    assert set(fetched_paths(sim, mark)) == {
        path("6175550103", START + dt.timedelta(days=i)) for i in range(4)
    }
    rows = stored_rows(tmp_path / "store")
    assert {k[0] for k in rows} == {"6175550101", "6175550103"}


def test_interrupted_sync_resumes_without_refetching(tmp_path: Path) -> None:
    settings = SimulatorSettings(
        limit=10_000, window_seconds=60, today=D(2024, 3, 31), latency=0.15
    )
    with SimulatorServer(settings) as sim:
        config = write_config(
            tmp_path, sim, phones=PHONES, start=START, lookback_days=2, concurrency=2, flush_jobs=1
        )
        proc = start_cli(
            ["sync", "-c", str(config), "--today", "2024-03-31"],
            env=cli_env(sim),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while sum(1 for e in sim.log.entries() if e.outcome == "ok") < 12:
            assert time.monotonic() < deadline and proc.poll() is None, "sync did not get going"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        first = fetched_paths(sim)
        assert 12 <= sum(first.values()) < 60

        # the resuming sync is not interrupted: no latency, default flush sizes (its pace and
        # commits are not what is judged, only what it fetches and stores)
        sim.settings.latency = 0.0
        resume = write_config(
            tmp_path, sim, phones=PHONES, start=START, lookback_days=2, name="resume.toml"
        )
        mark = len(sim.log)
        sync(resume, sim, D(2024, 3, 31))
        second = fetched_paths(sim, mark)
        assert not set(first) & set(second)  # nothing fetched twice
        assert sum(first.values()) + sum(second.values()) == 2 * 30
        assert_store_matches_truth(tmp_path / "store", sim, PHONES, START, D(2024, 3, 30))


def test_week_windows_clip_then_grow_without_double_counting(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    # 2024-03-04 is a Monday; today Thursday 03-07: the week is fetched clipped to Mon-Wed
    config = write_config(
        tmp_path, sim, phones=["6175550101"], start=D(2024, 3, 4), window="week", lookback_days=1
    )
    sync(config, sim, D(2024, 3, 7))
    sync(config, sim, D(2024, 3, 12))  # the week is over: re-fetched whole, replacing the clip
    rows = stored_rows(tmp_path / "store")
    assert set(rows) == {
        ("6175550101", D(2024, 3, 4), D(2024, 3, 10)),
        ("6175550101", D(2024, 3, 11), D(2024, 3, 11)),
    }
    for (phone, start, end), got in rows.items():
        assert set(got) == sim.truth_rows(phone, start, end) and len(got) == len(set(got))


def test_a_rerun_retries_transient_failures_and_status_gaps_shows_them(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    config = write_config(tmp_path, sim, phones=["6175550101"], start=START, max_attempts=1)
    env = cli_env(sim)
    sim.settings.error_rate = 1.0  # every request answers 500
    pull = ["pull", "-c", str(config), "--end", "2024-03-04", "--today", "2024-03-10"]
    first = run_cli([*pull, "--json"], env=env)
    assert first.returncode == 1, first.stderr  # finished, some jobs failed
    assert len(json.loads(first.stdout)["failed"]) == 4

    gaps = run_cli(["status", "-c", str(config), "--gaps"], env=env)
    assert gaps.returncode == 0, gaps.stderr
    assert "failed 2024-03-01..2024-03-04" in gaps.stdout
    plan = json.loads(
        run_cli(
            ["plan", "-c", str(config), "--end", "2024-03-04", "--json", "--today", "2024-03-10"],
            env=env,
        ).stdout
    )
    assert (plan["jobs_failed"], plan["retry"], plan["jobs_to_fetch"]) == (4, 4, 4)

    # a 500 is not the server's last word: a plain re-run (pull or sync) tries again
    sim.settings.error_rate = 0.0
    mark = len(sim.log)
    plain = run_cli([*pull, "--json"], env=env)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["done"] == 4 and len(sim.log) == mark + 4
    assert ledger_states(tmp_path / "store") == {"done": 4}
    assert_store_matches_truth(tmp_path / "store", sim, ["6175550101"], START, D(2024, 3, 4))


def test_yesterday_is_a_day_in_the_account_time_zone(tmp_path: Path, sim: SimulatorServer) -> None:
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11
        config = write_config(tmp_path, sim, phones=["ALL"], start=D(2024, 1, 1))
        text = config.read_text().replace('timezone = "UTC"', f'timezone = "{zone}"')
        config.write_text(text)
        plan = run_cli(["plan", "-c", str(config), "--json"], env=cli_env(sim))
        assert plan.returncode == 0, plan.stderr
        data = json.loads(plan.stdout)
        today = dt.datetime.now(ZoneInfo(zone)).date()
        assert data["today"] == today.isoformat()
        assert data["end"] == (today - dt.timedelta(days=1)).isoformat()
