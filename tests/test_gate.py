"""The quota gate against a model of the server's quota, on virtual time.

The model (:class:`FakeQuota`) is what the API document and our inferences describe: fixed windows
aligned to multiples of ``window`` on a server clock that may be skewed or step, a limit, 429 once
a window is spent (counted, since the document does not say otherwise), ``X-RateLimit-*`` and a
whole-second ``Date`` on every reply, random latency on both legs (so replies overtake each other),
and the faults a gate must survive: other tools of the account spending, a window spent before we
started, a proxy stripping the headers, nonsensical resets, lost replies.

Every scenario asserts on data: our 429s, our requests counted per server window, and the wall time
against :func:`physical_minimum`, what a client that knows everything could achieve with the same
latencies, concurrency and budget. Hours of windows run in milliseconds on ``virtual_time``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate

import pytest

from harvester.clock import LoopClock
from harvester.errors import QuotaStalled
from harvester.gate import (
    PACING_WINDOW_FRACTION,
    STALL_WINDOWS,
    WAKE_MARGIN_SECONDS,
    GateSnapshot,
    QuotaGate,
)
from tests.virtual_time import run_virtual

LIMIT = 150  # the documented quota ...
WINDOW = 900.0  # ... per 15 minutes
FIRST_WINDOW_START = 1_700_000_100  # a multiple of 900: server time of the window we start in

# How close to the physical minimum a run must be (the targets).
CLEAN_TOLERANCE = 0.03
SURPRISE_TOLERANCE = 0.05
# The first request of a window must leave at most this long after the server's reset: margin,
# the offset's remaining uncertainty (about one round trip) and nothing else.
TOP_OF_WINDOW_SLACK = 0.5

Foreign = Callable[[int], Sequence[tuple[float, int]]]


def no_foreign(window: int) -> Sequence[tuple[float, int]]:
    return ()


@dataclass(frozen=True)
class Scenario:
    jobs: int = 450
    limit: int = LIMIT  # the server's
    configured_limit: int | None = None  # what the gate is told; None: the server's
    window: float = WINDOW
    configured_window: float | None = None  # what the gate is told; None: the server's
    reserve: int = 0
    concurrency: int = 4
    workers: int = 8  # scheduler tasks competing for the gate's slots
    skew: float = 0.0  # server clock minus local wall clock
    skew_step: tuple[float, float] | None = None  # (seconds into the run, new skew)
    forward: tuple[float, float] = (0.04, 0.06)  # one-way latency to the counter, uniform
    back: tuple[float, float] = (0.1, 0.3)  # processing + way back, uniform
    start_into_window: float = 100.0  # server seconds into its window when we start
    prespent: int = 0  # requests counted in the first window before we start
    foreign: Foreign = no_foreign  # (seconds into window, requests) per window index from 0
    strip: bool = False  # a proxy strips X-RateLimit-* and Date
    retry_after: Callable[[int, float], str] | None = None  # (reset, server time) -> Retry-After
    no_date: bool = False
    bad_reset: Callable[[int, float], str] | None = None  # (true reset, server time) -> header
    drop_every: int = 0  # every n-th reply is lost on the way back
    lowercase: bool = False  # header names in lower case (a plain dict, not a CIMultiDict)
    seed: int = 7

    @property
    def max_latency(self) -> float:
        return self.forward[1] + self.back[1]


@dataclass
class Arrival:
    sent: float  # local monotonic time the request left
    at: float  # server time it was counted
    window: int  # index of that window, 0 = the first of the run
    status: int
    replied: float  # local monotonic time the reply arrived


class FakeQuota:
    """The server's quota as the document describes it; pure Python, no HTTP."""

    def __init__(self, sc: Scenario, clock: LoopClock) -> None:
        self.sc = sc
        self.clock = clock
        self.skew = sc.skew
        self.epoch_at_zero = clock.wall() - clock.monotonic()
        rng = random.Random(sc.seed)
        self.latencies = latencies(sc, rng)
        self.calls = 0
        self.counts: Counter[int] = Counter()
        self.arrivals: list[Arrival] = []
        self.first = math.floor(self.now() / sc.window)
        self.counts[self.first] = sc.prespent
        for offset, n in sc.foreign(0):
            if offset < sc.start_into_window:
                self.counts[self.first] += n

    def now(self) -> float:
        return self.clock.wall() + self.skew

    def window_start(self, index: int) -> float:
        """Server time at which window ``index`` (0 = the run's first) begins."""
        return (self.first + index) * self.sc.window

    async def call(self) -> tuple[int, dict[str, str]] | None:
        """One request: count it on arrival, answer later; None if the reply is lost."""
        sc = self.sc
        sent = self.clock.monotonic()
        forward, back = self.latencies[self.calls]
        self.calls += 1
        await asyncio.sleep(forward)
        at = self.now()
        n = math.floor(at / sc.window)
        status = 429 if self.counts[n] >= sc.limit else 200
        self.counts[n] += 1
        replied = self.clock.monotonic() + back
        self.arrivals.append(Arrival(sent, at, n - self.first, status, replied))
        reset = (n + 1) * int(sc.window)
        headers = {
            "X-RateLimit-Limit": str(sc.limit),
            "X-RateLimit-Remaining": str(max(0, sc.limit - self.counts[n])),
            "X-RateLimit-Reset": sc.bad_reset(reset, at) if sc.bad_reset else str(reset),
            # generated when processing ends, half-way through the "back" leg
            "Date": formatdate(math.floor(at + back / 2), usegmt=True),
        }
        if sc.no_date:
            del headers["Date"]
        if sc.strip:
            headers = {}
            if status == 429 and sc.retry_after is not None:
                headers["Retry-After"] = sc.retry_after(reset, at)
        if sc.lowercase:
            headers = {k.lower(): v for k, v in headers.items()}
        await asyncio.sleep(back)
        if sc.drop_every and self.calls % sc.drop_every == 0:
            return None
        return status, headers

    async def other_tools(self) -> None:
        """The account's other tools, spending at chosen moments of each window."""
        index = 0
        while True:
            for offset, n in self.sc.foreign(index):
                if index == 0 and offset < self.sc.start_into_window:
                    continue
                await asyncio.sleep(max(0.0, self.window_start(index) + offset - self.now()))
                self.counts[math.floor(self.now() / self.sc.window)] += n
            index += 1
            await asyncio.sleep(max(0.0, self.window_start(index) - self.now()))

    async def clock_step(self) -> None:
        if self.sc.skew_step is not None:
            after, skew = self.sc.skew_step
            await asyncio.sleep(after)
            self.skew = skew


