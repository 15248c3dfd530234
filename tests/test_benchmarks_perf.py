"""The performance benchmarks run end to end on a tiny size, and what they measure is checked
for the relations that must hold whatever the machine: every job stored and every row visible,
the store smaller than the JSON it came from, compaction and native tables leaving every view's
result unchanged, ``plan`` not paying for the libraries only a pull needs. Times are not
compared (benchmarks are not timed tests; docs/benchmarks.md holds the real runs)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harvester.analysis import bundled_views, connect

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


def visible_rows(store: Path) -> int:
    con = connect(store)
    try:
        (count,) = con.execute("SELECT count(*) FROM diagnostic_flow").fetchone() or (0,)
        return int(count)
    finally:
        con.close()


def store_benchmark() -> ModuleType:
    """benchmarks/store.py (the benchmarks are scripts, not a package), for its constants."""
    spec = importlib.util.spec_from_file_location("store_benchmark", ROOT / "benchmarks/store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))  # for its ``_common``, as when run as a script
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _comparable(value: Any) -> Any:
    # Float sums may differ in the last bits with the scan order (files vs tables).
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 9)
    return value


def view_results(store: Path, *, native_sources: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every bundled view's rows, sorted; over native DuckDB tables for ``native_sources``
    (the same rows copied into tables, every view unchanged on top, as the benchmark does)."""
    con = connect(store)
    try:
        for source in native_sources:
            con.execute(f"CREATE TABLE {source}_native AS SELECT * FROM {source}")
            con.execute(f"CREATE OR REPLACE VIEW {source} AS SELECT * FROM {source}_native")
        return {
            name: sorted(
                (tuple(map(_comparable, row)) for row in con.execute(f"FROM {name}").fetchall()),
                key=repr,
            )
            for name, _ in bundled_views()
        }
    finally:
        con.close()


@pytest.mark.slow
def test_pipeline_runs_a_tiny_pull(tmp_path: Path) -> None:
    run("pipeline.py", "--jobs", "200", "--work", str(tmp_path), "--json", str(tmp_path / "r"))
    (result,) = json.loads((tmp_path / "r").read_text())
    assert result["done"] == result["jobs"] == 200  # every job of the plan stored
    store = tmp_path / "pull-200" / "store"
    assert result["rows"] > 0 and visible_rows(store) == result["rows"]
    assert result["compacted"] and (store / "store.json").exists()
    # the run alone is part of the wall time, so its rate can only be higher
    assert result["run_jobs_per_second"] >= result["jobs_per_second"] > 0
    assert result["cpu_ms_per_job"] > 0 and result["peak_rss_mb"] > 0


@pytest.mark.slow
def test_store_benchmark_builds_compacts_and_times_every_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = tmp_path / "s"
    args = ["--phones", "3", "--days", "20", "--repeat", "1", "--store-dir", str(built)]
    out = run("store.py", *args, "--json", str(tmp_path / "r"))
    results = json.loads((tmp_path / "r").read_text())
    build, sizes = results["build"], results["bytes"]
    assert build["jobs"] == (3 + 1) * 20  # three numbers and ALL, twenty days
    before, after = built / "uncompacted", built / "compacted"
    assert visible_rows(before) == visible_rows(after) == build["rows"] > 0
    # Parquet (data, raw archive and ledger together) is smaller than the compact JSON it holds,
    # which is smaller than the same JSON indented.
    total = {state: sum(s[k] for k in ("data", "raw", "ledger")) for state, s in sizes.items()}
    assert 0 < total["compacted"] < build["json_bytes"] < build["json_indented_bytes"]
    assert sizes["compacted"]["files"] <= sizes["uncompacted"]["files"]
    # Compaction changes no result, and neither do native tables under the same views.
    files = view_results(after)
    assert view_results(before) == files
    benchmark = store_benchmark()
    assert view_results(after, native_sources=benchmark.NATIVE_SOURCES) == files
    assert any(files.values()), "every view is empty: the comparison shows nothing"
    for name, _ in bundled_views():
        (row,) = table_rows(out, f"{name} ")
        assert row[1].endswith(" ms")
    assert set(results["views"]["native"]) >= {name for name, _ in bundled_views()}
    assert table_rows(out, "harvester status") and table_rows(out, "harvester plan")
    # A second run reuses the cached build: the script's own prepare(), as its run() calls it
    # (a whole second run would time every view and CLI command again, ~9 s of CPU).
    record = built / "build.json"
    written = record.stat().st_mtime_ns
    capsys.readouterr()
    assert benchmark.prepare(built, 3, 20, False) == build
    assert "reusing the store built in" in capsys.readouterr().out
    assert record.stat().st_mtime_ns == written


@pytest.mark.slow
def test_startup_benchmark_times_the_commands() -> None:
    out = run("startup.py", "--runs", "1")
    for command in ("harvester --help", "harvester plan", "harvester status"):
        (row,) = table_rows(out, command)
        assert float(row[1]) > 0
    listing = out.split("what `harvester plan` imports")[1]
    imported = {line.split()[1] for line in listing.splitlines()[1:] if line.strip()}
    assert {"click", "harvester.forecast"} <= imported  # the listing reads the real imports
    # plan sends nothing and draws no bar: the HTTP client, asyncio and rich stay unimported
    assert not imported & {"aiohttp", "asyncio", "rich"}, imported
