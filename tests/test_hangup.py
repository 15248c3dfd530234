"""SIGHUP (a closed terminal, a dropped ssh session) stops a pull as cleanly as SIGTERM does.

Before, SIGHUP's default action killed the run on the spot and everything fetched since the last
flush was lost. The pull here runs against a simulator whose short quota window spreads it over
several windows, with batching so coarse that nothing is flushed before the signal: only the clean
stop can have stored what was fetched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harvester.simulator import SimulatorServer, SimulatorSettings
from tests.support import (
    assert_store_matches_truth,
    cli_env,
    run_cli,
    store_connection,
    write_config,
)

TODAY = dt.date(2024, 5, 1)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 12)
# 4 numbers x 12 days = 48 jobs at 8 per 1 s window: six windows, about 6 s in all
LIMIT, WINDOW_SECONDS = 8, 1.0
# the signal comes once this many jobs were answered: past the first window, mid-run
SIGNAL_AFTER = 12
# batching so coarse that no flush happens before the signal: what is stored, the stop stored
FLUSH_JOBS, FLUSH_SECONDS = 1_000, 600
# the re-run after the stop: every job left in one window
RERUN_LIMIT = 1_000


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    settings = SimulatorSettings(
        limit=LIMIT, window_seconds=WINDOW_SECONDS, today=TODAY, latency=0.02
    )
    with SimulatorServer(settings) as server:
        yield server


def _config(tmp_path: Path, sim: SimulatorServer) -> Path:
    return write_config(
        tmp_path,
        sim,
        start=START,
        end=END,
        concurrency=2,
        flush_jobs=FLUSH_JOBS,
        flush_seconds=FLUSH_SECONDS,
    )


def _pull_args(config: Path) -> list[str]:
    return ["pull", "-c", str(config), "--today", str(TODAY)]


def _answered(sim: SimulatorServer) -> set[str]:
    """Job paths the simulator answered with data."""
    return set(sim.log.successes_by_path())


def _done_paths(store: Path) -> set[str]:
    con = store_connection(store)
    try:
        return {
            str(r[0]) for r in con.execute("SELECT request_path FROM ledger_current").fetchall()
        }
    finally:
        con.close()


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert proc.poll() is None, "the pull ended before the signal"
        assert time.monotonic() < deadline, "the pull made no progress"
        time.sleep(0.01)


def _finish_and_compare(tmp_path: Path, config: Path, sim: SimulatorServer) -> None:
    """A re-run fetches only what the stopped run did not store and ends equal to the truth.

    Its quota is lifted (the server's and the config's): what is judged is what it fetches, not
    its pacing, which would only wait out four more windows."""
    stored = _done_paths(tmp_path / "store")
    sim.settings.limit = RERUN_LIMIT
    rerun = write_config(tmp_path, sim, start=START, end=END, limit=RERUN_LIMIT, name="rerun.toml")
    mark = len(sim.log)
    again = run_cli(_pull_args(rerun), env=cli_env(sim))
    assert again.returncode == 0, again.stderr
    refetched = {e.path for e in sim.log.entries()[mark:] if e.outcome == "ok"} & stored
    assert not refetched, f"stored jobs fetched again: {sorted(refetched)[:3]}"
    phones = [*sim.settings.phones, "ALL"]
    assert_store_matches_truth(tmp_path / "store", sim, phones, START, END)


def test_sighup_stops_a_pull_cleanly_and_keeps_everything_fetched(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    config = _config(tmp_path, sim)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvester", *_pull_args(config)],
        env=cli_env(sim),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: len(_answered(sim)) >= SIGNAL_AFTER, proc)
    proc.send_signal(signal.SIGHUP)
    _out, err = proc.communicate(timeout=30)

    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    answered = _answered(sim)
    assert SIGNAL_AFTER <= len(answered) < 48, "the signal did not land mid-run"
    assert _done_paths(tmp_path / "store") == answered, "fetched jobs were not stored"
    _finish_and_compare(tmp_path, config, sim)


def _take_terminal() -> None:
    """In the child, after setsid: make the pty on stdin the controlling terminal, so that
    closing its master side hangs it up, as a dropped ssh session does."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_a_hung_up_terminal_stops_a_pull_cleanly(tmp_path: Path, sim: SimulatorServer) -> None:
    """The real thing: the pull's terminal goes away (the kernel sends SIGHUP and every later
    write to it fails with EIO); the run still flushes and exits 130."""
    config = _config(tmp_path, sim)
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harvester", *_pull_args(config)],
            env=cli_env(sim),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
    finally:
        os.close(slave)
    try:
        os.set_blocking(master, False)

        def drain_and_check() -> bool:
            with contextlib.suppress(BlockingIOError):
                os.read(master, 65536)  # keep the progress output from filling the pty
            return len(_answered(sim)) >= SIGNAL_AFTER

        _wait_for(drain_and_check, proc)
    finally:
        os.close(master)  # the hang-up
    proc.wait(timeout=30)

    assert proc.returncode == 130
    answered = _answered(sim)
    assert SIGNAL_AFTER <= len(answered) < 48, "the hang-up did not land mid-run"
    assert _done_paths(tmp_path / "store") == answered, "fetched jobs were not stored"
    _finish_and_compare(tmp_path, config, sim)
