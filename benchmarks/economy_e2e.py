"""Request economy end to end: real pulls and syncs over loopback, economy on vs off.

Run from the repo root (``make install`` done)::

    .venv/bin/python benchmarks/economy_e2e.py          # a Markdown table (about a minute)
    .venv/bin/python benchmarks/economy_e2e.py --json

Each scenario runs ``harvester pull``/``sync`` as a user would (a subprocess, ``--today``
fixed) against the simulator serving on a free loopback port with the quota lifted, once with
``harvest.economy = "off"`` (day by day) and once with ``"auto"``, each into a fresh store.
Requests are the simulator's own request log (data requests only). Every stored day is compared
with the simulator's day-by-day truth, and a second run of the last command must send nothing.
Exit status 1 if a target of issue 14 is missed, a day differs, or a second run sent anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harvester.simulator import Shape, SimulatorServer, SimulatorSettings

TODAY = dt.date(2024, 7, 1)
QUARTER = (dt.date(2024, 4, 1), dt.date(2024, 6, 30))
YEAR = (dt.date(2023, 7, 1), dt.date(2024, 6, 30))
SYNCS = 10  # daily syncs of the sync scenarios, after a backfill of May
LOOKBACK_DAYS = 3
PASSWORD_ENV = "VT_BENCH_PASSWORD"


def numbers(n: int) -> tuple[str, ...]:
    return tuple(f"61755501{k:02d}" for k in range(10, 10 + n))  # 555-01xx: fictional


@dataclass
class Result:
    scenario: str
    target: float
    day_by_day: int = 0
    economy: int = 0
    seconds_off: float = 0.0
    seconds_on: float = 0.0
    equal_to_truth: bool = True
    second_run_requests: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.economy / self.day_by_day if self.day_by_day else 0.0

    @property
    def ok(self) -> bool:
        return self.ratio <= self.target and self.equal_to_truth and not self.second_run_requests


def config(folder: Path, sim: SimulatorServer, phones: tuple[str, ...], start: dt.date,
           end: dt.date | None, economy: str) -> Path:  # fmt: skip
    login, _ = sim.credentials
    end_line = f"end = {end.isoformat()}" if end else ""
    path = folder / "config.toml"
    path.write_text(
        f"""[api]
