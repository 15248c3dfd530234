"""One retry policy for what the quota does not govern: the auth call, and reads that race a
compaction.

Why a helper and not tenacity or stamina: both are well kept, but what we retry is small (two
call sites) and must wait on the injectable clock (:mod:`harvester.clock`), so that tests run on
virtual time; a dozen lines say it all. Data requests are *not* retried here: every send of one
costs quota, so the scheduler decides those with the quota gate.

The shape is the same for both call sites: try up to ``attempts`` times; after a failure,
``wait_for(error, attempt)`` says how many seconds to wait before the next try, or None when the
error is not worth another (it propagates at once). The last try's error propagates unchanged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
WaitFor = Callable[[Exception, int], "float | None"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff, ``base * 2^(attempt - 1)`` capped at ``cap``, with optional full
    jitter (a uniform draw below it: the usual advice when many clients retry at once)."""

    base: float
    cap: float
    jitter: bool = True

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        return (rng or random).uniform(0, ceiling) if self.jitter else ceiling


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    wait_for: WaitFor,
    sleep: Callable[[float], Awaitable[None]],
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """``await call()`` until it returns, at most ``attempts`` times (see the module notes)."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            wait = wait_for(exc, attempt)
            if wait is None or attempt == attempts:
                raise
            if on_retry is not None:
                on_retry(exc, wait)
            await sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def retry_sync(
    call: Callable[[], T],
    *,
    attempts: int,
    wait_for: WaitFor,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """``call()`` until it returns, at most ``attempts`` times: the blocking twin of
    :func:`retry_async`, e.g. for a DuckDB read that a compaction's delete may race::

        rows = retry_sync(
            lambda: con.execute(sql).fetchall(),
            attempts=3,
            wait_for=lambda e, n: 0.05 * n if isinstance(e, duckdb.IOException) else None,
        )
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            wait = wait_for(exc, attempt)
            if wait is None or attempt == attempts:
                raise
            sleep(wait)
            if on_retry is not None:
                on_retry(exc, wait)
    raise AssertionError("unreachable")  # pragma: no cover
