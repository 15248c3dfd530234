"""How close does the harvester come to the quota's physical limit, and how do naive ways fare?

Run from the repo root (the package must be importable, e.g. in ``.venv``)::

    python benchmarks/quota.py            # full: six scenarios, about five minutes
    python benchmarks/quota.py --quick    # smaller windows and plans, about a minute
    python benchmarks/quota.py --tiny     # two scenarios in seconds (the test suite runs this)

Every scenario runs five clients *at the same moment*, each against its own fresh simulator (so
each has the whole quota) with identical settings, over loopback HTTP, starting half-way through
a server window (``START_PHASE``) with that window's whole limit ``L`` remaining:

- ``harvester``: the real library, ``await harvest(config, plan)``, into a fresh store
  (concurrency 4; the default retry backoff compressed like the window, ``x W / 900 s``);
- ``(a) sleep W/L``: one request at a time, sleeping ``W / L`` after each reply;
- ``(b) aiolimiter``: ``aiolimiter.AsyncLimiter(L, W)`` alone, with 4 workers;
- ``(c) backoff on 429``: 4 workers, no pacing, full-jitter exponential backoff after a 429
  (base ``W / L``, cap ``W``);
- ``(d) sleep to Reset``: one request at a time; when a reply says 429 or ``Remaining: 0``,
  sleep until ``X-RateLimit-Reset`` by the *local* clock.

Naive clients validate bodies with the harvester's parser and retry faults at once, so they
fetch the same data; aiohttp's silent re-send of a dropped GET is off for every client, so every
request is the client's own decision. A client still running at its deadline (``CAP_FACTOR``
times the minimum, plus 2 s) is stopped and reported with the jobs it finished.

Scenarios (``L`` requests per ``W`` seconds; ``N`` jobs, about ``L * N_OVER_L`` of them):

- ``clean``: replies in 20-30 ms;
- ``slow``: replies in ``SLOW_LATENCY`` + up to ``SLOW_JITTER`` s, so latency x L > W: a
  window's budget cannot be spent one request at a time, and the server's clock is only known
  to about one reply latency (the simulator stamps ``Date`` when a request arrives);
- ``shared``: another tool of the account spends L/3 of every window at seeded random moments;
- ``skew +3s`` / ``skew -3s``: the server's clock is 3 s ahead of / behind ours;
- ``faults``: 10% 500s, 5% dropped connections, 3% truncated and 2% malformed bodies.

The physical minimum
--------------------
The server counts a request when it arrives. Windows are ``[kW, (k+1)W)`` on the server's clock;
one arriving at server time ``t`` is accepted iff ``own(k) + other(t) < L``, where ``own(k)`` is
what we already had accepted in that window and ``other(t)`` what other tools have spent in it by
``t`` (never decreasing within a window). A client that knows the server's clock, every other
tool's spending and the fates of its requests, with ``C = 4`` connections each busy for one reply
latency per request (the simulator's fixed ``latency`` plus the jitter it draws for its n-th
counted request, seeded by ``n`` like the request's fate, so every client meets the same ones),
needs ``M`` accepted requests: ``M = N`` jobs, plus, in ``faults``, the faulty replies the server
hands out before the N-th valid one (the n-th counted request's fate is seeded by ``n``, the same
for every client, so ``M`` is the count of non-429 requests a client that never gives up sends).
Sending greedily (each free connection sends at once if the window accepts, else at the next
window's start) is optimal without jitter, as requests are interchangeable and ``other`` only
grows within a window; with jitter it is the schedule we take as the minimum. The minimum is the
time from the start ``t0`` until the M-th reply arrives: :func:`physical_minimum`. With no other
tool, no jitter and ``C * W / l >= L`` it has a closed form: with ``R`` (``= L`` here) left in
the window that ends ``d`` after ``t0``, the last request goes at ``0`` if ``M <= R``, else at
``d + (ceil((M - R) / L) - 1) * W``, and the replies to the last window's ``m`` requests take
``ceil(m / C)`` reply latencies ``l`` more.

Targets for the harvester (the issue's): clean, slow and skewed within 3% of the minimum plus one
reply latency (``latency + jitter``), zero 429s and zero wasted requests; shared at most
``concurrency`` 429s per surprise (one per window touched) and within 5% of the minimum that the
budget the other tool leaves allows. Wasted = requests sent beyond one per job (429s, faults'
retries). ``faults`` has no target: its wasted requests are the retries the faults force (shown).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import heapq
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

from harvester.api.reply import parse_reply
from harvester.config import ApiConfig, Config, HarvestConfig, QuotaConfig, Secret, StoreConfig
from harvester.errors import ReplyError
from harvester.jobs import Grain
from harvester.plan import pull_plan
from harvester.scheduler import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, RetryPolicy, harvest
from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.simulator.quota import AccountQuota
from harvester.simulator.sampling import seeded_rng

CONCURRENCY = 4  # the harvester's default, and the workers of (b) and (c)
START_PHASE = 0.5  # every run starts this far into a server window (as a fraction of it)
N_OVER_L = 2.2  # jobs per window's limit (full mode): two resets to cross
CAP_FACTOR = 3.0  # a client is stopped at CAP_FACTOR x the minimum + CAP_SLACK_SECONDS
CAP_SLACK_SECONDS = 2.0
CLEAN_LATENCY, CLEAN_JITTER = 0.02, 0.01  # loopback plus a little server work
SLOW_LATENCY, SLOW_JITTER = 0.12, 0.06  # latency x L > W in every mode below
SKEW_SECONDS = 3.0
REQUEST_TIMEOUT_SECONDS = 10.0
CLEAN_TOLERANCE, SHARED_TOLERANCE = 0.03, 0.05  # the targets
REAL_WINDOW_SECONDS = 900.0  # the API's window, which the modes below compress
TODAY = dt.date(2024, 6, 1)  # the simulator's today: every planned day has its data
FIRST_DAY = dt.date(2024, 1, 1)


@dataclass(frozen=True)
class Mode:
    limit: int  # L
    window: int  # W, seconds (whole: the simulator rounds its Reset up)
    days: int  # jobs = days x (3 phones + ALL)
    scenarios: tuple[str, ...]
    cap_factor: float = CAP_FACTOR


ALL_SCENARIOS = ("clean", "slow", "shared", "skew +3s", "skew -3s", "faults")
MODES = {
    "full": Mode(limit=120, window=12, days=66, scenarios=ALL_SCENARIOS),  # 264 jobs
    "quick": Mode(limit=40, window=4, days=15, scenarios=ALL_SCENARIOS, cap_factor=2.0),  # 60
    "tiny": Mode(limit=12, window=2, days=5, scenarios=("clean", "faults"), cap_factor=2.0),
}


def scenario_settings(name: str, mode: Mode) -> SimulatorSettings:
    """The simulator knobs of one scenario (every client gets its own server with these)."""
    base = SimulatorSettings(
        limit=mode.limit,
        window_seconds=mode.window,
        today=TODAY,
        latency=CLEAN_LATENCY,
        jitter=CLEAN_JITTER,
        seed=11,
    )
    if name == "slow":
        return replace(base, latency=SLOW_LATENCY, jitter=SLOW_JITTER)
    if name == "shared":
        return replace(base, other_client_spend=mode.limit // 3)
    if name.startswith("skew"):
        return replace(base, clock_skew=float(name.split()[1].rstrip("s")))
    if name == "faults":
        return replace(
            base, error_rate=0.10, drop_rate=0.05, truncate_rate=0.03, malformed_rate=0.02
        )
    assert name == "clean", name
    return base


# -- the physical minimum ---------------------------------------------------------------------


def reply_latency(settings: SimulatorSettings, n: int) -> float:
    """The simulator's delay before answering its n-th counted request (jitter seeded by n)."""
    jitter = seeded_rng(settings.seed, "request", n).uniform(0.0, settings.jitter)
    return settings.latency + (jitter if settings.jitter else 0.0)