base_url = "{sim.base_url}"
login = "{login}"
password_env = "{PASSWORD_ENV}"
concurrency = 4
[quota]
limit = 1000000000
window_seconds = 60
[harvest]
phones = {json.dumps(list(phones))}
start = {start.isoformat()}
{end_line}
lookback_days = {LOOKBACK_DAYS}
timezone = "UTC"
economy = "{economy}"
[store]
path = "store"
"""
    )
    path.chmod(0o600)
    return path


def run(sim: SimulatorServer, cfg: Path, command: str, today: dt.date) -> tuple[int, float]:
    """Data requests one CLI run sent, and its wall time."""
    sim.settings.today = today
    mark = len(sim.log)
    env = {**os.environ, PASSWORD_ENV: sim.credentials[1]}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harvester",
            "-q",
            command,
            "-c",
            str(cfg),
            "--today",
            today.isoformat(),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command} failed: {done.stderr.strip()}")
    sent = sum(1 for e in sim.log.entries()[mark:] if e.path.startswith("/path/"))
    return sent, seconds


def equal_to_truth(store: Path, sim: SimulatorServer, phones: tuple[str, ...],
                   start: dt.date, end: dt.date) -> bool:  # fmt: skip
    from harvester.analysis import connect

    con = connect(store)
    try:
        got = con.execute(
            "SELECT phone, window_start, application, page, form, item, visits, filled, "
            "nomatch, noinput, transfer, disconnect FROM diagnostic_flow"
        ).fetchall()
    finally:
        con.close()
    stored: dict[tuple[str, dt.date], set[tuple[object, ...]]] = {}
    for row in got:
        stored.setdefault((row[0], row[1]), set()).add(tuple(row[2:]))
    day = start
    while day <= end:
        for phone in phones:
            if stored.get((phone, day), set()) != sim.truth_rows(phone, day, day):
                return False
        day += dt.timedelta(days=1)
    return len(got) == sum(len(v) for v in stored.values())


Steps = Callable[[SimulatorServer, Path], tuple[int, float, dt.date]]


def pull_steps(start: dt.date, end: dt.date) -> Steps:
    def steps(sim: SimulatorServer, cfg: Path) -> tuple[int, float, dt.date]:
        sent, seconds = run(sim, cfg, "pull", TODAY)
        return sent, seconds, end

    return steps


def sync_steps() -> Steps:
    """A backfill sync on 06-01 (not counted), then SYNCS daily syncs (counted)."""

    def steps(sim: SimulatorServer, cfg: Path) -> tuple[int, float, dt.date]:
        first = dt.date(2024, 6, 1)
        run(sim, cfg, "sync", first)
        sent = 0
        seconds = 0.0
        for k in range(1, SYNCS + 1):
            n, s = run(sim, cfg, "sync", first + dt.timedelta(days=k))
            sent, seconds = sent + n, seconds + s
        return sent, seconds, first + dt.timedelta(days=SYNCS - 1)

    return steps


def scenario(name: str, target: float, settings: SimulatorSettings, start: dt.date,
             end: dt.date | None, steps: Steps) -> Result:  # fmt: skip
    from harvester.store.provenance import provenance_counts

    result = Result(name, target)
    phones = settings.phones
    for economy in ("off", "auto"):
        with tempfile.TemporaryDirectory() as tmp, SimulatorServer(settings) as sim:
            cfg = config(Path(tmp), sim, phones, start, end, economy)
            sent, seconds, last = steps(sim, cfg)
            store = Path(tmp) / "store"
            result.equal_to_truth &= equal_to_truth(store, sim, phones, start, last)
            command = "pull" if end else "sync"
            again, _ = run(sim, cfg, command, sim.settings.today or TODAY)
            result.second_run_requests += again
            if economy == "off":
                result.day_by_day, result.seconds_off = sent, seconds
            else:
                result.economy, result.seconds_on = sent, seconds
                result.kinds = provenance_counts(store)
    return result


def scenarios() -> list[Result]:
    two = numbers(2)
    four = numbers(4)
    ten = numbers(10)
    shapes4 = {
        four[0]: Shape.busy(),
        four[1]: Shape.never(),
        four[2]: Shape.weekdays(),
        four[3]: Shape.starting(dt.date(2024, 5, 16)),
    }
    base = {"today": TODAY, "limit": 10**9, "window_seconds": 60}
    busy = {p: Shape.busy() for p in two}
    may = dt.date(2024, 5, 1)
    return [
        scenario(
            "busy every day (2 numbers x a quarter)",
            1.05,
            SimulatorSettings(phones=two, shapes=busy, **base),  # type: ignore[arg-type]
            *QUARTER,
            pull_steps(*QUARTER),
        ),
        scenario(
            "quarter: dense, idle, weekdays, late start",
            0.65,
            SimulatorSettings(phones=four, shapes=shapes4, **base),  # type: ignore[arg-type]
            *QUARTER,
            pull_steps(*QUARTER),
        ),
        scenario(
            "ten numbers, nine idle, a year",
            0.12,
            SimulatorSettings(
                phones=ten,
                shapes={p: Shape.never() for p in ten[1:]},
                **base,  # type: ignore[arg-type]
            ),
            *YEAR,
            pull_steps(*YEAR),
        ),
        scenario(
            f"{SYNCS} daily syncs, nothing changed",
            0.5,
            SimulatorSettings(phones=two, shapes=busy, **base),  # type: ignore[arg-type]
            may,
            None,
            sync_steps(),
        ),
        scenario(
            f"{SYNCS} daily syncs, yesterday growing",
            0.75,
            SimulatorSettings(phones=two, shapes=busy, settle_days=2, **base),  # type: ignore[arg-type]
            may,
            None,
            sync_steps(),
        ),
        scenario(
            "non-additive server (quarter, 4 shapes)",
            1.10,
            SimulatorSettings(phones=four, shapes=shapes4, non_additive=1.0, **base),  # type: ignore[arg-type]
            *QUARTER,
            pull_steps(*QUARTER),
        ),
    ]


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | day by day | economy | ratio | target | wall s (off / on) "
        "| days by provenance | = truth | 2nd run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.kinds.items()))
        lines.append(
            f"| {r.scenario} | {r.day_by_day} | {r.economy} | {r.ratio:.3f} | <= {r.target} "
            f"| {r.seconds_off:.1f} / {r.seconds_on:.1f} | {kinds} "
            f"| {'yes' if r.equal_to_truth else 'NO'} | {r.second_run_requests} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = scenarios()
    if args.json:
        print(json.dumps([{**asdict(r), "ratio": r.ratio, "ok": r.ok} for r in results], indent=2))
    else:
        print(table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
