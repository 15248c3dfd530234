"""The performance benchmarks run end to end on a tiny size (their figures are not checked here:
benchmarks are not timed tests; docs/benchmarks.md holds the real runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 120  # each takes ~5-20 s on the project's 2-core machine


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


@pytest.mark.slow
def test_pipeline_runs_a_tiny_pull(tmp_path: Path) -> None:
    out = run("pipeline.py", "--jobs", "200", "--work", str(tmp_path))
    (row,) = table_rows(out.split("\n\n")[-1], "200")  # the final table: 200 jobs done
    assert row[1] != "0"  # rows stored
    assert row[2] == "on" and float(row[6]) > 0  # compaction setting, CPU ms per job
    assert (tmp_path / "pull-200" / "store" / "store.json").exists()


@pytest.mark.slow
def test_store_benchmark_builds_compacts_and_times_every_view(tmp_path: Path) -> None:
    from harvester.views import bundled_views

    args = ["--phones", "3", "--days", "20", "--repeat", "1", "--store-dir", str(tmp_path / "s")]
    out = run("store.py", *args)
    assert "store: 80 jobs" in out
    for name, _ in bundled_views():
        (row,) = table_rows(out, f"{name} ")
        assert row[1].endswith(" ms")
    assert table_rows(out, "harvester status") and table_rows(out, "harvester plan")
    again = run("store.py", *args)  # the cached build is reused
    assert "reusing the store built in" in again


@pytest.mark.slow
def test_startup_benchmark_times_the_commands() -> None:
    out = run("startup.py", "--runs", "1")
    for command in ("harvester --help", "harvester plan", "harvester status"):
        (row,) = table_rows(out, command)
        assert float(row[1]) > 0
    assert "duckdb" in out  # the import listing
