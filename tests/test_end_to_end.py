"""End to end: the real CLI against the simulator over loopback, data checked against truth."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvester.demo import DEMO_MARKER
from harvester.simulator import SimulatorServer, SimulatorSettings
from tests.support import assert_store_matches_truth, cli_env, ledger_states, run_cli, write_config

TODAY = dt.date(2024, 3, 15)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 10)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    settings = SimulatorSettings(limit=25, window_seconds=2, today=TODAY, latency=0.005)
    with SimulatorServer(settings) as server:
        yield server


def test_pull_stores_exactly_the_ground_truth_and_rerun_sends_nothing(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    phones = [*sim.settings.phones, "ALL"]
    config = write_config(tmp_path, sim, start=START, end=END)
    env = cli_env(sim)

    plan = run_cli(["plan", "-c", str(config), "--json", "--today", TODAY.isoformat()], env=env)
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert planned["jobs_to_fetch"] == planned["requests"] == len(phones) * 10
    assert sim.log.count() == 0  # plan sends nothing

    pull = run_cli(["pull", "-c", str(config), "--json", "--today", TODAY.isoformat()], env=env)
    assert pull.returncode == 0, pull.stderr
    summary = json.loads(pull.stdout)
    assert summary["done"] == len(phones) * 10 and summary["failed"] == []
    assert summary["rate_limited"] == 0
    assert_store_matches_truth(tmp_path / "store", sim, phones, START, END)
    # the plan's request count is what the pull actually sent, each job once
    successes = sim.log.successes_by_path()
    assert sum(successes.values()) == planned["requests"]
    assert set(successes.values()) == {1}
    assert sim.log.count(status=429) == 0

    sent = sim.log.count()
    again = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=env)
    assert again.returncode == 0, again.stderr
    assert sim.log.count() == sent  # a re-run never fetches a finished job again
    assert ledger_states(tmp_path / "store") == {"done": len(phones) * 10}


def test_status_and_query_read_the_store(tmp_path: Path, sim: SimulatorServer) -> None:
    config = write_config(tmp_path, sim, phones=["6175550101"], start=START, end=END)
    env = cli_env(sim)
    assert (
        run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=env).returncode == 0
    )
    store = tmp_path / "store"

    status = run_cli(["status", "--store", str(store)])
    assert status.returncode == 0, status.stderr
    assert "6175550101" in status.stdout

    query = run_cli(
        [
            "query",
            "--store",
            str(store),
            "--format",
            "json",
            "SELECT count(DISTINCT window_start) AS days FROM diagnostic_flow",
        ]
    )
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout) == [{"days": 10}]

    bare = run_cli(["query", "--store", str(store), "--format", "csv", "diagnostic_flow"])
    assert bare.returncode == 0, bare.stderr
    header = bare.stdout.splitlines()[0].split(",")
    assert header[:3] == ["phone", "window_start", "window_end"]
    truth_rows = sum(len(sim.truth_rows("6175550101", d, d)) for d in _days(START, END))
    assert len(bare.stdout.splitlines()) == 1 + truth_rows


def test_python_api_harvest(tmp_path: Path, sim: SimulatorServer) -> None:
    """The library face: ``await harvest(config, plan)`` without the CLI."""
    import asyncio

    from harvester import harvest, load_config, pull_plan

    path = write_config(tmp_path, sim, phones=["ALL"], start=START, end=START)
    config = load_config(path, env=cli_env(sim))
    summary = asyncio.run(harvest(config, pull_plan(("ALL",), START, START, config.harvest.window)))
    assert summary.exit_code == 0 and summary.done == 1
    assert_store_matches_truth(tmp_path / "store", sim, ["ALL"], START, START)
    # the callback harvest() used to take is refused before anything is sent
    sent = len(sim.log)
    with pytest.raises(TypeError, match="takes a Plan"):
        asyncio.run(harvest(config, lambda _index: None))  # type: ignore[arg-type]
    assert len(sim.log) == sent


def test_demo_runs_offline_and_marks_its_store(tmp_path: Path) -> None:
    """The demo pulls into a new folder and marks it as its own; that a marked store is replaced
    by the next demo (and refused while a pull holds its lock) is
    tests/test_outputs.py::test_demo_refuses_its_own_store_while_a_pull_holds_the_lock_then_replaces_it
    (a second demo here waited out the demo's quota windows again, ~6 s)."""
    store = tmp_path / "demo-data"
    first = run_cli(["demo", "--store", str(store)], timeout=90)
    assert first.returncode == 0, first.stderr
    assert "pulled" in first.stdout and "harvester query" in first.stdout
    assert (store / "store.json").exists()
    assert (store / DEMO_MARKER).is_file()


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
