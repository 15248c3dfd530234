"""How fast and how light is the harvester when the quota is not what limits it?

Run from the repo root (the package must be importable, e.g. in ``.venv``)::

    python benchmarks/pipeline.py                       # 1,000 and 10,000 jobs (~15 s)
    python benchmarks/pipeline.py --jobs 100000         # the 100,000-job run (~2 minutes)
    python benchmarks/pipeline.py --jobs 100000 --no-compact   # the same without the compaction
    python benchmarks/pipeline.py --jobs 200            # seconds (the test suite runs this)
    python benchmarks/pipeline.py --jobs 10000 --profile /tmp/pull.txt   # where the CPU goes

Each size is one real ``python -m harvester pull -c CONFIG --json`` in a subprocess, into a fresh
store, against ``python -m harvester simulate`` in another process (so its CPU is not counted as
ours) with the quota lifted (``--limit 10^9``), at ``api.concurrency`` 8 and the default batching
(``store.flush_jobs`` 500, ``store.flush_seconds`` 2). The simulator serves the documented three
numbers; a plan over them and ALL is four jobs a day, so N jobs span N/4 days back from yesterday
(``--phones P`` serves P numbers instead, still plus ALL, from a ``python -c`` launcher since
``harvester simulate`` has no such option).

Measured per size, end to end (process start to exit: start-up, ledger load, every request,
parse, validation, write, ledger, and the compaction a pull runs at its end when more than 64
files piled up, i.e. from ~32,000 jobs on):

- ``jobs/s``: jobs done / the pull process's wall time (``run jobs/s``: over the run loop only,
  ``elapsed_seconds`` of the JSON summary: without start-up and final compaction);
- ``CPU ms/job``: the pull process's user + system CPU (``wait4`` rusage: its compaction child
  included) / jobs;
- ``peak RSS``: the pull process's own high-water mark: ``wait4``'s ``ru_maxrss`` when it
  started no child, else its ``VmHWM`` polled from ``/proc/<pid>/status`` every 0.25 s until it
  exits (which may miss its last quarter second: 2 MB at 10,000 jobs); the whole ``VmRSS``
  timeline is left in ``rss.tsv`` by the store; ``child MB``: the polled ``VmHWM`` of the
  compaction child a pull starts at its end (0: none); ``tree MB``: ``wait4``'s ``ru_maxrss``,
  the larger of the two;
- ``sim CPU``: the simulator process's CPU over the same wall time, as a share of one core;
  ``machine busy``: both cores' busy share from ``/proc/stat``; ``other load``: cores busy with
  neither process (this machine is shared: read the figures of a run with little of it). The
  simulator serves roughly 1,500-2,600 replies per core-second, and one asyncio process uses at
  most one core: when ``sim CPU`` nears 100% the simulator, not the harvester, limits jobs/s, and
  the harvester's CPU ms/job says what it would do against a faster server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    LIFTED_LIMIT,
    WINDOW_SECONDS,
    free_port,
    machine,
    start_serving,
    stop,
    write_lifted_config,
)

from harvester.simulator.settings import DEFAULT_PHONES as SIMULATOR_PHONES
from harvester.simulator.settings import DEFAULT_TEMP_LOGIN, DEFAULT_TEMP_PASSWORD

REPO = Path(__file__).resolve().parents[1]
# The sizes; its targets are judged at 10,000 (throughput) and 100,000 (memory).
DEFAULT_JOBS = (1_000, 10_000)
CONCURRENCY = 8  # the setting: enough requests in flight to hide loopback latency
PASSWORD_ENV = "HARVESTER_BENCH_PASSWORD"
SIMULATOR_TIMEOUT_SECONDS = 30  # for the simulator's "Ctrl-C to stop" line
RSS_POLL_SECONDS = 0.25  # the RSS timeline's resolution
DEFAULT_PHONES = len(SIMULATOR_PHONES)  # what `harvester simulate` serves


@dataclass(frozen=True)
class Settings:
    """What a run varies besides its size."""

    phones: int = DEFAULT_PHONES
    flush_jobs: int = 500
    flush_seconds: float = 2.0
    auto_compact: bool = True


@dataclass
class Result:
    jobs: int
    phones: int
    days: int
    done: int
    rows: int
    wall_seconds: float
    run_seconds: float
    jobs_per_second: float
    run_jobs_per_second: float
    cpu_seconds: float
    cpu_ms_per_job: float
    peak_rss_mb: float  # the pull process's own (VmHWM)
    child_peak_rss_mb: float  # its compaction child's (VmHWM), 0 if none ran
    tree_peak_rss_mb: float  # wait4's ru_maxrss: the largest of the process and its children
    sim_cpu_share: float  # of one core, over the pull's wall time
    machine_busy: float  # of all cores
    other_cores: float  # cores busy with neither process (other load on the machine)
    store_mb: float
    compacted: bool


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a live process, in clock ticks (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def phone_numbers(count: int) -> list[str]:
    """The simulator's own numbers, or ``count`` fictional ones (555-01xx style) for --phones."""
    if count == DEFAULT_PHONES:
        return list(SIMULATOR_PHONES)
    return [f"617555{1000 + i:04d}" for i in range(count)]


