"""The quota across runs and against a server that refuses everything, over loopback.

Two promises a single gate cannot keep alone: a run that starts in a window an earlier run of the
same store spent sends nothing until that window resets (the harvest layer keeps the last window
in the store), and a run against a server that answers 429 to everything (a suspended account, a
broken proxy, an account spent around the clock) stops after a bounded wait, exit 1, with what
the server said, instead of sending one request per window forever. Judged by the simulator's
request log and by the store against the simulator's ground truth.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import time
from pathlib import Path
from typing import Any

from harvester.config import Config, load_config
from harvester.gate import STALL_WINDOWS
from harvester.jobs import Job
from harvester.plan import pull_plan
from harvester.progress import NullProgress
from harvester.scheduler import RunSummary, harvest
from harvester.simulator import SimulatorServer
from harvester.store import Store
from tests.conftest import MakeSimulator
from tests.support import assert_store_matches_truth, cli_env, run_cli, write_config

TODAY = dt.date(2024, 3, 31)
START = dt.date(2024, 3, 1)
PHONE = "6175550101"


def _config(tmp_path: Path, sim: SimulatorServer, days: int) -> Config:
    path = write_config(
        tmp_path, sim, phones=[PHONE], start=START, end=START + dt.timedelta(days=days - 1)
    )
    return load_config(path, env=cli_env(sim))


def _pull(config: Config, days: int, progress: Any = None) -> RunSummary:
    end = START + dt.timedelta(days=days - 1)
    plan = pull_plan((PHONE,), START, end, config.harvest.window)
    return asyncio.run(harvest(config, plan, progress=progress))


def _window_start_skew(window: float, into: float) -> float:
    """A server clock skew that puts the server ``into`` seconds into a window right now."""
    now = time.time()
    return math.ceil(now / window) * window + into - now


# -- a restart in a spent window -------------------------------------------------------------------

RESTART_LIMIT = 10
RESTART_WINDOW = 4  # seconds; whole, as the simulator's Reset is


def test_a_restart_in_a_window_an_earlier_run_spent_sends_nothing_until_it_resets(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    # the first run starts at the top of a window and spends it and the next one exactly
    sim = make_simulator(
        today=TODAY,
        limit=RESTART_LIMIT,
        window_seconds=RESTART_WINDOW,
        clock_skew=_window_start_skew(RESTART_WINDOW, 0.3),
    )
    first_days = 2 * RESTART_LIMIT
    first = _pull(_config(tmp_path, sim, first_days), first_days)
    assert first.exit_code == 0 and first.done == first_days
    entries = sim.log.entries()
    spent_at = entries[-1].at
    reset = (math.floor(spent_at / RESTART_WINDOW) + 1) * RESTART_WINDOW
    in_last = [e for e in entries if reset - RESTART_WINDOW <= e.at < reset]
    assert len(in_last) == RESTART_LIMIT, "the first run should end in a window it spent"
    assert (Store(tmp_path / "store").load_quota_state() or {}).get("reset") == reset

    # the second run starts in that window: it waits for the reset, with no probe and no 429
    days = first_days + RESTART_LIMIT // 2
    again = _pull(_config(tmp_path, sim, days), days)
    assert again.exit_code == 0 and again.done == days - first_days
    second = sim.log.entries()[len(entries) :]
    assert second, "the second run sent nothing"
    assert min(e.at for e in second) >= reset, "a request before the spent window's reset"
    assert sim.log.count(status=429) == 0
    assert_store_matches_truth(
        tmp_path / "store", sim, [PHONE], START, START + dt.timedelta(days - 1)
    )


def test_a_saved_window_of_another_api_is_ignored(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY)
    config = _config(tmp_path, sim, 3)
    store = Store(tmp_path / "store")
    store.ensure_writable(config.harvest.window)
    far = time.time() + 30  # a spent window of 60 s that has 30 s left, on another server
    saved = {"reset": far, "window_seconds": 60.0, "limit": 1000, "spent": 1000}
    store.save_quota_state(
        {"api": "http://elsewhere.invalid/api", **saved, "offset_lo": -1.0, "offset_hi": 1.0}
    )
    started = time.monotonic()
    summary = _pull(config, 3)
    assert summary.exit_code == 0 and time.monotonic() - started < 10


# -- a server that refuses everything --------------------------------------------------------------


class _AfterJobs(NullProgress):
    """Calls ``action`` once, when the n-th job has finished."""

    def __init__(self, n: int, action: Any) -> None:
        self.n, self.action, self.seen = n, action, 0

    def job_finished(self, job: Job, state: str, rows: int) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.action()


def test_a_refusal_until_hours_ahead_stops_the_run_at_once_and_keeps_everything(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, window_seconds=3)
    config = _config(tmp_path, sim, 30)

    def suspend() -> None:  # the account is suspended: 429, Reset two hours ahead
        sim.settings.other_client_spend = sim.settings.limit
        sim.settings.other_client_at = 0.0
        sim.settings.reset_ahead = 7200

    started = time.monotonic()
    summary = _pull(config, 30, _AfterJobs(5, suspend))
    assert time.monotonic() - started < 10
    assert summary.stopped == "quota" and summary.exit_code == 1
    assert summary.message is not None
    assert "429, X-RateLimit-Reset 2 hours ahead" in summary.message
    assert "everything fetched is stored" in summary.message
    assert 5 <= summary.done < 30 and summary.failed == []
    refused = sim.log.count(status=429)
    assert 1 <= refused <= config.api.concurrency  # what was on its way when the first came back

    # nothing lost: the done jobs are stored, and a later run finishes the rest
    sim.settings.other_client_spend, sim.settings.reset_ahead = 0, 0
    again = _pull(config, 30)
    assert again.exit_code == 0 and again.done == 30 - summary.done
    assert_store_matches_truth(tmp_path / "store", sim, [PHONE], START, START + dt.timedelta(29))


def test_refusals_without_quota_headers_stop_after_a_few_windows(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    # a proxy that strips the headers in front of an account spent around the clock
    sim = make_simulator(
        today=TODAY, window_seconds=1, quota_headers=False, other_client_spend=1000,
        other_client_at=0.0,
    )  # fmt: skip
    config = _config(tmp_path, sim, 10)
    started = time.monotonic()
    summary = _pull(config, 10)
    elapsed = time.monotonic() - started
    assert summary.stopped == "quota" and summary.exit_code == 1
    assert summary.message is not None and "429, no X-RateLimit headers" in summary.message
    assert elapsed < (STALL_WINDOWS + 2) * 1.0 + 5
    assert summary.done == 0 and sim.log.count(status=429) == len(sim.log)
    assert len(sim.log) <= STALL_WINDOWS * config.api.concurrency


def test_the_cli_exits_1_with_one_line_saying_what_the_server_answered(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(
        today=TODAY, window_seconds=2, other_client_spend=1000, other_client_at=0.0
    )
    path = write_config(tmp_path, sim, phones=[PHONE], start=START, end=START + dt.timedelta(9))
    started = time.monotonic()
    result = run_cli(
        ["--config", str(path), "pull", "--today", TODAY.isoformat()], env=cli_env(sim)
    )
    assert time.monotonic() - started < 60
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("harvester: error")]
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        rf"harvester: error: the API refused every request for {STALL_WINDOWS} windows "
        r"\(429, X-RateLimit-Reset \d s ahead\); "
        r"stopped: everything fetched is stored, re-run later",
        lines[0],
    ), lines[0]
    assert "Traceback" not in result.stderr
    assert sim.log.count(status=429) == len(sim.log) <= 1 + (STALL_WINDOWS - 1) * 4


# -- the file in the store -------------------------------------------------------------------------


def test_the_quota_state_file_round_trips_and_junk_reads_as_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.load_quota_state() is None  # none yet
    assert store.save_quota_state({"api": "http://x/api", "reset": 1.5})
    assert store.load_quota_state() == {"api": "http://x/api", "reset": 1.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quota.json"]  # no temp left behind
    for junk in (b"", b"[1, 2]", b"{not json", b"\xff\xfe", b"{}" + b" " * 70_000):
        (tmp_path / "quota.json").write_bytes(junk)
        assert store.load_quota_state() in (None, {}), junk


def test_a_quota_state_that_cannot_be_written_is_not_a_failed_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "missing")  # the folder does not exist: the write fails
    assert store.save_quota_state({"reset": 1.0}) is False
