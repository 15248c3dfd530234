"""Soak: a long pull through a faulty server, checked job by job, with the memory it took.

Run from the repo root (the package must be importable, e.g. in ``.venv``)::

    python benchmarks/soak.py                  # 2,000 then 20,000 jobs (about 2 minutes)
    python benchmarks/soak.py --jobs 40        # seconds (tests/test_faults.py runs this)
    python benchmarks/soak.py --json out.json  # the figures as JSON too

Each size is one real ``python -m harvester pull -c CONFIG --json`` in a subprocess, into a
fresh store, against ``python -m harvester simulate`` in another process with the quota lifted
and faults on (2% 500s, 1% dropped connections, 1% malformed bodies). The simulator serves three
numbers; with ALL that is four jobs a day, so N jobs span N/4 days back from yesterday.

Per size it reports:

- the pull's exit code and summary (done, failed, requests, retries, quarantined);
- ``peak RSS``: the pull process's high-water mark (``wait4`` rusage ``ru_maxrss``), at the
  small size (a tenth of ``--jobs``) and at ``--jobs``: memory is bounded by the batch
  (``store.flush_jobs``), so the two must be close, not ten times apart;
- ``CPU ms/job``: the pull's user + system CPU / jobs;
- correctness, from the store alone (the simulator's log is in another process): every job has
  exactly one ``done`` ledger record and exactly one valid raw reply (done exactly once, never
  fetched successfully twice), no job is failed or missing, no (job, item) row is visible
  twice, and a random sample of jobs holds exactly the simulator's ground truth, computed by a
  twin :class:`~harvester.simulator.Simulator` with the same seed.

Exit status 0 only if every check held at every size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    LIFTED_LIMIT,
    WINDOW_SECONDS,
    free_port,
    start_serving,
    stop,
    write_lifted_config,
)

from harvester.simulator import Simulator, SimulatorSettings
from harvester.simulator.settings import DEFAULT_PHONES

DEFAULT_JOBS = 20_000  # the size; the small run is a tenth of it
SMALL_FRACTION = 10
FAULTS = {"error-rate": 0.02, "drop-rate": 0.01, "malformed-rate": 0.01}  # the mix
SEED = 0  # `harvester simulate`'s default seed: the twin's ground truth must use the same
CONCURRENCY = 4  # the config default
FLUSH_JOBS = 500  # the config default: the batch that bounds memory
FLUSH_SECONDS = 2.0  # the config default
SAMPLE_JOBS = 400  # jobs compared row by row with the ground truth
PASSWORD_ENV = "HARVESTER_SOAK_PASSWORD"
SIMULATOR_START_SECONDS = 30
MIN_PULL_TIMEOUT_SECONDS = 120  # plus PULL_SECONDS_PER_JOB per job: a hung run is a failure
PULL_SECONDS_PER_JOB = 0.05
RSS_POLL_SECONDS = 0.25  # resolution of the RSS timeline (is memory flat over the run?)


@dataclass
class Result:
    jobs: int
    exit_code: int
    wall_seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    cpu_ms_per_job: float
    summary: dict[str, Any]
    rss_mb_at: dict[str, float] = field(default_factory=dict)  # resident set at 25..100% of run
    ledger_done: int = 0
    jobs_done_more_than_once: int = 0
    jobs_fetched_more_than_once: int = 0
    jobs_not_done: int = 0
    duplicate_rows: int = 0
    quarantined: int = 0
    sampled: int = 0
    sample_mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def start_simulator(env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str, str]:
    """``harvester simulate`` in its own process; returns it, its base URL, login, password."""
    port = free_port()
    command = [sys.executable, "-m", "harvester", "simulate", "--port", str(port)]
    command += ["--limit", str(LIFTED_LIMIT), "--window-seconds", str(WINDOW_SECONDS)]
    command += ["--seed", str(SEED)]
    for flag, rate in FAULTS.items():
        command += [f"--{flag}", str(rate)]
    proc, printed = start_serving(command, env, SIMULATOR_START_SECONDS)
    login = password = ""
    for line in printed:
        words = line.split()
        if words[:2] == ["temporary", "login"]:
            login, password = words[2], words[4]
    return proc, f"http://127.0.0.1:{port}/api", login, password


def plan_for(jobs: int, today: dt.date) -> tuple[list[str], dt.date, dt.date]:
    """Phones and days for ``jobs`` jobs ending yesterday: four phones when N divides by 4."""
    phones = [*DEFAULT_PHONES, "ALL"] if jobs % 4 == 0 else ["ALL"]
    days = jobs // len(phones)
    end = today - dt.timedelta(days=1)
    return phones, end - dt.timedelta(days=days - 1), end


def write_config(folder: Path, base_url: str, login: str, phones: list[str],
                 start: dt.date, end: dt.date) -> Path:  # fmt: skip
    return write_lifted_config(
        folder,
        base_url=base_url,
        login=login,
        password_env=PASSWORD_ENV,
        phones=phones,
        start=start,
        end=end,
        concurrency=CONCURRENCY,
        store_path="store",
        flush_jobs=FLUSH_JOBS,
        flush_seconds=FLUSH_SECONDS,
        auto_compact=False,  # keep every ledger record and raw reply for the checks
    )


def run_pull(jobs: int, work: Path) -> Result:
    """One pull of ``jobs`` jobs into a fresh store, measured, then checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    today = dt.datetime.now(dt.UTC).date()  # the simulator's today (UTC, no skew)
    phones, start, end = plan_for(jobs, today)
    folder = work / f"soak-{jobs}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sim, base_url, login, password = start_simulator(env)
    env[PASSWORD_ENV] = password
    try:
        config = write_config(folder, base_url, login, phones, start, end)
        command = [sys.executable, "-m", "harvester", "-q", "pull", "-c", str(config)]
        command += ["--json", "--today", today.isoformat()]
        timeout = MIN_PULL_TIMEOUT_SECONDS + PULL_SECONDS_PER_JOB * jobs
        started = time.perf_counter()
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=folder)
            samples: list[tuple[float, float]] = []
            poller = poll_rss(proc.pid, samples)
            code, usage = wait_with_timeout(proc, timeout)
            poller.join()
        wall = time.perf_counter() - started
    finally:
        stop(sim)
    summary = last_json((folder / "stdout").read_text()) or {}
    cpu = usage.ru_utime + usage.ru_stime if usage is not None else float("nan")
    result = Result(
        jobs=jobs,
        exit_code=code,
        wall_seconds=wall,
        peak_rss_mb=usage.ru_maxrss / 1024 if usage is not None else float("nan"),
        cpu_seconds=cpu,
        cpu_ms_per_job=1000 * cpu / jobs,
        summary=summary,
        rss_mb_at=timeline(samples),
    )
    if code != 0:
        stderr = (folder / "stderr").read_text()[-1000:]
        result.problems.append(f"pull exited {code}: {stderr}")
        if usage is None:
            return result
    check_store(folder / "store", phones, start, end, result)
    return result


