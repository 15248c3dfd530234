"""The quota gate: when may the next request to VoiceTrends go out?

The quota decides how long every pull takes: 150 requests per fixed 15-minute window of the
*server's* clock, shared with the account's other tools. A request wasted on a 429, or a second
idle after the server's window has reset, is time the user waits. So the gate does not guess: it
keeps the server's own view of the window, fed by ``X-RateLimit-Limit/Remaining/Reset`` and ``Date``
from every reply, and sends exactly when that view says a request will be counted and accepted.

Usage (the scheduler's whole view of the gate)::

    async with gate.request() as permit:        # a concurrency slot, pacing and budget
        reply = await send()
        permit.observe(reply.status, reply.headers)
    # on a 429 the caller just asks again; the gate has already decided how long to wait

Three meters, checked in this order:

- a concurrency bound (``concurrency`` requests on the wire at most);
- the server-authoritative budget, the private mechanics below;
- local pacing by aiolimiter, so a window's budget never leaves as one burst: a bucket of
  ``concurrency`` that refills fast enough to spend a whole window's budget in a small fraction of
  the window (the budget is checked again after it). It is *not* the quota model: a leaky bucket
  overruns fixed windows and is slow.

How the budget is known
-----------------------
*The server's clock.* ``Date`` has one-second resolution, but every reply bounds the offset
``theta`` (server = local monotonic + theta): a reply sent at ``s``, received at ``r`` and dated
``D`` was generated in ``[D, D + 1)`` and in ``[s + theta, r + theta]``, so ``D - r <= theta <
D + 1 - s``. Intersecting these intervals over many replies pins ``theta`` to about one round trip.
A new window is entered at the earliest local time that is *surely* past the server's reset:
``reset - theta_lo`` (plus a small margin). No oversleeping, no early request. The interval is
kept by :mod:`harvester.server_clock`; the headers are read by :mod:`harvester.rate_headers`.

*Out-of-order replies.* Per window (keyed by its reset), ``spent`` is the highest count any reply
reported and ``ref`` the send time of that reply's request. Our requests still unresolved count
against the window if they may land in it and were not sent clearly before ``ref`` (the server
counts in arrival order, so those are already in ``spent``). Requests sent near a boundary are
thus charged to both windows until a reply says where they landed. Without another client this
is exact: no 429, no idle.

*Unknown windows.* The first request of a run, and the first into a window we did not enter at
its top (after an idle gap), is a lone probe: a previous run or another tool may have spent part
of it. Windows we wait for and enter at their top need no probe. Another client spending at any
moment shows up in the next reply; at most ``concurrency`` requests were already on their way.

*The window's length.* ``window_seconds`` is a first guess: the server's Resets are the
authority. A Reset that cannot end a window of that length (more than a window ahead of when the
request was counted, or off the grid) starts learning: the spacing of Resets of successive
windows is the server's length, and windows that end off the epoch's grid are followed where the
server says they end (logged once). Until then a 429 still stops everything until its Reset.

*Fallbacks.* A 429 means the window is spent: wait for the reset it names, never back off
exponentially. A ``Reset`` that is not a number, in the past, or further ahead than the window
allows is ignored (logged once) and the window found from ``Date`` (one more than a day ahead
teaches nothing either). With no quota headers at all (a proxy stripped them) the gate keeps a
sliding log: never more than ``limit - reserve`` requests that may land in any
``window_seconds``, whatever the alignment, and after a 429 a pause of the reply's
``Retry-After`` (seconds or an HTTP date; at most a window), or a whole window without one.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from aiolimiter import AsyncLimiter

from harvester.api.headers import (
    DATE_RESOLUTION_SECONDS,
    LIMIT_HEADER,
    REMAINING_HEADER,
    RESET_HEADER,
    header_date,
    header_int,
    header_text,
    retry_after,
)
from harvester.clock import Clock, SystemClock
from harvester.server_clock import OffsetEstimate

log = logging.getLogger(__name__)

# A whole window's budget may be paced out in this fraction of the window (18 s of 900 s): fast
# enough to cost well under 1% of a pull, slow enough never to open hundreds of connections at once.
PACING_WINDOW_FRACTION = 0.02
# Sent this long after the local time at which the server's reset has surely passed: absorbs float
# rounding and clock drift beyond server_clock.CLOCK_DRIFT_RATE; one reply's latency is far larger.
WAKE_MARGIN_SECONDS = 0.1
# Requests sent at least this much earlier than another are assumed to reach the server's counter
# first (it counts in arrival order). Covers jitter between simultaneous sends and a request held
# up by one lost SYN (RFC 6298's initial retransmission timeout is 1 s). The gate widens it when
# replies show the server counted requests further out of order than that.
FIFO_GUARD_SECONDS = 2.0
# Entering a window within this fraction of its start (45 s of 900 s) is "at its top": it cannot
# have been spent by a previous run of ours, so no probe is needed. Later arrivals probe first.
AT_TOP_WINDOW_FRACTION = 0.05
# A Reset this far from a multiple of the window is not a window end (the documented resets are
# exact multiples of 900; two seconds forgives a server that rounds its clock differently), nor
# further than this fraction of the window (short test windows: a second is a lot of a 5 s one).
RESET_GRID_TOLERANCE_SECONDS = 2.0
RESET_GRID_TOLERANCE_FRACTION = 0.1
# A Reset more than this many windows after the server's time is nonsense (milliseconds, typos).
RESET_MAX_WINDOWS_AHEAD = 2
# Resets up to this far ahead are evidence of the server's window length even when they
# contradict the configured one (a window of up to a day; milliseconds are far beyond it).
RESET_LEARN_MAX_AHEAD_SECONDS = 86_400.0
# Reset values remembered to learn the server's window length from their spacing.
RESETS_KEPT = 8
# After this many replies in a row without quota headers, stop trusting the window model and use
# the sliding log. One proxy error page (a 502 without headers) must not stall a healthy run.
HEADERLESS_STREAK_FOR_FALLBACK = 3
# A request abandoned without a reply (timeout, dropped connection) may still be queued on the way
# to the server; it stays charged for this long after we gave up on it.
ABANDONED_GRACE_SECONDS = 30.0
# Warn when the local wall clock differs from the server's by more than this: NTP keeps hosts
# within milliseconds, so seconds mean an unsynchronised clock (harmless here, wrong elsewhere).
CLOCK_WARN_SECONDS = 2.0
# Windows kept after they ended: the last one feeds the other tools' spending estimate.
PAST_WINDOWS_KEPT = 2
# Shortest re-check delay, so float rounding at a boundary can never spin the event loop.
MIN_RECHECK_SECONDS = 1e-3

Mode = Literal["probe", "quota", "fallback"]


@dataclass(frozen=True, slots=True)
class GateSnapshot:
    """The gate's numbers at one moment, for progress lines and the ETA (cheap to take)."""

    now: float  #: local monotonic time of the snapshot
    mode: Mode  #: ``probe`` (nothing known yet), ``quota`` (server headers) or ``fallback``
    sent: int  #: permits granted (requests sent or about to be)
    replies: int  #: replies observed, of any status
    throttled: int  #: 429 replies observed
    in_flight: int  #: permits not yet answered
    remaining: int  #: requests the current window still allows us, as estimated now
    next_reset: float  #: local monotonic time at which the next window surely has begun
    reset_in: float  #: ``next_reset - now``
    budget_per_window: int  #: requests per window left to us after reserve and other tools
    clock_offset: float | None  #: server clock minus local wall clock, seconds (None: unknown)
    clock_offset_error: float | None  #: half-width of the interval known to hold the offset