def physical_minimum(settings: SimulatorSettings, t0: float, requests: int) -> float:
    """Seconds from server time ``t0`` until ``requests`` accepted requests have been answered by
    a client that knows everything (see the module docstring); greedy sending is optimal."""
    window, limit = settings.window_seconds, settings.limit
    others = AccountQuota()  # never spent on: its "used" is the other tool's alone

    def other(t: float) -> int:
        return others.data(settings, t, spend=False)[0].used

    own: Counter[int] = Counter()
    slots = [t0] * CONCURRENCY
    finish = t0
    for n in range(1, requests + 1):
        t = heapq.heappop(slots)
        while own[k := math.floor(t / window)] + other(t) >= limit:
            t = (k + 1) * window
        own[k] += 1
        answered = t + reply_latency(settings, n)
        heapq.heappush(slots, answered)
        finish = max(finish, answered)
    return finish - t0


# -- the clients --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one client did, as it saw it; the server's log adds the rest."""

    done: int = 0
    finished_at: float | None = None  # time.monotonic() when the last job was done


@dataclass(frozen=True)
class Target:
    base_url: str
    auth: str  # the Authorization header of the preset temporary credentials
    paths: tuple[str, ...]
    limit: int
    window: float


def _new_session() -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
    )
    session._retry_connection = False  # every send is the client's decision (see docstring)
    return session