def latencies(sc: Scenario, rng: random.Random) -> list[tuple[float, float]]:
    """Per request (forward, back), drawn in advance so the oracle sees the same ones."""
    return [(rng.uniform(*sc.forward), rng.uniform(*sc.back)) for _ in range(sc.jobs * 3)]


@dataclass
class Run:
    sc: Scenario
    quota: FakeQuota
    gate: QuotaGate
    started: float = 0.0
    finished: float = 0.0
    sends: list[float] = field(default_factory=list)
    most_in_flight: int = 0
    snapshots: list[GateSnapshot] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return self.finished - self.started

    @property
    def throttled(self) -> int:
        return sum(a.status == 429 for a in self.quota.arrivals)

    def ours_per_window(self, *, accepted_only: bool = False) -> dict[int, int]:
        """Our requests counted per server window (429s included unless ``accepted_only``)."""
        per: defaultdict[int, int] = defaultdict(int)
        for a in self.quota.arrivals:
            if a.status != 429 or not accepted_only:
                per[a.window] += 1
        return dict(per)

    def first_sends_after_reset(self) -> list[float]:
        """For each window after the first: server time of our first send minus its reset."""
        firsts: dict[int, float] = {}
        for a in self.quota.arrivals:
            firsts.setdefault(a.window, a.sent)
        theta = self.quota.epoch_at_zero + self.quota.skew  # server time - local monotonic
        return [firsts[w] + theta - self.quota.window_start(w) for w in sorted(firsts) if w > 0]


