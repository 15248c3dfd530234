"""Start-up: how long the commands a user types often take before they do anything heavy.

Run from the repo root (the package must be importable, e.g. in ``.venv``)::

    python benchmarks/startup.py             # median of 5 runs per command
    python benchmarks/startup.py --runs 1    # the test suite's size

Each command is a fresh ``python -m harvester ...`` subprocess (interpreter start, imports,
work, exit), timed from spawn to exit; the figure is the median of ``--runs``. ``plan`` and
``status`` read a small store (3 numbers and ALL, 90 days: 360 jobs) built through the store's own
writer, as benchmarks/store.py builds its large one. What ``plan`` imports is listed from
``python -X importtime`` (cumulative, one run: indicative only).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.5  # the target for --help and plan on a small store
PHONES = 3
DAYS = 90
# What a start-up can pay for; each is imported lazily by the commands that need it.
NOTABLE_IMPORTS = (
    "click",
    "asyncio",
    "rich",
    "aiohttp",
    "duckdb",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.parquet",
    "harvester.config",
    "harvester.store",
    "harvester.cli.progress",
    "harvester.forecast",
)


def _store_benchmark() -> ModuleType:
    """benchmarks/store.py, for its build (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("store_benchmark", REPO / "benchmarks/store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def median_seconds(args: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "harvester", *args],
            env=env,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def imports(args: list[str], env: dict[str, str]) -> list[tuple[str, float]]:
    """The notable modules a command imports, with their cumulative milliseconds."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "harvester", *args],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    found = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if name.strip() in NOTABLE_IMPORTS:
            found.append((name.strip(), int(cumulative) / 1000))
    return sorted(found, key=lambda item: -item[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (median)")
    args = parser.parse_args(argv)
    bench = _store_benchmark()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    with tempfile.TemporaryDirectory(prefix="harvester-startup-") as temp:
        folder = Path(temp)
        numbers = bench.phone_numbers(PHONES)
        bench.build(folder / "store", numbers, DAYS)
        config = bench.plan_config(folder, folder / "store", numbers, DAYS)
        commands = {
            "harvester --help": ["--help"],
            "harvester plan": ["plan", "-c", str(config)],
            "harvester status": ["status", "--store", str(folder / "store")],
        }
        print(f"machine: {bench.machine()}")
        print(f"median of {args.runs} runs; small store: {PHONES} numbers + ALL x {DAYS} days\n")
        print("| command | seconds | target |")
        print("| --- | ---: | --- |")
        for name, command in commands.items():
            seconds = median_seconds(command, args.runs, env)
            target = f"< {TARGET_SECONDS} s" if name != "harvester status" else ""
            print(f"| {name} | {seconds:.2f} | {target} |")
        print("\nwhat `harvester plan` imports (cumulative ms, one run, indicative):")
        for name, ms in imports(commands["harvester plan"], env):
            print(f"  {ms:6.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
