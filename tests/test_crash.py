"""Crash safety of a real pull: SIGKILL at random moments, and readers querying during a pull."""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import time
from pathlib import Path

from harvester.simulator import SimulatorServer, SimulatorSettings
from tests.cli_server import ForkedRun
from tests.support import (
    assert_store_matches_truth,
    cli_env,
    ledger_states,
    run_cli,
    start_cli,
    write_config,
)

TODAY = dt.date(2024, 5, 1)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 30)
KILLS = 12
FLUSH_JOBS = 4
CONCURRENCY = 4


def start_pull(config: Path, sim: SimulatorServer) -> ForkedRun | subprocess.Popen[str]:
    return start_cli(
        ["-q", "pull", "-c", str(config), "--today", "2024-05-01"],
        env=cli_env(sim),
        stderr=subprocess.PIPE,
    )


def test_pull_killed_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    settings = SimulatorSettings(
        limit=100_000, window_seconds=60, today=TODAY, latency=0.01, jitter=0.03
    )
    rng = random.Random(20261130)
    with SimulatorServer(settings) as sim:
        phones = [*sim.settings.phones, "ALL"]
        config = write_config(
            tmp_path,
            sim,
            phones=phones,
            start=START,
            end=END,
            concurrency=CONCURRENCY,
            flush_jobs=FLUSH_JOBS,
            flush_seconds=0.2,
        )
        kills = 0
        while kills < KILLS:
            before = len(sim.log)
            proc = start_pull(config, sim)
            # kill at a random moment once the run has sent something
            deadline = time.monotonic() + 20
            while len(sim.log) == before and proc.poll() is None:
                assert time.monotonic() < deadline, "the pull never sent a request"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.25))
            if proc.poll() is not None:
                break  # it finished before we could kill it: nothing left to crash
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
        # the resuming run is not killed: it flushes at the default sizes (a few commits, not
        # one per four jobs)
        resume = write_config(
            tmp_path, sim, phones=phones, start=START, end=END, name="resume.toml"
        )
        final = run_cli(
            ["pull", "-c", str(resume), "--json", "--today", "2024-05-01"], env=cli_env(sim)
        )
        assert final.returncode == 0, final.stderr
        assert json.loads(final.stdout)["failed"] == []

        assert kills >= 10, "the pull finished before it could be killed ten times"
        jobs = len(phones) * 30
        assert ledger_states(tmp_path / "store") == {"done": jobs}
        assert_store_matches_truth(tmp_path / "store", sim, phones, START, END)
        # nothing fetched twice except what a kill caught between reply and flush: at most the
        # buffered batch plus the flush being written plus the requests in flight, per kill
        successes = sim.log.successes_by_path()
        assert len(successes) == jobs
        refetched = sum(n - 1 for n in successes.values())
        assert refetched <= kills * (2 * FLUSH_JOBS + 2 * CONCURRENCY), refetched


DUPLICATES_SQL = (
    "SELECT count(*) AS n FROM (SELECT phone, window_start, application, page, form, item "
    "FROM diagnostic_flow GROUP BY ALL HAVING count(*) > 1)"
)


def test_readers_never_error_or_see_duplicates_during_a_pull(tmp_path: Path) -> None:
    settings = SimulatorSettings(limit=100_000, window_seconds=60, today=TODAY, latency=0.02)
    with SimulatorServer(settings) as sim:
        phones = [*sim.settings.phones, "ALL"]
        # flush_jobs = 1: many small files while the readers read
        config = write_config(
            tmp_path, sim, phones=phones, start=START, end=END, concurrency=2, flush_jobs=1
        )
        store = tmp_path / "store"
        proc = start_pull(config, sim)
        reads, seen = 0, []
        try:
            while proc.poll() is None or reads < 3:
                if not store.exists():
                    time.sleep(0.05)
                    continue
                result = run_cli(
                    ["query", "--store", str(store), "--format", "json", DUPLICATES_SQL]
                )
                assert result.returncode == 0, result.stderr
                assert json.loads(result.stdout) == [{"n": 0}]
                count = run_cli(
                    [
                        "query",
                        "--store",
                        str(store),
                        "--format",
                        "csv",
                        "SELECT count(*) FROM diagnostic_flow",
                    ]
                )
                assert count.returncode == 0, count.stderr
                seen.append(int(count.stdout.splitlines()[1]))
                reads += 1
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        assert reads >= 3
        assert seen == sorted(seen), "rows disappeared while reading"
        assert_store_matches_truth(store, sim, phones, START, END)
        # compaction (automatic past 64 small files, or by hand) keeps every answer
        compact = run_cli(["compact", "--store", str(store)])
        assert compact.returncode == 0, compact.stderr
        data_files = list((store / "data").rglob("*.parquet"))
        assert len(data_files) == len({p.parent for p in data_files})  # one per partition
        assert_store_matches_truth(store, sim, phones, START, END)