def pull(sc: Scenario) -> Run:
    """Fetch ``sc.jobs`` jobs through a fresh gate from a fresh quota; 429s are retried."""
    start_epoch = FIRST_WINDOW_START + sc.start_into_window - sc.skew

    async def main(clock: LoopClock) -> Run:
        gate = QuotaGate(
            limit=sc.configured_limit or sc.limit,
            window_seconds=sc.configured_window or sc.window,
            reserve=sc.reserve,
            concurrency=sc.concurrency,
            clock=clock,
        )
        quota = FakeQuota(sc, clock)
        run = Run(sc, quota, gate, started=clock.monotonic())
        helpers = [
            asyncio.create_task(quota.other_tools()),
            asyncio.create_task(quota.clock_step()),
        ]
        jobs = iter(range(sc.jobs))
        in_flight = 0

        async def worker() -> None:
            nonlocal in_flight
            for _job in jobs:
                while True:
                    async with gate.request() as permit:
                        run.sends.append(clock.monotonic())
                        in_flight += 1
                        run.most_in_flight = max(run.most_in_flight, in_flight)
                        reply = await quota.call()
                        in_flight -= 1
                        if reply is not None:
                            permit.observe(*reply)
                    run.snapshots.append(gate.snapshot())
                    if reply is not None and reply[0] != 429:
                        break

        await asyncio.gather(*(worker() for _ in range(sc.workers)))
        run.finished = clock.monotonic()
        for task in helpers:
            task.cancel()
        return run

    return run_virtual(main, start_epoch=start_epoch)


def physical_minimum(sc: Scenario) -> float:
    """Seconds an all-knowing client needs for ``sc.jobs``: it knows the server's clock, every
    window's budget left by reserve and other tools, and fires each request the moment a slot is
    free and its window has room, with the same latencies. No probe, no pacing, no margin."""
    lat = latencies(sc, random.Random(sc.seed))
    start = FIRST_WINDOW_START + sc.start_into_window  # server time

    def budget(index: int) -> int:
        spent = sum(n for _, n in sc.foreign(index)) + (sc.prespent if index == 0 else 0)
        return sc.limit - sc.reserve - spent

    used: Counter[int] = Counter()
    slots = [start] * sc.concurrency
    finish = start
    for forward, back in lat[: sc.jobs]:
        t = heapq.heappop(slots)
        while True:
            index = math.floor((t + forward - FIRST_WINDOW_START) / sc.window)
            if used[index] < budget(index):
                break
            t = FIRST_WINDOW_START + (index + 1) * sc.window - forward
        used[index] += 1
        heapq.heappush(slots, t + forward + back)
        finish = max(finish, t + forward + back)
    return finish - start


def assert_near_minimum(run: Run, tolerance: float = CLEAN_TOLERANCE) -> float:
    minimum = physical_minimum(run.sc)
    ratio = run.wall / minimum
    print(
        f"wall {run.wall:.1f} s, minimum {minimum:.1f} s, ratio {ratio:.4f}, 429s {run.throttled}"
    )
    assert run.wall <= minimum * (1 + tolerance) + run.sc.max_latency
    return ratio


def assert_never_over_budget(run: Run) -> None:
    budget = run.sc.limit - run.sc.reserve
    assert max(run.ours_per_window().values()) <= budget


def assert_on_time_at_every_reset(run: Run) -> None:
    late = run.first_sends_after_reset()
    assert late, "the run should span several windows"
    assert all(0 <= x <= TOP_OF_WINDOW_SLACK for x in late), late


# -- the scenarios -----------------------------------------------------------------------


def test_clean_run_is_at_the_physical_minimum_without_a_429() -> None:
    run = pull(Scenario())
    assert run.throttled == 0
    assert run.ours_per_window() == {0: 150, 1: 150, 2: 150}
    assert_near_minimum(run)
    assert_on_time_at_every_reset(run)


@pytest.mark.parametrize(
    ("forward", "back", "jobs"),
    [
        ((0.3, 0.5), (6.0, 9.0), 450),  # latency x limit > window, still quota-bound
        ((0.3, 0.5), (25.0, 35.0), 300),  # concurrency-bound: requests straddle every reset
    ],
    ids=["slow", "very-slow"],
)
def test_slow_replies(forward: tuple[float, float], back: tuple[float, float], jobs: int) -> None:
    sc = Scenario(forward=forward, back=back, jobs=jobs)
    assert sc.max_latency * sc.limit > sc.window
    run = pull(sc)
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run)


@pytest.mark.parametrize("skew", [-3.0, -2.0, 3.0])
def test_skewed_server_clock_costs_neither_429s_nor_sleep(skew: float) -> None:
    run = pull(Scenario(skew=skew))
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run)
    assert_on_time_at_every_reset(run)


def test_offset_estimate_converges_from_whole_second_dates() -> None:
    run = pull(Scenario(skew=3.0))
    final = run.snapshots[-1]
    assert final.clock_offset is not None and final.clock_offset_error is not None
    assert 2 * final.clock_offset_error < 0.2
    assert abs(final.clock_offset - 3.0) <= final.clock_offset_error