def poll_rss(pid: int, samples: list[tuple[float, float]]) -> threading.Thread:
    """Append (seconds, VmRSS MB) of ``pid`` every RSS_POLL_SECONDS until it exits."""

    def poll() -> None:
        started = time.perf_counter()
        while True:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if "VmRSS" not in fields:  # a zombie: exited, not yet reaped
                return
            samples.append((time.perf_counter() - started, int(fields["VmRSS"].split()[0]) / 1024))
            time.sleep(RSS_POLL_SECONDS)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread


def timeline(samples: list[tuple[float, float]]) -> dict[str, float]:
    """The largest resident set seen up to 25, 50, 75 and 100% of the run's time."""
    if not samples:
        return {}
    end = samples[-1][0]
    return {
        f"{share}%": max(mb for at, mb in samples if at <= end * share / 100)
        for share in (25, 50, 75, 100)
    }


def wait_with_timeout(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, Any]:
    """Exit code and this child's rusage (``wait4``: CPU and ru_maxrss); kills a hung pull."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            return code, usage
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return -9, None


def check_store(store: Path, phones: list[str], start: dt.date, end: dt.date, r: Result) -> None:
    """Done exactly once, nothing missing or doubled, and a sample equal to the ground truth."""
    from harvester.analysis import connect

    con = connect(store)
    try:
        r.ledger_done = one(con, "SELECT count(*) FROM ledger_current")
        r.jobs_done_more_than_once = one(
            con,
            "SELECT count(*) FROM (SELECT phone, period FROM ledger_files WHERE state = 'done' "
            "GROUP BY ALL HAVING count(*) > 1)",
        )
        r.jobs_fetched_more_than_once = one(
            con,
            "SELECT count(*) FROM (SELECT phone, period FROM raw_replies WHERE valid "
            "GROUP BY ALL HAVING count(*) > 1)",
        )
        r.jobs_not_done = one(
            con, "SELECT count(*) FROM ledger_latest WHERE state <> 'done'"
        ) + max(0, r.jobs - one(con, "SELECT count(*) FROM ledger_latest"))
        r.duplicate_rows = one(
            con,
            "SELECT count(*) FROM (SELECT phone, window_start, window_end, application, page, "
            "form, item FROM diagnostic_flow GROUP BY ALL HAVING count(*) > 1)",
        )
        r.quarantined = one(con, "SELECT count(*) FROM raw_replies WHERE quarantined")
        rng = random.Random(r.jobs)
        days = (end - start).days + 1
        keys = {(rng.choice(phones), start + dt.timedelta(rng.randrange(days))) for _ in range(
            min(SAMPLE_JOBS, r.jobs))}  # fmt: skip
        twin = Simulator(SimulatorSettings(seed=SEED))
        for phone, day in sorted(keys):
            got = con.execute(
                "SELECT application, page, form, item, visits, filled, nomatch, noinput, "
                "transfer, disconnect FROM diagnostic_flow "
                "WHERE phone = ? AND window_start = ? AND window_end = ?",
                [phone, day, day],
            ).fetchall()
            r.sampled += 1
            rows = [tuple(row) for row in got]
            if len(rows) != len(set(rows)) or set(rows) != twin.truth_rows(phone, day, day):
                r.sample_mismatches += 1
    finally:
        con.close()
    if r.ledger_done != r.jobs:
        r.problems.append(f"{r.ledger_done} jobs done in the ledger, not {r.jobs}")
    for name in (
        "jobs_done_more_than_once",
        "jobs_fetched_more_than_once",
        "jobs_not_done",
        "duplicate_rows",
        "sample_mismatches",
    ):
        if getattr(r, name):
            r.problems.append(f"{name}: {getattr(r, name)}")


def one(con: Any, sql: str) -> int:
    return int(con.execute(sql).fetchone()[0])


def last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    return None


def report(results: list[Result]) -> str:
    lines = [
        "| jobs | exit | wall s | peak RSS MB | RSS MB at 25/50/75% | CPU ms/job | requests "
        "| retries | quarantined "
        "| done once | fetched twice | not done | dup rows | sample = truth |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for r in results:
        s = r.summary
        at = "/".join(f"{r.rss_mb_at[k]:.0f}" for k in ("25%", "50%", "75%") if k in r.rss_mb_at)
        lines.append(
            f"| {r.jobs:,} | {r.exit_code} | {r.wall_seconds:.1f} | {r.peak_rss_mb:.0f} "
            f"| {at or '-'} | {r.cpu_ms_per_job:.2f} | {s.get('requests', 0):,} "
            f"| {s.get('retries', 0):,} "
            f"| {r.quarantined:,} | {r.ledger_done - r.jobs_done_more_than_once:,} "
            f"| {r.jobs_fetched_more_than_once} | {r.jobs_not_done} | {r.duplicate_rows} "
            f"| {r.sampled - r.sample_mismatches}/{r.sampled} |"
        )
    if len(results) == 2 and results[0].peak_rss_mb:
        growth = results[1].peak_rss_mb / results[0].peak_rss_mb
        lines.append("")
        lines.append(
            f"peak RSS x{growth:.2f} for x{results[1].jobs / results[0].jobs:.0f} the jobs"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="jobs of the big run")
    parser.add_argument("--work", type=Path, help="folder for the stores (default: temporary)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    sizes = sorted({max(1, args.jobs // SMALL_FRACTION), args.jobs})
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="harvester-soak-") as temp:
        work = args.work or Path(temp)
        for jobs in sizes:
            result = run_pull(jobs, work)
            results.append(result)
            print(report([result]).splitlines()[-1], flush=True)
            for problem in result.problems:
                print(f"  problem: {problem}", flush=True)
    print()
    print(report(results))
    if args.json:
        data = [{**asdict(r), "ok": r.ok} for r in results]
        args.json.write_text(json.dumps(data, indent=2, default=str))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