@dataclass(slots=True, eq=False)  # compared and hashed by identity: kept in a set
class _Sent:
    """One permit's request: charged to every window it may land in until a reply places it."""

    sent_at: float
    # the latest local time it can have reached the server; None while it is on the wire
    done_at: float | None = None


@dataclass(slots=True)
class _Window:
    """What the server told us about one of its windows."""

    limit: int
    spent: int = 0  # highest count any reply reported (limit - remaining)
    ref_sent_at: float = -math.inf  # send time of the request whose reply reported ``spent``
    replies: int = 0
    ours: int = 0  # of those replies, ours (all of them; the rest of ``spent`` is other tools)
    at_top: bool = False  # entered within AT_TOP_WINDOW_FRACTION of its start: no probe needed

    def report(self, spent: int, sent_at: float) -> float:
        """Take a reply's count; return how much later than the reference its request was sent
        if it was counted *earlier* (0.0 if not): the server reordered requests that far apart."""
        if spent > self.spent or (spent == self.spent and sent_at > self.ref_sent_at):
            self.spent, self.ref_sent_at = spent, sent_at
            return 0.0
        return max(0.0, sent_at - self.ref_sent_at) if spent < self.spent else 0.0


class Permit:
    """The right to send one request; report its reply with :meth:`observe`."""

    __slots__ = ("_closed", "_gate", "_observed", "_sent")

    def __init__(self, gate: QuotaGate, sent: _Sent) -> None:
        self._gate = gate
        self._sent = sent
        self._observed = False
        self._closed = False

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Feed the reply's status and headers (any status) to the gate. Call once per reply.

        Header names are matched case-insensitively. Leaving the ``async with`` block without
        calling this means "no reply": the request stays charged as if it may have been counted.
        """
        if self._observed or self._closed:
            raise RuntimeError("Permit.observe() must be called once, inside the permit's block")
        self._observed = True
        self._gate._observe(self._sent, status, headers)

    def unsent(self) -> None:
        """The request never left (no connection could be made): release its charge at once,
        instead of holding it like a request lost on the way. Instead of :meth:`observe`."""
        if self._observed or self._closed:
            raise RuntimeError("Permit.unsent() must be called once, inside the permit's block")
        self._observed = True
        self._gate._unsent(self._sent)


class QuotaGate:
    """Admits requests so that the server's fixed-window quota is used fully and never exceeded.

    :param limit: requests per window (the server's ``X-RateLimit-Limit`` overrides it).
    :param window_seconds: the window's length; windows are aligned to multiples of it.
    :param reserve: requests per window left unused for the account's other tools.
    :param concurrency: requests on the wire at most (also the pacing burst).
    :param clock: where time comes from; the event loop's clock by default.
    """

    def __init__(
        self,
        *,
        limit: int,
        window_seconds: float,
        reserve: int = 0,
        concurrency: int = 4,
        clock: Clock | None = None,
    ) -> None:
        if not 0 <= reserve < limit:
            raise ValueError(f"need limit > reserve >= 0, got limit={limit}, reserve={reserve}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not window_seconds > 0 or not math.isfinite(window_seconds):
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self._limit = limit  # for windows we have no reply from; the server's value once known
        self._window = float(window_seconds)
        self._reserve = reserve
        self._concurrency = concurrency
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._slots = asyncio.Semaphore(concurrency)
        self._pacer = self._make_pacer(limit)
        self._offset = OffsetEstimate()
        self._phase = 0.0  # window ends are n * window + phase on the server's clock
        # recent Resets -> the latest "counted no earlier than" bound of a request they ended
        self._resets: dict[float, float] = {}
        self._window_contradicted = False  # a Reset did not fit the window length we use
        self._windows: dict[int, _Window] = {}
        self._unplaced: set[_Sent] = set()  # requests no reply has placed in a window yet
        self._done_log: list[float] = []  # sorted done_at of requests, for the sliding log
        self._blocked_until = -math.inf  # after a 429 that named no usable window
        self._informed = False  # some reply placed a Remaining in a window
        self._headerless_streak = 0
        self._fifo_guard = FIFO_GUARD_SECONDS  # widened when the server reorders more than that
        self._waiters: set[asyncio.Future[None]] = set()
        self._warned: set[str] = set()
        self._sent = self._replies = self._throttled = 0

    # -- public surface -----------------------------------------------------------------------

    def request(self) -> AbstractAsyncContextManager[Permit]:
        """Wait for a concurrency slot, pacing and budget; the block's body sends one request."""
        return self._permit()

    def snapshot(self) -> GateSnapshot:
        """The gate's current estimates; cheap enough to call on every progress tick."""
        now = self._clock.monotonic()
        bounds = self._offset.bounds(now)
        theta = bounds if bounds is not None else (self._wall_theta(now),) * 2
        mode = self._mode()
        limit = self._limit
        if mode == "quota" and bounds is not None:
            remaining = min(self._available(n, *bounds) for n in self._view(now, *bounds))
        elif mode == "fallback":
            remaining = self._budget(limit) - self._in_flight() - self._recent_done(now)
        else:
            remaining = self._budget(limit) - self._in_flight()
        next_reset = self._end(self._index_at(now + theta[0])) - theta[0] + WAKE_MARGIN_SECONDS
        offset = error = None
        if bounds is not None:
            offset = (bounds[0] + bounds[1]) / 2 - self._wall_theta(now)
            error = (bounds[1] - bounds[0]) / 2
        return GateSnapshot(
            now=now,
            mode=mode,
            sent=self._sent,
            replies=self._replies,
            throttled=self._throttled,
            in_flight=self._in_flight(),
            remaining=max(0, remaining),
            next_reset=next_reset,
            reset_in=max(0.0, next_reset - now),
            budget_per_window=max(1, self._budget(limit) - self._foreign_per_window(now)),
            clock_offset=offset,
            clock_offset_error=error,
        )

    # -- admission ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _permit(self) -> AsyncIterator[Permit]:
        async with self._slots:
            sent = await self._wait_for_budget()
            permit = Permit(self, sent)
            try:
                yield permit
            finally:
                permit._closed = True
                if not permit._observed:
                    sent.done_at = self._clock.monotonic() + ABANDONED_GRACE_SECONDS
                    bisect.insort(self._done_log, sent.done_at)
                    self._wake_all()

    async def _wait_for_budget(self) -> _Sent:
        """Wait until the budget allows a request, then for pacing, then grant if still allowed.

        Pacing comes last so that a token is spent only when the request really goes: tokens
        taken before a long wait for the reset would let a second burst follow the first.
        """
        while True:
            recheck = self._verdict(self._clock.monotonic())
            if recheck is None:
                await self._pacer.acquire()
                now = self._clock.monotonic()
                recheck = self._verdict(now)
                if recheck is None:
                    return self._grant(now)
            delay = recheck - self._clock.monotonic()
            await self._wait_for_change(max(delay, MIN_RECHECK_SECONDS))

    async def _wait_for_change(self, delay: float) -> None:
        """Sleep ``delay`` (may be infinite) or until a reply or abandoned permit changes things."""
        changed = asyncio.get_running_loop().create_future()
        self._waiters.add(changed)
        try:
            if math.isinf(delay):
                await changed
                return
            timer = asyncio.ensure_future(self._clock.sleep(delay))
            try:
                await asyncio.wait({changed, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
        finally:
            self._waiters.discard(changed)

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _verdict(self, now: float) -> float | None:
        """None if a request may go now, else the local time worth checking again (inf: on news)."""
        if now < self._blocked_until:
            return self._blocked_until
        del self._done_log[: bisect.bisect_right(self._done_log, now - self._window)]
        mode = self._mode()
        if mode == "probe":
            return None if self._in_flight() == 0 else math.inf
        if mode == "fallback":
            return self._sliding_log_verdict(now)
        bounds = self._offset.bounds(now)
        assert bounds is not None  # quota mode: a reply was placed, which needs the offset
        lo, hi = bounds
        self._forget(now, lo, hi)
        if self._in_flight() >= self._budget(self._limit):  # only for limits below concurrency
            return math.inf
        for n in self._view(now, lo, hi):
            window = self._windows.get(n)
            probed = window is not None and (window.replies > 0 or window.at_top)
            if not probed and not self._at_top(n, now, hi) and self._in_flight_into(n, lo):
                return self._end(n) - lo + WAKE_MARGIN_SECONDS  # the probe is still out
            if self._available(n, lo, hi) < 1:
                return self._end(n) - lo + WAKE_MARGIN_SECONDS
        return None

    def _grant(self, now: float) -> _Sent:
        sent = _Sent(now)
        self._unplaced.add(sent)
        self._sent += 1
        bounds = self._offset.bounds(now)
        if self._mode() == "quota" and bounds is not None:
            for n in self._view(now, *bounds):
                window = self._windows.get(n)
                if window is None:
                    window = self._windows[n] = _Window(self._limit)
                if window.replies == 0 and self._at_top(n, now, bounds[1]):
                    window.at_top = True
        return sent

    def _sliding_log_verdict(self, now: float) -> float | None:
        """Never more than the budget of requests that may land in any window-long span."""
        budget = self._budget(self._limit)
        recent = self._recent_done(now)
        excess = self._in_flight() + recent + 1 - budget
        if excess <= 0:
            return None
        if self._in_flight() + 1 > budget:
            return math.inf
        first = len(self._done_log) - recent
        return self._done_log[first + excess - 1] + self._window

    # -- what the replies say -------------------------------------------------------------------

    def _unsent(self, sent: _Sent) -> None:
        self._unplaced.discard(sent)
        self._sent -= 1
        self._wake_all()

    def _observe(self, sent: _Sent, status: int, headers: Mapping[str, str]) -> None:
        now = self._clock.monotonic()
        self._replies += 1
        self._throttled += status == 429
        sent.done_at = now
        bisect.insort(self._done_log, now)
        limit = header_int(headers, LIMIT_HEADER)
        remaining = header_int(headers, REMAINING_HEADER)
        date = header_date(headers)
        if limit is not None and limit >= 1 and limit != self._limit:
            self._set_limit(limit)
        if date is not None:
            self._learn_offset(date - now, date + DATE_RESOLUTION_SECONDS - sent.sent_at, now)
        reset_text = header_text(headers, RESET_HEADER)
        n, from_reset = self._locate(sent, now, date, reset_text)
        if status == 429:  # whatever the model says, the window it names is spent until then
            self._wait_for_named_reset(reset_text, now)
        if n is not None and from_reset and date is None:
            # No Date: the reset still bounds the clock, since the request landed in its window.
            end = self._end(n)
            self._learn_offset(end - self._window - now, end - sent.sent_at, now)
        if n is not None and (remaining is not None or (status == 429 and from_reset)):
            window = self._windows.setdefault(n, _Window(self._limit))
            if limit is not None and limit >= 1:
                window.limit = limit
            spent = window.limit - remaining if remaining is not None else window.limit
            if status == 429:  # a refusal means the window is spent, whatever else it says
                spent = max(spent, window.limit)
            reordered = window.report(spent, sent.sent_at)
            if reordered >= self._fifo_guard:
                self._fifo_guard = min(self._window, reordered + FIFO_GUARD_SECONDS)
                log.info("the server counted requests %.1f s out of order", reordered)
            window.replies += 1
            window.ours += 1
            self._unplaced.discard(sent)
            self._informed = True
            self._headerless_streak = 0
        else:
            self._headerless_streak += 1
            if self._mode() == "fallback":
                self._warn_once(
                    "headerless",
                    "replies carry no X-RateLimit headers: at most %d requests per rolling %g s",
                    self._budget(self._limit),
                    self._window,
                )
            if status == 429:  # no window named: the one that refused surely ends within a window
                pause = retry_after(headers, date if date is not None else self._clock.wall())
                pause = self._window if pause is None else min(pause, self._window)
                self._blocked_until = max(self._blocked_until, now + pause + WAKE_MARGIN_SECONDS)
        self._wake_all()

    def _wait_for_named_reset(self, reset_text: str | None, now: float) -> None:
        """After a 429, send nothing until the Reset it names (the server's own word, a day
        ahead at most), even where that Reset did not fit the window model: while the model's
        window is shorter than the server's, the model alone would send into a spent window."""
        bounds = self._offset.bounds(now)
        try:
            reset = float(reset_text) if reset_text is not None else math.nan
        except ValueError:
            return
        if bounds is None or not math.isfinite(reset):
            return
        until = reset - bounds[0] + WAKE_MARGIN_SECONDS
        if now < until <= now + RESET_LEARN_MAX_AHEAD_SECONDS:
            self._blocked_until = max(self._blocked_until, until)

    def _locate(
        self, sent: _Sent, now: float, date: int | None, reset_text: str | None
    ) -> tuple[int | None, bool]:
        """The window the request was counted in, and whether the reply's Reset named it."""
        bounds = self._offset.bounds(now)
        if bounds is not None:  # server time of the counting: after our send, before the reply
            first, last = sent.sent_at + bounds[0], now + bounds[1]
            if date is not None:  # ... and before the reply was dated
                last = min(last, date + DATE_RESOLUTION_SECONDS)
        else:  # only our wall clock, which may be off by anything: judge Reset loosely
            wall = self._clock.wall()
            first, last = wall - (now - sent.sent_at) - self._window, wall
        if reset_text is not None:
            n = self._adopt_reset(reset_text, first, last)
            if n is not None:
                return n, True
        if bounds is None:
            return None, False
        n = self._index_at(first)
        return (n, False) if n == self._index_at(math.nextafter(last, -math.inf)) else (None, False)

    def _adopt_reset(self, text: str, first: float, last: float) -> int | None:
        """The window index a sane Reset names; None (logged once) for a nonsensical one."""
        try:
            reset = float(text.strip())
        except ValueError:
            reset = math.nan
        if math.isfinite(reset) and first < reset <= last + RESET_LEARN_MAX_AHEAD_SECONDS:
            self._learn_window(reset, first, last)
        n = round((reset - self._phase) / self._window) if math.isfinite(reset) else 0
        if not math.isfinite(reset):
            problem = "not a number"
        elif abs(reset - self._end(n)) > self._grid_tolerance():
            problem = "not on the window grid"
        elif reset <= first:
            problem = "in the past"
        elif reset > last + RESET_MAX_WINDOWS_AHEAD * self._window:
            problem = "too far ahead"
        else:
            self._phase = reset - n * self._window
            return n
        self._warn_once(
            "reset",
            "ignoring X-RateLimit-Reset %r (%s); using the configured %g s window",
            text,
            problem,
            self._window,
        )
        return None

    def _learn_window(self, reset: float, first: float, last: float) -> None:
        """Follow the server's window length where its Resets contradict the configured one.

        The configured ``window_seconds`` is only a first guess: a window shorter than the
        server's sends into a spent window (a 429 storm), a longer one idles. A Reset contradicts
        it when it lies more than a window after the latest server time the request can have
        been counted at, or off the window grid. Once contradicted, the spacing of Resets is the
        server's window: two Resets are the ends of different windows only if the later one's
        request was counted after the earlier Reset had passed (a server whose Reset jitters by
        a second names one window twice, not two windows). Consecutive windows are seen whenever
        a run is busy; a skipped one only makes the estimate longer: slow, never refused.
        """
        off_grid = abs(reset - self._grid_end(reset)) > self._grid_tolerance()
        if off_grid or reset - last > self._window + DATE_RESOLUTION_SECONDS:
            self._window_contradicted = True
        self._resets[reset] = max(first, self._resets.get(reset, -math.inf))
        for old in sorted(self._resets)[:-RESETS_KEPT]:
            del self._resets[old]
        ends = sorted(self._resets.items())
        steps = [b - a for (a, _), (b, counted) in itertools.pairwise(ends) if counted >= a]
        window = min(steps) if self._window_contradicted and steps else self._window
        if abs(window - self._window) < DATE_RESOLUTION_SECONDS:
            if off_grid:  # windows that do not start on multiples of their length: re-align
                self._warn_once(
                    "phase",
                    "quota windows end where X-RateLimit-Reset says, off "
                    "the %g s grid of the epoch",
                    self._window,
                    level=logging.INFO,
                )
                self._phase = reset - round(reset / self._window) * self._window
                self._windows.clear()  # keyed by window number on the old grid
            return
        log.warning(
            "the server's quota windows are %g s long (from X-RateLimit-Reset), not the "
            "configured %g s: following the server",
            window,
            self._window,
        )
        self._window = window
        self._phase = reset - round(reset / window) * window
        self._windows.clear()  # keyed by window number on the old grid
        self._window_contradicted = False
        self._pacer = self._make_pacer(self._limit)

    def _learn_offset(self, lo: float, hi: float, now: float) -> None:
        first = self._offset.bounds(now) is None
        if not self._offset.add(lo, hi, now):
            log.info("the server's clock stepped; re-learning its offset")
        if first:  # the local wall clock is never used for waits, but a wrong one misleads users
            ahead = self._wall_theta(now) - (lo + hi) / 2
            if abs(ahead) > CLOCK_WARN_SECONDS + (hi - lo) / 2:
                self._warn_once(
                    "clock",
                    "the local clock is about %.0f s %s the server's; waits follow the server",
                    abs(ahead),
                    "ahead of" if ahead > 0 else "behind",
                )

    def _set_limit(self, limit: int) -> None:
        """The server's X-RateLimit-Limit is the authority; pacing follows it."""
        self._limit = limit
        self._pacer = self._make_pacer(limit)
        if self._reserve >= limit:
            self._warn_once(
                "reserve",
                "reserve %d >= the server's limit %d; reserving %d",
                self._reserve,
                limit,
                limit - 1,
            )

    # -- the window model -----------------------------------------------------------------------

    def _mode(self) -> Mode:
        if self._headerless_streak >= HEADERLESS_STREAK_FOR_FALLBACK or (
            not self._informed and self._headerless_streak > 0
        ):
            return "fallback"
        return "quota" if self._informed else "probe"

    def _available(self, n: int, lo: float, hi: float) -> int:
        """Requests window ``n`` still takes: its limit minus reserve, reported and unplaced."""
        window = self._windows.get(n)
        limit = window.limit if window is not None else self._limit
        spent = window.spent if window is not None else 0
        before = (window.ref_sent_at if window is not None else -math.inf) - self._fifo_guard
        end = self._end(n)
        start = end - self._window
        charged = sum(
            1
            for s in self._unplaced
            if s.sent_at >= before
            and s.sent_at + lo < end
            and (s.done_at is None or s.done_at + hi >= start)
        )
        return self._budget(limit) - spent - charged

    def _in_flight_into(self, n: int, lo: float) -> bool:
        end = self._end(n)
        return any(s.done_at is None and s.sent_at + lo < end for s in self._unplaced)

    def _view(self, now: float, lo: float, hi: float) -> range:
        """The windows a request sent now may be counted in, as far as the offset is known."""
        return range(self._index_at(now + lo), self._index_at(now + hi) + 1)

    def _at_top(self, n: int, now: float, hi: float) -> bool:
        return now + hi < self._end(n) - self._window * (1 - AT_TOP_WINDOW_FRACTION)

    def _grid_tolerance(self) -> float:
        return min(RESET_GRID_TOLERANCE_SECONDS, RESET_GRID_TOLERANCE_FRACTION * self._window)

    def _grid_end(self, server_time: float) -> float:
        """The window end of the current grid nearest to ``server_time``."""
        return round((server_time - self._phase) / self._window) * self._window + self._phase

    def _end(self, n: int) -> float:
        """Server time at which window ``n`` ends (its X-RateLimit-Reset)."""
        return n * self._window + self._phase

    def _index_at(self, server_time: float) -> int:
        return math.floor((server_time - self._phase) / self._window) + 1

    def _budget(self, limit: int) -> int:
        return limit - min(self._reserve, limit - 1)

    def _in_flight(self) -> int:
        return sum(1 for s in self._unplaced if s.done_at is None)

    def _recent_done(self, now: float) -> int:
        """Requests answered (or abandoned) within the last window: they may share one window."""
        return len(self._done_log) - bisect.bisect_right(self._done_log, now - self._window)

    def _foreign_per_window(self, now: float) -> int:
        """Other tools' spending: the most seen in the current or the last finished window."""
        bounds = self._offset.bounds(now)
        if bounds is None:
            return 0
        current = self._index_at(now + bounds[0])
        windows = (self._windows.get(n) for n in (current - 1, current))
        seen = (w.spent - w.ours for w in windows if w is not None and w.replies)
        return max(0, max(seen, default=0))

    def _forget(self, now: float, lo: float, hi: float) -> None:
        """Drop windows, placed requests and log entries that can no longer matter."""
        current = self._index_at(now + lo)
        for n in [n for n in self._windows if n < current - PAST_WINDOWS_KEPT]:
            del self._windows[n]
        start = self._end(current) - self._window
        self._unplaced -= {
            s for s in self._unplaced if s.done_at is not None and s.done_at + hi < start
        }

    def _wall_theta(self, now: float) -> float:
        """theta as the local wall clock would have it: only a first guess."""
        return self._clock.wall() - now

    def _make_pacer(self, limit: int) -> AsyncLimiter:
        rate = limit / (self._window * PACING_WINDOW_FRACTION)  # requests per second
        return AsyncLimiter(self._concurrency, self._concurrency / rate)

    def _warn_once(
        self, key: str, message: str, *args: object, level: int = logging.WARNING
    ) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.log(level, message, *args)
