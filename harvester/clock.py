"""The one clock that the scheduler and the quota gate read.

Why a separate object: the gate's decisions are all about time (when does the server's window
reset, how far is the server's clock from ours), and testing them by really sleeping would make
the suite slow and flaky. Everything time-dependent reads ``Clock.monotonic()`` for intervals and
deadlines and ``Clock.wall()`` for calendar time, and waits with ``Clock.sleep()``.

``SystemClock`` reads the running event loop's clock, exactly as aiolimiter does. That is what
makes fakes cheap: a test runs the code on an event loop whose ``time()`` is virtual and jumps
forward whenever every task is waiting (see ``tests/virtual_time.py``); aiolimiter,
``asyncio.sleep``
and the gate then all agree on one fake timeline. ``LoopClock`` additionally derives the wall clock
from the loop clock, so a virtual-time test sees a consistent calendar too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where time comes from. ``monotonic`` and ``sleep`` share one timeline."""

    def monotonic(self) -> float:
        """Seconds on a monotonic timeline (the event loop's clock)."""
        ...

    def wall(self) -> float:
        """Local calendar time as Unix epoch seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the monotonic timeline."""
        ...


class SystemClock:
    """The real clock: the running loop's monotonic time and the machine's wall clock."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class LoopClock(SystemClock):
    """Wall time = ``epoch_at_zero`` + loop time; for virtual-time event loops in tests."""

    def __init__(self, epoch_at_zero: float) -> None:
        self._epoch_at_zero = epoch_at_zero

    def wall(self) -> float:
        return self._epoch_at_zero + self.monotonic()