def test_out_of_order_replies() -> None:
    sc = Scenario(back=(0.1, 6.0), concurrency=8, workers=12, lowercase=True)
    run = pull(sc)
    by_send = sorted(run.quota.arrivals, key=lambda a: a.sent)
    overtaken = sum(b.replied < a.replied for a, b in itertools.pairwise(by_send))
    assert overtaken > len(by_send) // 4  # many replies overtake an earlier request's
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run)


def test_requests_overtaking_each_other_on_the_way_in() -> None:
    # the server counts in arrival order, which differs from our send order by up to 3 s
    sc = Scenario(forward=(0.0, 3.0), back=(0.1, 2.0), concurrency=8, workers=10)
    run = pull(sc)
    by_send = sorted(run.quota.arrivals, key=lambda a: a.sent)
    assert sum(b.at < a.at for a, b in itertools.pairwise(by_send)) > len(by_send) // 4
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run)


def test_window_partly_spent_before_we_started() -> None:
    run = pull(Scenario(prespent=140))
    assert run.throttled == 0
    assert run.ours_per_window()[0] == 10
    assert_near_minimum(run)


def test_window_fully_spent_before_we_started_costs_one_probe_then_waits_for_the_reset() -> None:
    run = pull(Scenario(prespent=150))
    assert run.throttled == 1  # the lone probe; a competitor lost one per request in flight
    assert run.quota.arrivals[0].status == 429
    assert 0 <= run.first_sends_after_reset()[0] <= 2.0  # the reset it named, not a backoff
    assert_near_minimum(run)


def test_another_tool_spending_at_the_top_of_every_window() -> None:
    def seven_at_the_top(window: int) -> Sequence[tuple[float, int]]:
        return [(0.0, 7)]

    sc = Scenario(limit=20, jobs=100, foreign=seven_at_the_top, start_into_window=0.5)
    run = pull(sc)
    assert run.throttled == 0  # a competitor took 44 here
    assert max(run.ours_per_window().values()) <= 13
    assert_near_minimum(run)
    assert run.snapshots[-1].budget_per_window == 13


@pytest.mark.parametrize("offset", [5.0, 15.0])
def test_another_tool_spending_by_surprise(offset: float) -> None:
    def surprise(window: int) -> Sequence[tuple[float, int]]:
        return [(offset, 60)] if window in (1, 2) else []

    sc = Scenario(foreign=surprise)
    run = pull(sc)
    assert run.throttled <= 2 * sc.concurrency  # at most `concurrency` per surprise
    assert_near_minimum(run, SURPRISE_TOLERANCE)


def test_reserve_is_left_unused() -> None:
    sc = Scenario(reserve=30, jobs=360)
    run = pull(sc)
    assert run.throttled == 0
    assert max(run.ours_per_window().values()) == 120
    assert_near_minimum(run)


@pytest.mark.parametrize("configured", [100, 300])
def test_the_server_limit_is_the_authority(configured: int) -> None:
    run = pull(Scenario(configured_limit=configured))
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run)


def test_pacing_spreads_each_window_and_bounds_concurrency() -> None:
    sc = Scenario(concurrency=50, workers=60, jobs=300, start_into_window=0.0, prespent=0)
    run = pull(sc)
    assert run.throttled == 0
    assert run.most_in_flight <= sc.concurrency
    # never more than a burst of `concurrency` at one instant ...
    bursts = Counter(round(t, 3) for t in run.sends)  # sends within the same millisecond
    assert max(bursts.values()) <= sc.concurrency
    # ... and a window's budget takes about PACING_WINDOW_FRACTION of the window, not 0.3 s
    window_1 = [a.sent for a in run.quota.arrivals if a.window == 1]
    paced = (sc.limit - sc.concurrency) / sc.limit * PACING_WINDOW_FRACTION * sc.window
    assert max(window_1) - min(window_1) >= 0.9 * paced


# -- faults ----------------------------------------------------------------------------------------


def test_headerless_replies_fall_back_to_a_safe_sliding_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sc = Scenario(strip=True, jobs=300)
    with caplog.at_level(logging.WARNING, logger="harvester.gate"):
        run = pull(sc)
    assert run.throttled == 0
    times = sorted(a.at for a in run.quota.arrivals)
    # never more than the limit in ANY window-long span, whatever the server's alignment
    for i, t in enumerate(times):
        j = i
        while j < len(times) and times[j] < t + sc.window:
            j += 1
        assert j - i <= sc.limit
    assert sum("no X-RateLimit headers" in r.message for r in caplog.records) == 1
    print(f"header-less: wall {run.wall:.0f} s for {sc.jobs} jobs")


