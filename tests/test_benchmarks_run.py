"""``benchmarks/quota.py`` runs, and its physical minimum is the closed form it documents."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from harvester.simulator import SimulatorSettings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "quota.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quota_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("jobs", "phase"), [(5, 0.5), (10, 0.5), (25, 0.5), (31, 0.25), (40, 0.9)])
def test_physical_minimum_closed_form(jobs: int, phase: float) -> None:
    quota = _load()
    limit, window, latency, c = 10, 10, 0.1, quota.CONCURRENCY
    settings = SimulatorSettings(limit=limit, window_seconds=window, latency=latency)
    t0 = 1_700_000_000 + phase * window  # a multiple of 10, then phase into the window
    d = window * (1 - phase)
    if jobs <= limit:
        last_send, last_window = 0.0, jobs
    else:
        last_send = d + (math.ceil((jobs - limit) / limit) - 1) * window
        last_window = (jobs - limit) - (math.ceil((jobs - limit) / limit) - 1) * limit
    expected = last_send + math.ceil(last_window / c) * latency
    assert quota.physical_minimum(settings, t0, jobs) == pytest.approx(expected)


def test_physical_minimum_leaves_other_tools_their_share() -> None:
    quota = _load()
    base = SimulatorSettings(limit=10, window_seconds=10, latency=0.1)
    shared = replace(base, other_client_spend=4, other_client_at=0.0)  # 4 of 10 at each top
    t0 = 1_700_000_005.0
    # 6 a window left to us: 13 jobs need the window after the next, not just the next
    assert quota.physical_minimum(base, t0, 13) == pytest.approx(5 + 0.1)
    assert quota.physical_minimum(shared, t0, 12) == pytest.approx(5 + 2 * 0.1)
    assert quota.physical_minimum(shared, t0, 13) == pytest.approx(15 + 0.1)


def test_the_tiny_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    final = result.stdout.split("# all scenarios", 1)[1]
    rows = [line.split("|") for line in final.splitlines() if line.startswith("| ")]
    harvester = [r for r in rows if r[2].strip() == "harvester"]
    assert [r[1].strip() for r in harvester] == ["clean", "faults"]
    for row in harvester:
        assert row[8].strip() == "20/20"  # every job done
        assert int(row[6]) == 0  # no 429
    assert len(rows) == 2 + 2 * 5  # header, rule, and five clients per scenario
