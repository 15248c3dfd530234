"""Request economy end to end: real pulls and syncs over loopback against the simulator.

Each test judges what reached the server (the simulator's request log) and what the store holds
(every day equal to the simulator's day-by-day truth); the planner itself is tested in-process
in tests/test_economy.py.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harvester.simulator import Shape, SimulatorServer, SimulatorSettings
from harvester.store.provenance import load_economy, provenance_counts
from tests.support import assert_store_matches_truth, cli_env, run_cli, write_config

D = dt.date
TODAY = D(2024, 7, 1)
QUARTER = (D(2024, 4, 1), D(2024, 6, 30))
PHONES = ("6175550110", "6175550111", "6175550112", "6175550113")
SHAPES = {
    PHONES[0]: Shape.busy(),
    PHONES[1]: Shape.never(),
    PHONES[2]: Shape.weekdays(),
    PHONES[3]: Shape.starting(D(2024, 5, 16)),
}
LIFTED = {"limit": 100_000, "window_seconds": 60}  # the quota is not what is tested here


def sim_of(**knobs: Any) -> SimulatorServer:
    settings = SimulatorSettings(**{"phones": PHONES, "today": TODAY, **LIFTED, **knobs})
    return SimulatorServer(settings)


def data_requests(sim: SimulatorServer, since: int = 0) -> int:
    return sum(1 for e in sim.log.entries()[since:] if e.path.startswith("/path/"))


def pull(config: Path, sim: SimulatorServer, *more: str) -> dict[str, Any]:
    done = run_cli(
        ["pull", "-c", str(config), "--json", "--today", TODAY.isoformat(), *more],
        env=cli_env(sim),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def days_in(start: dt.date, end: dt.date) -> int:
    return (end - start).days + 1


def test_quarter_of_four_shapes_costs_under_065_of_day_by_day_and_stores_the_truth(
    tmp_path: Path,
) -> None:
    with sim_of(shapes=SHAPES) as sim:
        start, end = QUARTER
        config = write_config(
            tmp_path, sim, phones=PHONES, start=start, end=end, economy="auto", limit=100_000
        )
        summary = pull(config, sim)
        sent = data_requests(sim)
        day_by_day = len(PHONES) * days_in(start, end)
        assert summary["done"] == day_by_day
        assert sent <= 0.65 * day_by_day, (sent, day_by_day)
        assert_store_matches_truth(tmp_path / "store", sim, PHONES, start, end)
        kinds = provenance_counts(tmp_path / "store")
        assert sum(kinds.values()) == day_by_day
        assert kinds["empty"] > 0 and kinds["derived"] > 0, kinds
        # the raw archive holds the range replies that prove the days
        mark = len(sim.log)
        again = pull(config, sim)
        assert data_requests(sim, mark) == 0 and again["done"] == 0
