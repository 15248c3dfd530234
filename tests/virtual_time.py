"""An asyncio event loop on virtual time: hours of quota windows run in milliseconds.

The loop's ``time()`` is a number we own. Whenever no callback is ready, instead of blocking in
``select()`` until the earliest timer is due, the selector moves that number forward to it and
returns at once. Everything that reads the loop's clock (``asyncio.sleep``, aiolimiter, the gate
through ``harvester.clock.LoopClock``) then agrees on one fake timeline, and a test observes the
same schedule as a real run, just without the waiting.

Real I/O still works (the selector is polled without blocking), but a test that needs it would
see time jump past its timeouts: keep virtual-time tests to in-process fakes.

If every task waits for something that no timer will ever bring, a real loop would hang; this one
raises :class:`VirtualDeadlock` instead, which turns a lost wake-up into a test failure.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from harvester.clock import LoopClock

T = TypeVar("T")

# An arbitrary instant 100 s into a 15-minute window (1_700_000_100 is a multiple of 900).
DEFAULT_START_EPOCH = 1_700_000_200.0
# Virtual monotonic time at start: not zero, so code that mixes up the monotonic and the wall
# timeline is caught rather than accidentally right.
LOOP_START = 10_000.0
# When the loop has nothing to do but a timer that is already due, the clock still moves this
# far, as a real clock moves between iterations. Without it a timer re-armed within float rounding
# of "now" (aiolimiter computes such wake-ups) fires at an unchanged time forever.
MIN_JUMP_SECONDS = 1e-6


class VirtualDeadlock(RuntimeError):
    """Every task is waiting and no timer is scheduled: a real loop would block forever."""


class _JumpingSelector(selectors.DefaultSelector):
    """Polls for real I/O without blocking, then jumps the loop's clock instead of sleeping."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or (timeout == 0 and self._loop.has_ready_callbacks()):
            return events
        if timeout is None:
            raise VirtualDeadlock("no task can ever be woken: every one awaits without a timer")
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock only moves when nothing else can happen."""

    def __init__(self, start: float = LOOP_START) -> None:
        self._virtual_now = start
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward; the loop runs every timer that has come due."""
        self._virtual_now += max(MIN_JUMP_SECONDS, seconds)

    def has_ready_callbacks(self) -> bool:
        return bool(self._ready)  # type: ignore[attr-defined]  # BaseEventLoop's run queue


def run_virtual(
    main: Callable[[LoopClock], Awaitable[T]],
    *,
    start_epoch: float = DEFAULT_START_EPOCH,
) -> T:
    """Run ``main(clock)`` on a fresh virtual-time loop and return its result.

    ``clock`` is a :class:`~harvester.clock.LoopClock` whose wall time is ``start_epoch`` when the
    run begins and follows the virtual loop from there. Tasks still alive when ``main`` returns
    are cancelled, as :func:`asyncio.run` does.
    """
    loop = VirtualTimeLoop()
    clock = LoopClock(start_epoch - loop.time())

    async def entry() -> T:
        return await main(clock)

    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(entry())
    finally:
        _cancel_leftovers(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks: set[asyncio.Task[Any]] = {t for t in asyncio.all_tasks(loop) if not t.done()}
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