def test_headerless_429_waits_a_whole_window() -> None:
    run = pull(Scenario(strip=True, prespent=150, jobs=20))
    assert run.throttled == 1
    refused, following = run.quota.arrivals[0], run.quota.arrivals[1]
    assert following.sent - refused.sent >= WINDOW


@pytest.mark.parametrize(
    "retry_after",
    [
        lambda reset, now: str(math.ceil(reset - now)),
        lambda reset, now: formatdate(reset, usegmt=True),
    ],
    ids=["seconds", "http-date"],
)
def test_headerless_429_waits_what_retry_after_says(
    retry_after: Callable[[int, float], str],
) -> None:
    sc = Scenario(strip=True, prespent=150, jobs=20, retry_after=retry_after)
    run = pull(sc)
    assert run.throttled == 1
    refused, following = run.quota.arrivals[0], run.quota.arrivals[1]
    assert following.window == 1  # the next window, ...
    assert following.sent - refused.sent < WINDOW - sc.start_into_window + 5  # ... at its top


@pytest.mark.parametrize(
    "bad_reset",
    [
        lambda reset, now: str(int(reset - now)),  # seconds until the reset
        lambda reset, now: str(reset * 1000),  # milliseconds
        lambda reset, now: "soon",
        lambda reset, now: str(reset - 2 * WINDOW),  # in the past
    ],
    ids=["delta", "millis", "text", "past"],
)
def test_nonsense_resets_are_ignored_and_logged_once(
    bad_reset: Callable[[int, float], str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="harvester.gate"):
        run = pull(Scenario(bad_reset=bad_reset))
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run)
    assert sum("X-RateLimit-Reset" in r.message for r in caplog.records) == 1


def test_resets_off_the_epoch_grid_are_followed(caplog: pytest.LogCaptureFixture) -> None:
    # windows that end 7 s after each multiple of the window: the server's word, not nonsense
    with caplog.at_level(logging.INFO, logger="harvester.gate"):
        run = pull(Scenario(bad_reset=lambda reset, now: str(reset + 7)))
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run)
    assert sum("off the 900 s grid" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("configured", [WINDOW / 3, WINDOW / 9.5])
def test_a_configured_window_shorter_than_the_servers_is_corrected(
    configured: float, caplog: pytest.LogCaptureFixture
) -> None:
    # told 300 s (or ~95 s) windows against the server's 900: the model alone would send into
    # a spent window every few minutes; the first 429's Reset stops that, two Resets teach it
    sc = Scenario(configured_window=configured, jobs=600)
    with caplog.at_level(logging.WARNING, logger="harvester.gate"):
        run = pull(sc)
    assert run.throttled <= sc.concurrency  # one burst refused, before the first Reset
    assert max(run.ours_per_window(accepted_only=True).values()) <= sc.limit
    assert_near_minimum(run, tolerance=0.05)
    learned = [r.message for r in caplog.records if "quota windows are 900 s long" in r.message]
    assert len(learned) == 1, learned


def test_a_configured_window_longer_than_the_servers_is_corrected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # told an hour against the server's 15 minutes: the model alone would idle 45 of every 60
    sc = Scenario(configured_window=4 * WINDOW, jobs=600)
    with caplog.at_level(logging.WARNING, logger="harvester.gate"):
        run = pull(sc)
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run, tolerance=0.05)
    learned = [r.message for r in caplog.records if "quota windows are 900 s long" in r.message]
    assert len(learned) == 1, learned


def test_replies_without_date_are_slower_but_never_refused() -> None:
    run = pull(Scenario(no_date=True, jobs=300))
    assert run.throttled == 0
    assert_never_over_budget(run)
    print(f"no Date: wall {run.wall:.0f} s, minimum {physical_minimum(run.sc):.0f} s")


def test_lost_replies_stay_charged() -> None:
    run = pull(Scenario(drop_every=7))
    assert run.throttled == 0
    assert_never_over_budget(run)