def start_simulator(phones: int, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """The simulator in its own process, quota lifted; returns it and its base URL."""
    port = free_port()
    if phones == DEFAULT_PHONES:
        command = [sys.executable, "-m", "harvester", "simulate", "--port", str(port)]
        command += ["--limit", str(LIFTED_LIMIT), "--window-seconds", str(WINDOW_SECONDS)]
    else:  # `harvester simulate` has no --phones: serve the same app with more numbers
        code = (
            "import asyncio, sys\n"
            "from harvester.simulator import SimulatorSettings, run_simulator\n"
            "phones = tuple(sys.argv[1].split(','))\n"
            f"s = SimulatorSettings(phones=phones, limit={LIFTED_LIMIT}, "
            f"window_seconds={WINDOW_SECONDS})\n"
            f"asyncio.run(run_simulator(s, '127.0.0.1', {port}))\n"
        )
        command = [sys.executable, "-c", code, ",".join(phone_numbers(phones))]
    proc, _printed = start_serving(command, env, SIMULATOR_TIMEOUT_SECONDS, cwd=REPO)
    return proc, f"http://127.0.0.1:{port}/api"


def write_config(
    folder: Path, base_url: str, phones: list[str], start: dt.date, end: dt.date, run: Settings
) -> Path:
    return write_lifted_config(
        folder,
        base_url=base_url,
        login=DEFAULT_TEMP_LOGIN,
        password_env=PASSWORD_ENV,
        phones=phones,
        start=start,
        end=end,
        concurrency=CONCURRENCY,
        store_path=str(folder / "store"),
        flush_jobs=run.flush_jobs,
        flush_seconds=run.flush_seconds,
        auto_compact=run.auto_compact,
    )


def pull_command(config: Path, today: dt.date, profile: Path | None) -> list[str]:
    command = [sys.executable, "-m", "harvester", "pull", "-c", str(config)]
    command += ["--json", "--today", today.isoformat()]
    if profile is not None and profile.suffix == ".prof":
        command[1:1] = ["-m", "cProfile", "-o", str(profile)]
    elif profile is not None:  # py-spy's collapsed stacks (pip install py-spy)
        spy = str(Path(sys.executable).with_name("py-spy"))
        command = [spy, "record", "-r", "250", "-f", "raw", "-o", str(profile), "--", *command]
    return command


def run_one(jobs: int, work: Path, run: Settings, profile: Path | None = None) -> Result:
    """One pull of about ``jobs`` jobs into a fresh store; the figures of that run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env[PASSWORD_ENV] = DEFAULT_TEMP_PASSWORD
    numbers = [*phone_numbers(run.phones), "ALL"]
    days = max(1, round(jobs / len(numbers)))
    today = dt.datetime.now(dt.UTC).date()
    end = today - dt.timedelta(days=1)
    start = end - dt.timedelta(days=days - 1)
    folder = work / f"pull-{jobs}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sim, base_url = start_simulator(run.phones, env)
    try:
        config = write_config(folder, base_url, numbers, start, end, run)
        sim_before, machine_before = _cpu_ticks(sim.pid), _machine_ticks()
        started = time.perf_counter()
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            proc = subprocess.Popen(
                pull_command(config, today, profile), stdout=out, stderr=err, env=env, cwd=folder
            )
            peaks: dict[str, float] = {"pull": 0.0, "child": 0.0}
            rss = _poll_rss(proc.pid, started, folder / "rss.tsv", peaks)
            # wait4, not Popen.wait: it returns this one child's rusage (CPU, ru_maxrss)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            rss.join()
        wall = time.perf_counter() - started
        sim_after, machine_after = _cpu_ticks(sim.pid), _machine_ticks()
    finally:
        stop(sim)
    summary = _summary((folder / "stdout").read_text())
    if code != 0 or summary is None:
        raise RuntimeError(f"pull exited {code}: {(folder / 'stderr').read_text()[-2000:]}")
    tick = os.sysconf("SC_CLK_TCK")
    busy_ticks = machine_after[0] - machine_before[0]
    cpu = usage.ru_utime + usage.ru_stime
    sim_seconds = (sim_after - sim_before) / tick
    done = int(summary["done"])
    run_seconds = float(summary["elapsed_seconds"])
    return Result(
        jobs=jobs,
        phones=run.phones,
        days=days,
        done=done,
        rows=int(summary["rows"]),
        wall_seconds=wall,
        run_seconds=run_seconds,
        jobs_per_second=done / wall,
        run_jobs_per_second=done / run_seconds if run_seconds else 0.0,
        cpu_seconds=cpu,
        cpu_ms_per_job=1000 * cpu / max(1, done),
        # wait4's is exact but the larger of the pull and its child: sampled when a child ran
        peak_rss_mb=peaks["pull"] if peaks["child"] else usage.ru_maxrss / 1024,
        child_peak_rss_mb=peaks["child"],
        tree_peak_rss_mb=usage.ru_maxrss / 1024,
        sim_cpu_share=sim_seconds / wall,
        machine_busy=busy_ticks / max(1, machine_after[1] - machine_before[1]),
        other_cores=max(0.0, (busy_ticks / tick - cpu - sim_seconds) / wall),
        store_mb=_folder_bytes(folder / "store") / 1e6,
        compacted=run.auto_compact,
    )


def _status_mb(pid: int) -> dict[str, float] | None:
    """``VmRSS`` and ``VmHWM`` of a live process in MB; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie: exited, not yet reaped
        return None
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def _children(pid: int) -> list[int]:
    """The process's children, whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _poll_rss(pid: int, started: float, out: Path, peaks: dict[str, float]) -> threading.Thread:
    """Record the pull's resident set every RSS_POLL_SECONDS (where in the run memory peaks),
    and the high-water marks of the pull and of its children (the compaction) in ``peaks``."""

    def poll() -> None:
        with open(out, "w") as sink:
            while True:
                own = _status_mb(pid)
                if own is None:
                    return
                peaks["pull"] = max(peaks["pull"], own["VmHWM"])
                for child in _children(pid):
                    mb = _status_mb(child)
                    if mb is not None:
                        peaks["child"] = max(peaks["child"], mb["VmHWM"])
                sink.write(f"{time.perf_counter() - started:.2f}\t{own['VmRSS']:.1f}\n")
                time.sleep(RSS_POLL_SECONDS)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread


def _summary(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    return None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def table(results: list[Result]) -> str:
    lines = [
        "| jobs | rows | compaction | wall s | jobs/s | run jobs/s | CPU ms/job | peak RSS MB "
        "| child MB | tree MB | sim CPU (1 core) | machine busy | other load | store MB |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.done:,} | {r.rows:,} | {'on' if r.compacted else 'off'} "
            f"| {r.wall_seconds:.1f} | {r.jobs_per_second:,.0f} | {r.run_jobs_per_second:,.0f} "
            f"| {r.cpu_ms_per_job:.2f} | {r.peak_rss_mb:.0f} | {r.child_peak_rss_mb:.0f} "
            f"| {r.tree_peak_rss_mb:.0f} | {r.sim_cpu_share:.0%} "
            f"| {r.machine_busy:.0%} | {r.other_cores:.2f} cores | {r.store_mb:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, action="append", help="jobs per run (repeatable)")
    parser.add_argument("--phones", type=int, default=DEFAULT_PHONES, help="numbers served")
    parser.add_argument("--flush-jobs", type=int, default=Settings.flush_jobs)
    parser.add_argument("--flush-seconds", type=float, default=Settings.flush_seconds)
    parser.add_argument(
        "--no-compact", action="store_true", help="store.auto_compact = false (the pull alone)"
    )
    parser.add_argument("--work", type=Path, help="folder for the stores (default: a temp one)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="profile the (last) pull into this file: cProfile if it ends in .prof, else "
        "py-spy's collapsed stacks (a profiled run's figures are not comparable)",
    )
    args = parser.parse_args(argv)
    sizes = args.jobs or list(DEFAULT_JOBS)
    run = Settings(args.phones, args.flush_jobs, args.flush_seconds, not args.no_compact)
    print(f"machine: {machine()}", flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="harvester-pipeline-") as temp:
        work = args.work or Path(temp)
        for i, jobs in enumerate(sizes):
            profile = args.profile if i == len(sizes) - 1 else None
            results.append(run_one(jobs, work, run, profile))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
