"""The books of the window model: what each server window was charged, as far as we know.

Per window (keyed by its number on the grid), ``spent`` is the highest count any reply reported
and ``ref`` the send time of that reply's request. Our requests that no reply has placed yet are
charged to every window they may land in, unless they were sent clearly before ``ref`` (the
server counts in arrival order, so those are already in ``spent``). This module keeps those books
and answers "how much is charged to window n"; the model decides what a reply means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harvester.gate.grid import WindowGrid
from harvester.gate.notes import log

# Requests sent at least this much earlier than another are assumed to reach the server's counter
# first (it counts in arrival order). Covers jitter between simultaneous sends and a request held
# up by one lost SYN (RFC 6298's initial retransmission timeout is 1 s). The books widen it when
# replies show the server counted requests further out of order than that.
FIFO_GUARD_SECONDS = 2.0
# Windows kept after they ended: the last one feeds the other tools' spending estimate.
PAST_WINDOWS_KEPT = 2


@dataclass(slots=True, eq=False)  # compared and hashed by identity: kept in a set
class Sent:
    """One granted request: charged to every window it may land in until a reply places it."""

    sent_at: float
    # the latest local time it can have reached the server; None while it is on the wire
    done_at: float | None = None


@dataclass(slots=True)
class Window:
    """What the server told us about one of its windows."""

    limit: int
    spent: int = 0  # highest count any reply reported (limit - remaining)
    ref_sent_at: float = -math.inf  # send time of the request whose reply reported ``spent``
    replies: int = 0  # all of them ours: the rest of ``spent`` is other tools
    at_top: bool = False  # entered near its start: no probe needed (see the model)

    def report(self, spent: int, sent_at: float) -> float:
        """Take a reply's count; return how much later than the reference its request was sent
        if it was counted *earlier* (0.0 if not): the server reordered requests that far apart."""
        if spent > self.spent or (spent == self.spent and sent_at > self.ref_sent_at):
            self.spent, self.ref_sent_at = spent, sent_at
            return 0.0
        return max(0.0, sent_at - self.ref_sent_at) if spent < self.spent else 0.0


class WindowBooks:
    """Windows we heard of, and our requests no reply has placed in one yet."""

    __slots__ = ("_fifo_guard", "_unplaced", "windows")

    def __init__(self) -> None:
        self.windows: dict[int, Window] = {}
        self._unplaced: set[Sent] = set()
        self._fifo_guard = FIFO_GUARD_SECONDS  # widened when the server reorders more than that

    def grant(self, now: float) -> Sent:
        sent = Sent(now)
        self._unplaced.add(sent)
        return sent

    def release(self, sent: Sent) -> None:
        """The request is placed (a reply named its window) or never left."""
        self._unplaced.discard(sent)

    def report(self, n: int, limit: int, spent: int, sent: Sent, length: float) -> None:
        """A reply placed ``sent`` in window ``n`` and said ``spent`` of ``limit`` are used."""
        window = self.windows.setdefault(n, Window(limit))
        window.limit = limit
        reordered = window.report(spent, sent.sent_at)
        if reordered >= self._fifo_guard:
            self._fifo_guard = min(length, reordered + FIFO_GUARD_SECONDS)
            log.info("the server counted requests %.1f s out of order", reordered)
        window.replies += 1
        self._unplaced.discard(sent)

    def charged(self, n: int, lo: float, hi: float, grid: WindowGrid) -> int:
        """What window ``n`` has taken as far as we know: the count reported, plus our unplaced
        requests that may land in it (``lo``/``hi``: the server clock's offset bounds)."""
        window = self.windows.get(n)
        spent = window.spent if window is not None else 0
        before = (window.ref_sent_at if window is not None else -math.inf) - self._fifo_guard
        end = grid.end(n)
        start = end - grid.length
        return spent + sum(
            1
            for s in self._unplaced
            if s.sent_at >= before
            and s.sent_at + lo < end
            and (s.done_at is None or s.done_at + hi >= start)
        )

    def in_flight(self) -> int:
        return sum(1 for s in self._unplaced if s.done_at is None)

    def in_flight_into(self, end: float, lo: float) -> bool:
        """Whether a request still on the wire may be counted before server time ``end``."""
        return any(s.done_at is None and s.sent_at + lo < end for s in self._unplaced)

    def foreign(self, windows: tuple[int, ...]) -> int:
        """Other tools' spending: the most seen in any of ``windows``."""
        seen = (w.spent - w.replies for n in windows if (w := self.windows.get(n)) and w.replies)
        return max(0, max(seen, default=0))

    def forget(self, current: int, start: float, hi: float) -> None:
        """Drop windows long past and placed requests that ended before the current window's
        ``start`` (server time)."""
        for n in [n for n in self.windows if n < current - PAST_WINDOWS_KEPT]:
            del self.windows[n]
        self._unplaced -= {
            s for s in self._unplaced if s.done_at is not None and s.done_at + hi < start
        }