def test_server_clock_stepping_back_during_a_wait() -> None:
    # the server's clock jumps 5 s back while we wait for a reset: we wake 5 s early, once
    sc = Scenario(skew_step=(500.0, -5.0), jobs=450)
    run = pull(sc)
    assert run.throttled <= sc.concurrency
    assert max(run.ours_per_window(accepted_only=True).values()) <= sc.limit
    assert run.snapshots[-1].clock_offset == pytest.approx(-5.0, abs=0.2)


def test_a_late_start_after_an_idle_gap_probes_again() -> None:
    """Sending into a window we did not enter at its top: one probe, then the budget it reports."""

    async def main(clock: LoopClock) -> list[int]:
        sc = Scenario(prespent=0)
        quota = FakeQuota(sc, clock)
        gate = QuotaGate(limit=LIMIT, window_seconds=WINDOW, clock=clock)
        async with gate.request() as permit:
            reply = await quota.call()
            assert reply is not None
            permit.observe(*reply)
        await asyncio.sleep(2 * WINDOW)  # idle; meanwhile another tool spends the window ...
        quota.counts[math.floor(quota.now() / WINDOW)] = LIMIT - 3  # ... all but 3
        idle = gate.snapshot()
        assert (idle.mode, idle.budget_per_window) == ("quota", LIMIT)

        async def one() -> None:
            while True:
                async with gate.request() as permit:
                    reply = await quota.call()
                    assert reply is not None
                    permit.observe(*reply)
                if reply[0] != 429:
                    return

        await asyncio.gather(*(one() for _ in range(6)))
        return [a.status for a in quota.arrivals]

    statuses = run_virtual(main, start_epoch=FIRST_WINDOW_START + 100.0)
    assert statuses[1:4] == [200, 200, 200]  # probe, then the 2 left; no 429 wasted
    assert 429 not in statuses


# -- a server that refuses everything --------------------------------------------------------------


def spent_around_the_clock(window: int) -> Sequence[tuple[float, int]]:
    return [(0.0, LIMIT)]  # another tool takes every window's whole budget at its top


def refused_run(sc: Scenario) -> tuple[float, int, str]:
    """Workers against a quota that refuses everything, until the gate gives up: the virtual
    seconds that took, the requests sent, and the gate's message."""

    async def main(clock: LoopClock) -> tuple[float, int, str]:
        gate = QuotaGate(
            limit=LIMIT, window_seconds=WINDOW, concurrency=sc.concurrency, clock=clock
        )
        quota = FakeQuota(sc, clock)
        other = asyncio.create_task(quota.other_tools())
        started = clock.monotonic()

        async def worker() -> None:
            while True:
                async with gate.request() as permit:
                    reply = await quota.call()
                    assert reply is not None and reply[0] == 429
                    permit.observe(*reply)

        with pytest.raises(QuotaStalled) as stalled:
            await asyncio.gather(*(worker() for _ in range(sc.workers)))
        other.cancel()
        return clock.monotonic() - started, quota.calls, str(stalled.value)

    return run_virtual(main, start_epoch=FIRST_WINDOW_START + sc.start_into_window)


@pytest.mark.parametrize("strip", [False, True], ids=["headers", "no-headers"])
def test_refused_in_every_window_the_gate_gives_up_after_a_few(strip: bool) -> None:
    sc = Scenario(prespent=LIMIT, foreign=spent_around_the_clock, strip=strip)
    waited, sent, message = refused_run(sc)
    # the first window's rest, then STALL_WINDOWS - 1 whole ones: not one request per window forever
    assert waited <= WINDOW - sc.start_into_window + (STALL_WINDOWS - 1) * WINDOW + 5
    assert sent <= 1 + (STALL_WINDOWS - 1) * sc.concurrency
    assert message.startswith(f"the API refused every request for {STALL_WINDOWS} windows (429")
    assert ("no X-RateLimit headers" in message) == strip


def test_a_refusal_until_hours_ahead_gives_up_at_once() -> None:
    sc = Scenario(prespent=LIMIT, bad_reset=lambda reset, now: str(reset + 7200))
    waited, sent, message = refused_run(sc)
    assert sent == 1 and waited < 1.0
    assert "X-RateLimit-Reset 2.2 hours ahead" in message


# -- the public surface --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 10, "reserve": 10},
        {"limit": 10, "reserve": -1},
        {"limit": 0},
        {"limit": 10, "concurrency": 0},
        {"limit": 10, "window_seconds": 0.0},
        {"limit": 10, "window_seconds": math.nan},
    ],
)
def test_inputs_are_validated(kwargs: dict[str, float]) -> None:
    arguments: dict[str, float] = {"window_seconds": WINDOW, **kwargs}
    with pytest.raises(ValueError):
        QuotaGate(**arguments)  # type: ignore[arg-type]