async def _get(
    session: aiohttp.ClientSession, target: Target, path: str
) -> tuple[int | None, dict[str, str], bool]:
    """One GET: (status or None, headers, whether the job is done)."""
    try:
        async with session.get(
            target.base_url + path,
            headers={"Authorization": target.auth, "Accept": "application/json"},
        ) as resp:
            headers = dict(resp.headers)
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        return None, {}, False
    if resp.status != 200:
        return resp.status, headers, False
    try:
        parse_reply(body)
    except ReplyError:
        return 200, headers, False
    return 200, headers, True


async def _workers(jobs: list[str], count: int, work: Callable[[str], Awaitable[None]]) -> None:
    queue = iter(jobs)

    async def worker() -> None:
        for path in queue:
            await work(path)

    await asyncio.gather(*(worker() for _ in range(count)))


def _done(outcome: Outcome, total: int) -> None:
    outcome.done += 1
    if outcome.done == total:
        outcome.finished_at = time.monotonic()


async def naive_sleep(target: Target, outcome: Outcome) -> None:
    """(a) One request at a time, sleeping W/L after each reply."""
    async with _new_session() as session:
        for path in target.paths:
            while True:
                _, _, ok = await _get(session, target, path)
                await asyncio.sleep(target.window / target.limit)
                if ok:
                    _done(outcome, len(target.paths))
                    break


async def naive_aiolimiter(target: Target, outcome: Outcome) -> None:
    """(b) AsyncLimiter(L, W) alone with 4 workers; any failure is retried through it."""
    limiter = AsyncLimiter(target.limit, target.window)
    async with _new_session() as session:

        async def work(path: str) -> None:
            while True:
                async with limiter:
                    _, _, ok = await _get(session, target, path)
                if ok:
                    _done(outcome, len(target.paths))
                    return

        await _workers(list(target.paths), CONCURRENCY, work)


async def naive_backoff(target: Target, outcome: Outcome) -> None:
    """(c) 4 workers, no pacing; full-jitter exponential backoff after each 429."""
    rng = random.Random(5)
    base, cap = target.window / target.limit, target.window
    async with _new_session() as session:

        async def work(path: str) -> None:
            refusals = 0
            while True:
                status, _, ok = await _get(session, target, path)
                if ok:
                    _done(outcome, len(target.paths))
                    return
                if status == 429:
                    refusals += 1
                    await asyncio.sleep(rng.uniform(0, min(cap, base * 2**refusals)))

        await _workers(list(target.paths), CONCURRENCY, work)


