"""The quota without headers: a sliding log of when our requests may have been counted.

When a proxy strips ``X-RateLimit-*`` the server's windows cannot be seen, so the gate falls back
to the one rule that is safe whatever their alignment: never more than the budget of requests
that may land in any span of ``window`` seconds. A request "may land" from its send until its
reply (or, for one abandoned without a reply, until a grace period later), so the log keeps those
end times; in-flight requests are counted by the caller.
"""

from __future__ import annotations

import bisect
import math
from array import array


class SlidingLog:
    """End times (local monotonic) of answered or abandoned requests, sorted.

    Every reply adds one, kept for a window: with the quota lifted a window's log holds
    hundreds of thousands, so they are 8-byte doubles in an array, not 32-byte float objects
    in a list (3.2 MB per 100,000 replies)."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = array("d")

    def add(self, done_at: float) -> None:
        bisect.insort(self._done, done_at)

    def recent(self, now: float, window: float) -> int:
        """Requests that ended within the last ``window``: they may share one window with now."""
        return len(self._done) - bisect.bisect_right(self._done, now - window)

    def forget(self, now: float, window: float) -> None:
        """Drop entries older than a window: no span that still matters holds them."""
        del self._done[: bisect.bisect_right(self._done, now - window)]

    def verdict(self, now: float, window: float, in_flight: int, budget: int) -> float | None:
        """None if one more request fits every window-long span; else when to look again
        (``inf``: only when a request in flight ends)."""
        recent = self.recent(now, window)
        excess = in_flight + recent + 1 - budget
        if excess <= 0:
            return None
        if in_flight + 1 > budget:
            return math.inf
        first = len(self._done) - recent
        return self._done[first + excess - 1] + window
