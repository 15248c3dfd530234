"""The store's write path alone: what one flush of 500 jobs costs, appending new jobs and
re-fetching stored ones (the replace commit), in-process, no HTTP.

Run from the repo root (the package must be importable, e.g. in ``.venv``)::

    python benchmarks/store_write.py                 # 500 numbers + ALL, 8 days, 3 runs
    python benchmarks/store_write.py --days 4 --runs 1 --json out.json

Each run writes a fresh store: ``--days`` days of every number's reply (501 jobs a day, so about
one 500-job flush a day: the default ``store.flush_jobs``), then the same days again as a second
run would after ``--refetch`` (every flush then replaces the rows of the jobs it re-fetches: whole
files), then every second number's jobs of those days once more (each flush now takes those jobs'
rows out of files that keep the other numbers' rows: the files are rewritten). The replies are
exactly what the simulator would send (the data functions of ``benchmarks/store.py``), parsed by
the harvester's own parser before timing starts. Measured per flush: wall time and the process's
CPU time (delta-rs and pyarrow write on their own threads), median over every flush of every run;
and the data table's bytes at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from _common import machine
from store import FIRST_DAY, _day_replies, _init_worker, phone_numbers

from harvester.items import item_schema
from harvester.jobs import Job
from harvester.store import FetchMeta, Store

FLUSH_JOBS = 500  # the default store.flush_jobs
DEFAULT_PHONES = 500  # + ALL: one flush a day
DEFAULT_DAYS = 8
DEFAULT_RUNS = 3


def replies(phones: int, days: int) -> list[list[tuple[Job, pa.Table, bytes]]]:
    """Per day, every job with its parsed rows and body."""
    _init_worker(phone_numbers(phones))
    out = []
    for offset in range(days):
        day = FIRST_DAY + dt.timedelta(days=offset)
        out.append(
            [
                (Job(phone, day, day, day), pa.table(parsed.columns(), schema=item_schema()), body)
                for phone, body, parsed in _day_replies(day.toordinal())
            ]
        )
    return out


def write_pass(
    store: Store, days: list[list[tuple[Job, pa.Table, bytes]]], run: str
) -> list[dict[str, float]]:
    """Record every job and flush every FLUSH_JOBS; each flush's wall and CPU seconds."""
    timings = []
    fetched = dt.datetime.combine(FIRST_DAY + dt.timedelta(days=len(days)), dt.time(2), dt.UTC)
    with store.lock(run), store.writer(run, flush_jobs=FLUSH_JOBS) as writer:
        for jobs in days:
            for job, rows, body in jobs:
                writer.record_done(job, rows, body, FetchMeta(fetched, 1, 200, job.path))
                if writer.flush_due():
                    wall, cpu = time.perf_counter(), time.process_time()
                    writer.flush()
                    timings.append(
                        {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
                    )
    return timings


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.parquet") if "_delta_log" not in p.parts)


def run(phones: int, days: int, runs: int) -> dict[str, Any]:
    data = replies(phones, days)
    passes: dict[str, list[dict[str, float]]] = {"append": [], "replace": [], "partial": []}
    half = [[job for index, job in enumerate(jobs) if index % 2] for jobs in data]
    sizes = []
    for index in range(runs):
        folder = Path(tempfile.mkdtemp(prefix="store-write-"))
        try:
            store = Store(folder / "store")
            store.ensure_writable("day")
            passes["append"] += write_pass(store, data, f"append-{index}")
            passes["replace"] += write_pass(store, data, f"replace-{index}")
            passes["partial"] += write_pass(store, half, f"partial-{index}")
            sizes.append(folder_bytes(folder / "store" / "data"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    result: dict[str, Any] = {"machine": machine(), "phones": phones, "days": days, "runs": runs}
    for name, timings in passes.items():
        result[name] = {
            "flushes": len(timings),
            "wall_ms": 1000 * statistics.median(t["wall"] for t in timings),
            "cpu_ms": 1000 * statistics.median(t["cpu"] for t in timings),
        }
    result["data_bytes"] = statistics.median(sizes)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=DEFAULT_PHONES)
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    result = run(args.phones, args.days, args.runs)
    print(f"machine: {result['machine']}")
    for name in ("append", "replace", "partial"):
        figures = result[name]
        print(
            f"{name:8} {figures['flushes']:3} flushes of {FLUSH_JOBS} jobs: median "
            f"{figures['wall_ms']:.1f} ms wall, {figures['cpu_ms']:.1f} ms CPU"
        )
    print(f"data table at the end: {result['data_bytes'] / 1e3:,.1f} kB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