async def naive_reset(target: Target, outcome: Outcome) -> None:
    """(d) One at a time; on a 429 or Remaining 0, sleep until Reset by the local clock."""
    async with _new_session() as session:
        for path in target.paths:
            while True:
                status, headers, ok = await _get(session, target, path)
                if ok:
                    _done(outcome, len(target.paths))
                if status == 429 or headers.get("X-RateLimit-Remaining") == "0":
                    reset = float(headers.get("X-RateLimit-Reset", "0"))
                    await asyncio.sleep(max(0.0, reset - time.time()))
                if ok:
                    break


async def run_harvester(target: Target, outcome: Outcome, store: Path, mode: Mode) -> None:
    """The real library, as a user calls it from Python."""
    phones = (*SimulatorSettings().phones, "ALL")
    login, password = SimulatorSettings().temp_login, SimulatorSettings().temp_password
    assert login is not None and password is not None
    last = FIRST_DAY + dt.timedelta(days=mode.days - 1)
    config = Config(
        api=ApiConfig(
            base_url=target.base_url,
            login=login,
            password=Secret(password),
            concurrency=CONCURRENCY,
            timeout_seconds=REQUEST_TIMEOUT_SECONDS,
            max_attempts=20,
        ),
        quota=QuotaConfig(limit=target.limit, window_seconds=target.window),
        harvest=HarvestConfig(phones=phones, start=FIRST_DAY, end=last, window=Grain.DAY),
        store=StoreConfig(path=store, auto_compact=False),
    )

    class Counting:
        def started(self, *args: Any) -> None: ...
        def tick(self, *args: Any) -> None: ...
        def finished(self, *args: Any) -> None: ...

        def job_finished(self, job: Any, state: str, rows: int) -> None:
            if state == "done":
                _done(outcome, len(target.paths))

    # the run is time-compressed (a 900 s window becomes W): so is the retry backoff
    scale = target.window / REAL_WINDOW_SECONDS
    retry = RetryPolicy(20, BACKOFF_BASE_SECONDS * scale, BACKOFF_CAP_SECONDS * scale)
    await harvest(
        config,
        pull_plan(phones, FIRST_DAY, last, Grain.DAY),
        progress=Counting(),
        retry=retry,
    )


APPROACHES: tuple[tuple[str, Callable[..., Awaitable[None]]], ...] = (
    ("harvester", run_harvester),
    ("(a) sleep W/L", naive_sleep),
    ("(b) aiolimiter", naive_aiolimiter),
    ("(c) backoff on 429", naive_backoff),
    ("(d) sleep to Reset", naive_reset),
)


# -- one scenario -------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    approach: str
    wall: float
    minimum: float
    done: int
    jobs: int
    throttled: int
    requests: int
    forced: int = 0  # requests the server's faults forced beyond one per job (faults only)
    capped: bool = False
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def wasted(self) -> int:
        return self.requests - self.done


def _paths(mode: Mode) -> tuple[str, ...]:
    phones = (*SimulatorSettings().phones, "ALL")
    last = FIRST_DAY + dt.timedelta(days=mode.days - 1)
    return tuple(job.path for job in pull_plan(phones, FIRST_DAY, last, Grain.DAY).jobs())


