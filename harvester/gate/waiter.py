"""The gate on the wire: a concurrency bound, local pacing, and sleeping until the model allows.

:class:`QuotaGate` is the async face of :class:`~harvester.gate.model.WindowModel`, shaped as
aiolimiter is: a tiny public surface (:meth:`QuotaGate.request`, :meth:`QuotaGate.snapshot`, and
:meth:`~QuotaGate.last_window` / :meth:`~QuotaGate.recall` between runs) over private mechanics.
Three meters, checked in this order:

- a concurrency bound (``concurrency`` requests on the wire at most);
- the model's budget: sleep until its verdict, or until a reply or an abandoned permit changes it;
- local pacing by aiolimiter, so a window's budget never leaves as one burst: a bucket of
  ``concurrency`` that refills fast enough to spend a whole window's budget in a small fraction of
  the window (the budget is checked again after it). It is *not* the quota model: a leaky bucket
  overruns fixed windows and is slow.

Time is read only through the injected :class:`~harvester.clock.Clock`, so tests run on virtual
time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aiolimiter import AsyncLimiter

from harvester.clock import Clock, SystemClock
from harvester.errors import QuotaStalled
from harvester.gate.memory import LastWindow
from harvester.gate.model import GateSnapshot, WindowModel
from harvester.gate.windows import Sent

# A whole window's budget may be paced out in this fraction of the window (18 s of 900 s): fast
# enough to cost well under 1% of a pull, slow enough never to open hundreds of connections at once.
PACING_WINDOW_FRACTION = 0.02
# Shortest re-check delay, so float rounding at a boundary can never spin the event loop.
MIN_RECHECK_SECONDS = 1e-3


class Permit:
    """The right to send one request; report its reply with :meth:`observe`."""

    __slots__ = ("_closed", "_gate", "_observed", "_sent")

    def __init__(self, gate: QuotaGate, sent: Sent) -> None:
        self._gate = gate
        self._sent = sent
        self._observed = False
        self._closed = False

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Feed the reply's status and headers (any status) to the gate. Call once per reply.

        Header names are matched case-insensitively. Leaving the ``async with`` block without
        calling this means "no reply": the request stays charged as if it may have been counted.
        """
        self._settle("observe")
        self._gate._observe(self._sent, status, headers)

    def unsent(self) -> None:
        """The request never left (no connection could be made): release its charge at once,
        instead of holding it like a request lost on the way. Instead of :meth:`observe`."""
        self._settle("unsent")
        self._gate._unsent(self._sent)

    def _settle(self, verb: str) -> None:
        if self._observed or self._closed:
            raise RuntimeError(f"Permit.{verb}() must be called once, inside the permit's block")
        self._observed = True


class QuotaGate:
    """Admits requests so that the server's fixed-window quota is used fully and never exceeded.

    :param limit: requests per window (the server's ``X-RateLimit-Limit`` overrides it).
    :param window_seconds: the window's length; windows are aligned to multiples of it.
    :param reserve: requests per window left unused for the account's other tools.
    :param concurrency: requests on the wire at most (also the pacing burst).
    :param clock: where time comes from; the event loop's clock by default.

    ``request()`` raises :class:`~harvester.errors.QuotaStalled` once the server has refused
    everything for long enough that waiting is pointless (see :mod:`harvester.gate.stall`).
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
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._model = WindowModel(limit=limit, window_seconds=window_seconds, reserve=reserve)
        self._concurrency = concurrency
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._slots = asyncio.Semaphore(concurrency)
        self._paced_for = (limit, self._model.window_seconds)
        self._pacer = self._make_pacer()
        self._waiters: set[asyncio.Future[None]] = set()

    # -- public surface -----------------------------------------------------------------------

    def request(self) -> AbstractAsyncContextManager[Permit]:
        """Wait for a concurrency slot, pacing and budget; the block's body sends one request."""
        return self._permit()

    def snapshot(self) -> GateSnapshot:
        """The gate's current estimates; cheap enough to call on every progress tick."""
        return self._model.snapshot(self._clock.monotonic(), self._clock.wall())

    def last_window(self) -> LastWindow | None:
        """What the gate knows of the last quota window it saw, for the next run to recall."""
        return self._model.last_window(self._clock.monotonic(), self._clock.wall())

    def recall(self, last: LastWindow | None) -> None:
        """Start from an earlier run's :meth:`last_window` (before the first request): a window
        it spent is waited out, not probed. A value that no longer fits is ignored."""
        if last is not None:
            self._model.recall(last, self._clock.monotonic(), self._clock.wall())

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
                    self._model.abandon(sent, self._clock.monotonic())
                    self._wake_all()

    async def _wait_for_budget(self) -> Sent:
        """Wait until the budget allows a request, then for pacing, then grant if still allowed.

        Pacing comes last so that a token is spent only when the request really goes: tokens
        taken before a long wait for the reset would let a second burst follow the first.
        """
        while True:
            self._raise_if_stalled()
            now = self._clock.monotonic()
            recheck = self._model.verdict(now)
            if recheck is None:
                # with a token there, acquire() returns at once and the verdict still holds
                waits = not self._pacer.has_capacity()
                await self._pacer.acquire()
                if waits:  # the budget may have changed while pacing waited
                    now = self._clock.monotonic()
                    recheck = self._model.verdict(now)
                if recheck is None:
                    self._raise_if_stalled()  # a reply may have come in while pacing
                    return self._model.grant(now)
            delay = recheck - self._clock.monotonic()
            await self._wait_for_change(max(delay, MIN_RECHECK_SECONDS))

    def _raise_if_stalled(self) -> None:
        if self._model.stalled is not None:
            raise QuotaStalled(self._model.stalled)

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

    # -- what the replies say -------------------------------------------------------------------

    def _unsent(self, sent: Sent) -> None:
        self._model.unsent(sent)
        self._wake_all()

    def _observe(self, sent: Sent, status: int, headers: Mapping[str, str]) -> None:
        now, wall = self._clock.monotonic(), self._clock.wall()
        self._model.observe(sent, status, headers, now=now, wall=wall)
        if (self._model.limit, self._model.window_seconds) != self._paced_for:
            self._paced_for = (self._model.limit, self._model.window_seconds)
            self._pacer = self._make_pacer()  # the server's limit and window are the authority
        self._wake_all()

    def _make_pacer(self) -> AsyncLimiter:
        limit, window = self._paced_for
        rate = limit / (window * PACING_WINDOW_FRACTION)  # requests per second
        return AsyncLimiter(self._concurrency, self._concurrency / rate)
