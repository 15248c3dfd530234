"""A read-only command (status, query, export-duckdb, report, verify, plan) opens each Delta table
once and reuses it (``opening.cached_reads``): every open lists and reads the table's log, several
round trips on object storage. And a cached version never hides a newer one where it matters: a
read that lost its files to another process's vacuum reads the newest version, and no file the
vacuum removed is reported as damage."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvester.analysis import connect
from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.store import Store, retry_read
from harvester.store.opening import cached_reads
from tests.support import assert_store_matches_truth, cli_env, run_cli, write_config

TODAY = dt.date(2024, 3, 20)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 6)
PHONES = ["6175550101", "ALL"]

# Runs harvester commands in one process (one JSON argument list per stdin line) and writes, per
# command, its exit code and how often it constructed each table (delta-rs reads the log then).
COUNTING_RUNNER = r"""
import collections, json, sys
import deltalake

opened = collections.Counter()
original = deltalake.DeltaTable.__init__

def counting(self, *args, **kwargs):
    uri = args[0] if args else kwargs["table_uri"]
    opened[str(uri).rstrip("/").rsplit("/", 1)[-1]] += 1
    original(self, *args, **kwargs)

deltalake.DeltaTable.__init__ = counting
from harvester.cli import main

results = []
for line in sys.stdin:
    opened.clear()
    code = 0
    try:
        main(json.loads(line))
    except SystemExit as exit:
        code = exit.code or 0
    results.append([code, dict(opened)])
with open(sys.argv[1], "w") as out:
    json.dump(results, out)
"""


@pytest.fixture(scope="module")
def pulled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, Path, SimulatorServer]]:
    """A store of several small flushes (so a compaction rewrites files), its config, the sim."""
    tmp = tmp_path_factory.mktemp("read-cache")
    settings = SimulatorSettings(limit=1000, window_seconds=60, today=TODAY, latency=0.0)
    with SimulatorServer(settings) as sim:
        config = write_config(tmp, sim, phones=PHONES, start=START, end=END, flush_jobs=3)
        pull = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=cli_env(sim))
        assert pull.returncode == 0, pull.stderr
        yield tmp / "store", config, sim


def test_each_read_only_command_opens_each_table_once(
    pulled: tuple[Path, Path, SimulatorServer], tmp_path: Path
) -> None:
    store, config, sim = pulled
    commands = [
        ["status", "--store", str(store), "--json"],
        ["query", "--store", str(store), "hotspots", "--format", "csv"],
        ["export-duckdb", "--store", str(store), str(tmp_path / "flow.duckdb")],
        ["report", "--store", str(store), "--out", str(tmp_path / "report.html")],
        ["verify", "--store", str(store)],
        ["plan", "-c", str(config), "--today", TODAY.isoformat()],
    ]
    assert_each_opens_each_table_once(commands, sim, tmp_path)


def test_a_command_under_the_lock_opens_each_table_once(
    pulled: tuple[Path, Path, SimulatorServer], tmp_path: Path
) -> None:
    """The lock's repair check, file check, job index, writer, batch ids, compaction check and
    release read the writer's open tables (the refetch commits and vacuums on the way)."""
    store, config, sim = pulled
    commands = [
        ["pull", "-c", str(config), "--refetch", "--today", TODAY.isoformat()],
        ["compact", "--store", str(store)],
    ]
    assert_each_opens_each_table_once(commands, sim, tmp_path)
    assert_store_matches_truth(store, sim, PHONES, START, END)


def assert_each_opens_each_table_once(
    commands: list[list[str]], sim: SimulatorServer, tmp_path: Path
) -> None:
    counts = tmp_path / "counts.json"
    done = subprocess.run(
        [sys.executable, "-c", COUNTING_RUNNER, str(counts)],
        input="".join(json.dumps(["-q", *c]) + "\n" for c in commands),
        env=cli_env(sim),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command, (code, opened) in zip(commands, json.loads(counts.read_text()), strict=True):
        assert code == 0, (command, done.stderr)
        assert opened == {"data": 1, "raw": 1, "ledger": 1}, (command[0], opened)


def test_a_cached_version_gives_way_to_the_newest_after_another_process_vacuums(
    pulled: tuple[Path, Path, SimulatorServer],
) -> None:
    """Within ``cached_reads`` a reader lists the tables, then another process replaces files
    and vacuums the old ones: status sees no damage and the newest run, the job index is the
    same; a query defined before a compaction retries on the newest version, and its rows
    still equal the simulator's truth."""
    store, config, sim = pulled
    with cached_reads():
        before = Store(store).status()
        index_before = sorted(Store(store).job_index())
        args = ["-q", "pull", "-c", str(config), "--refetch", "--today", TODAY.isoformat()]
        refetched = run_cli(args, env=cli_env(sim))
        assert refetched.returncode == 0, refetched.stderr
        status = Store(store).status()
        assert status.unreadable == 0
        assert status.last_run is not None and before.last_run is not None
        assert status.last_run.run_id != before.last_run.run_id
        assert status.jobs_done == before.jobs_done and status.rows == before.rows
        assert sorted(Store(store).job_index()) == index_before
    with cached_reads():
        con = connect(store)
        try:
            compacted = run_cli(["compact", "--store", str(store)])
            assert compacted.returncode == 0, compacted.stderr
            query = "SELECT count(*), sum(visits) FROM diagnostic_flow"
            rows = retry_read(lambda: con.execute(query).fetchall())
        finally:
            con.close()
    truth = [r for p in PHONES for d in _days() for r in sim.truth_rows(p, d, d)]
    assert rows == [(len(truth), sum(r[4] for r in truth))]
    assert_store_matches_truth(store, sim, PHONES, START, END)


def _days() -> list[dt.date]:
    return [START + dt.timedelta(days=i) for i in range((END - START).days + 1)]