async def run_scenario(name: str, mode: Mode, workdir: Path) -> list[Row]:
    settings = scenario_settings(name, mode)
    paths = _paths(mode)
    servers = [SimulatorServer(replace(settings)).start() for _ in APPROACHES]
    try:
        # everyone starts together at START_PHASE into a window of the server's clock
        server_now = time.time() + settings.clock_skew
        window = settings.window_seconds
        t0 = (math.floor(server_now / window) + 1 + START_PHASE) * window
        if t0 - server_now > window:
            t0 -= window
        expected = physical_minimum(settings, t0, len(paths))
        cap = mode.cap_factor * expected + CAP_SLACK_SECONDS
        await asyncio.sleep(t0 - server_now)
        started = time.monotonic()
        outcomes = [Outcome() for _ in APPROACHES]
        tasks = []
        for (label, client), server, outcome in zip(APPROACHES, servers, outcomes, strict=True):
            login, password = server.credentials
            token = base64.b64encode(f"{login}:{password}".encode()).decode()
            target = Target(server.base_url, f"Basic {token}", paths, mode.limit, window)
            args: list[Any] = [target, outcome]
            if label == "harvester":
                args += [workdir / f"{name.replace(' ', '_')}-store", mode]
            tasks.append(asyncio.create_task(client(*args)))
        await asyncio.wait(tasks, timeout=cap)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for server in servers:
            server.stop()
    logs = [[e for e in s.log.entries() if e.path.startswith("/path/")] for s in servers]
    counted = [sum(e.status != 429 for e in log) for log in logs]
    # faults: M is the same for every client that finished (the n-th request's fate is seeded)
    finished = [c for c, o in zip(counted, outcomes, strict=True) if o.finished_at is not None]
    needed = max(finished, default=len(paths)) if name == "faults" else len(paths)
    minimum = physical_minimum(settings, t0, needed)
    rows = []
    for (label, _), log, outcome in zip(APPROACHES, logs, outcomes, strict=True):
        throttled = sum(e.status == 429 for e in log)
        forced = needed - len(paths)
        capped = outcome.finished_at is None
        wall = (outcome.finished_at or time.monotonic()) - started
        row = Row(name, label, wall, minimum, outcome.done, len(paths), throttled, len(log))
        row.forced, row.capped = forced, capped
        rows.append(row)
    judge(rows[0], settings, mode)
    return rows


def judge(row: Row, settings: SimulatorSettings, mode: Mode) -> None:
    """The issue's targets, for the harvester's row."""
    if row.capped:
        row.verdict = "MISS (did not finish)"
        return
    latency = settings.latency + settings.jitter
    if row.scenario == "faults":
        ok = row.throttled == 0 and row.wasted == row.forced
        row.verdict = "ok" if ok else "MISS"
        return
    if row.scenario == "shared":
        windows = math.ceil(row.wall / mode.window) + 1
        ok = row.throttled <= CONCURRENCY * windows
        ok = ok and row.wall <= row.minimum * (1 + SHARED_TOLERANCE) + latency
    else:
        ok = row.throttled == 0 and row.wasted == 0
        ok = ok and row.wall <= row.minimum * (1 + CLEAN_TOLERANCE) + latency
    row.verdict = "ok" if ok else "MISS"


# -- output ---------------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    head = (
        "| scenario | client | wall s | minimum s | wall / min | 429s | wasted | jobs done "
        "| target |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    lines = [head]
    for r in rows:
        wall = f"> {r.wall:.1f}" if r.capped else f"{r.wall:.2f}"
        ratio = f"> {r.wall / r.minimum:.2f}" if r.capped else f"{r.wall / r.minimum:.3f}"
        wasted = f"{r.wasted} ({r.forced} forced)" if r.scenario == "faults" else str(r.wasted)
        lines.append(
            f"| {r.scenario} | {r.approach} | {wall} | {r.minimum:.2f} | {ratio} | "
            f"{r.throttled} | {wasted} | {r.done}/{r.jobs} | {r.verdict} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller windows, about a minute")
    size.add_argument("--tiny", action="store_true", help="two scenarios in seconds (tests)")
    parser.add_argument("--scenario", action="append", choices=ALL_SCENARIOS, help="only these")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    mode = MODES[name]
    if args.scenario:
        mode = replace(mode, scenarios=tuple(args.scenario))
    jobs = mode.days * (len(SimulatorSettings().phones) + 1)
    print(
        f"# quota benchmark, {name} mode: L = {mode.limit} requests per W = {mode.window} s, "
        f"{jobs} jobs, concurrency {CONCURRENCY}, start {START_PHASE:g} W into a window\n"
        f"# machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}",
        flush=True,
    )
    rows: list[Row] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quota-bench-") as tmp:
        for scenario in mode.scenarios:
            result = asyncio.run(run_scenario(scenario, mode, Path(tmp)))
            print(table(result).split("\n", 2)[2], flush=True)  # rows as they come
            rows += result
    print(f"\n# all scenarios ({time.monotonic() - began:.0f} s)\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