def test_observe_once_per_permit() -> None:
    async def main(clock: LoopClock) -> None:
        gate = QuotaGate(limit=LIMIT, window_seconds=WINDOW, clock=clock)
        async with gate.request() as permit:
            permit.observe(200, {})
            with pytest.raises(RuntimeError):
                permit.observe(200, {})

    run_virtual(main)


def test_a_request_that_never_left_is_released_at_once() -> None:
    # the probe could not connect: the next request may go immediately, not after the grace a
    # request lost on the way is charged for
    async def main(clock: LoopClock) -> tuple[float, int, int]:
        gate = QuotaGate(limit=LIMIT, window_seconds=WINDOW, clock=clock)
        started = clock.monotonic()
        async with gate.request() as permit:
            permit.unsent()
            with pytest.raises(RuntimeError):
                permit.observe(200, {})
        snapshot = gate.snapshot()
        async with gate.request():
            waited = clock.monotonic() - started
        return waited, snapshot.sent, snapshot.in_flight

    waited, sent, in_flight = run_virtual(main)
    assert (sent, in_flight) == (0, 0)
    assert waited < 1.0


def test_snapshot_before_anything_is_known() -> None:
    async def main(clock: LoopClock) -> GateSnapshot:
        return QuotaGate(limit=LIMIT, window_seconds=WINDOW, reserve=5, clock=clock).snapshot()

    snap = run_virtual(main, start_epoch=FIRST_WINDOW_START + 100.0)
    assert snap.mode == "probe"
    assert (snap.sent, snap.replies, snap.throttled, snap.in_flight) == (0, 0, 0, 0)
    assert snap.remaining == snap.budget_per_window == 145
    assert snap.reset_in == pytest.approx(800.0 + WAKE_MARGIN_SECONDS)  # from the wall clock
    assert snap.clock_offset is None


def test_snapshot_follows_the_run() -> None:
    run = pull(replace(Scenario(), jobs=200))
    final = run.snapshots[-1]
    assert final.mode == "quota"
    assert final.sent == len(run.sends) and final.replies == len(run.quota.arrivals)
    assert final.throttled == 0 and final.in_flight == 0
    assert final.remaining == 150 - 50  # the last window took 50
    true_reset = run.quota.window_start(2) - run.quota.skew - run.quota.epoch_at_zero
    assert final.next_reset == pytest.approx(true_reset, abs=0.5)


def test_a_limit_below_concurrency() -> None:
    sc = Scenario(limit=3, window=60.0, jobs=12, concurrency=4, start_into_window=1.0)
    run = pull(sc)
    assert run.throttled == 0
    assert_never_over_budget(run)
    assert_near_minimum(run)


def test_reserve_above_the_server_limit_is_clipped(caplog: pytest.LogCaptureFixture) -> None:
    sc = Scenario(limit=50, configured_limit=150, reserve=100, jobs=3, start_into_window=0.0)
    with caplog.at_level(logging.WARNING, logger="harvester.gate"):
        run = pull(sc)
    assert run.throttled == 0
    assert run.ours_per_window() == {0: 1, 1: 1, 2: 1}
    assert any("reserve 100" in r.message for r in caplog.records)


def test_cancelled_waiters_leave_nothing_behind() -> None:
    """The scheduler cancels tasks waiting for quota on Ctrl-C; the gate must stay consistent."""

    async def main(clock: LoopClock) -> tuple[GateSnapshot, list[int]]:
        quota = FakeQuota(Scenario(prespent=LIMIT - 1), clock)
        gate = QuotaGate(limit=LIMIT, window_seconds=WINDOW, clock=clock)

        async def one() -> int:
            async with gate.request() as permit:
                reply = await quota.call()
                assert reply is not None
                permit.observe(*reply)
                return reply[0]

        first = await one()  # takes the last request of the window
        waiting = [asyncio.create_task(one()) for _ in range(6)]
        await asyncio.sleep(10.0)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        snap = gate.snapshot()
        later = await asyncio.wait_for(one(), timeout=WINDOW)  # the next window still opens
        return snap, [first, later]

    snap, statuses = run_virtual(main)
    assert statuses == [200, 200]
    assert (snap.in_flight, snap.remaining, snap.sent) == (0, 0, 1)
