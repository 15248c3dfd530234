"""Where the server's quota windows end, learnt from its ``X-RateLimit-Reset`` values.

The configured ``window_seconds`` is only a first guess, and windows aligned to multiples of it
on the epoch are only the documented case: the server's Resets are the authority. A window shorter
than the server's sends into a spent window (a 429 storm), a longer one idles, and windows that
end a few seconds off the grid would be entered too early. So the grid (``n * length + phase`` on
the server's clock, window ``n`` ending at ``end(n)``) follows the Resets: a Reset near a grid end
nudges the phase, a Reset off the grid re-aligns it (logged once), and Resets that contradict the
length teach the server's own length from their spacing. A Reset that is nonsense (not a number,
in the past, far ahead) names no window and is logged once.

This module knows nothing of budgets or requests: it answers "which window does this Reset name"
and "did the grid move" (window numbers from before a move mean other windows).
"""

from __future__ import annotations

import itertools
import logging
import math

from harvester.api.headers import DATE_RESOLUTION_SECONDS
from harvester.gate.notes import OnceLog, log

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


def parse_reset(text: str | None) -> float:
    """A Reset header's value as epoch seconds; NaN when missing or not a number."""
    if text is None:
        return math.nan
    try:
        return float(text.strip())
    except ValueError:
        return math.nan


class WindowGrid:
    """Window ends on the server's clock: ``end(n) = n * length + phase``."""

    __slots__ = ("_contradicted", "_once", "_resets", "length", "phase")

    def __init__(self, length: float, once: OnceLog) -> None:
        self.length = float(length)
        self.phase = 0.0
        # recent Resets -> the latest "counted no earlier than" bound of a request they ended
        self._resets: dict[float, float] = {}
        self._contradicted = False  # a Reset did not fit the length we use
        self._once = once

    def end(self, n: int) -> float:
        """Server time at which window ``n`` ends (its X-RateLimit-Reset)."""
        return n * self.length + self.phase

    def index_at(self, server_time: float) -> int:
        """The window that holds ``server_time``."""
        return math.floor((server_time - self.phase) / self.length) + 1

    def tolerance(self) -> float:
        """How far a Reset may be from a window end and still name it."""
        return min(RESET_GRID_TOLERANCE_SECONDS, RESET_GRID_TOLERANCE_FRACTION * self.length)

    def nearest_end(self, server_time: float) -> float:
        """The window end of the current grid nearest to ``server_time``."""
        return round((server_time - self.phase) / self.length) * self.length + self.phase

    def too_far(self, reset: float, server_time: float) -> bool:
        """A Reset further ahead than any window of ours can end: nonsense, or a refusal that
        is not about this quota window (a suspended account, a broken proxy)."""
        return reset > server_time + RESET_MAX_WINDOWS_AHEAD * self.length

    def adopt(self, text: str, first: float, last: float) -> tuple[int | None, bool]:
        """The window a Reset names, for a request counted between server times ``first`` and
        ``last``: None (logged once) for a nonsensical one. Also whether the grid moved, which
        makes every window number known before it stale."""
        reset = parse_reset(text)
        moved = False
        if math.isfinite(reset) and first < reset <= last + RESET_LEARN_MAX_AHEAD_SECONDS:
            moved = self._learn(reset, first, last)
        n = round((reset - self.phase) / self.length) if math.isfinite(reset) else 0
        if not math.isfinite(reset):
            problem = "not a number"
        elif abs(reset - self.end(n)) > self.tolerance():
            problem = "not on the window grid"
        elif reset <= first:
            problem = "in the past"
        elif self.too_far(reset, last):
            problem = "too far ahead"
        else:
            self.phase = reset - n * self.length
            return n, moved
        self._once(
            "reset",
            "ignoring X-RateLimit-Reset %r (%s); using the configured %g s window",
            text,
            problem,
            self.length,
        )
        return None, moved

    def _learn(self, reset: float, first: float, last: float) -> bool:
        """Follow the server's window length where its Resets contradict ours; True if the
        grid moved.

        A Reset contradicts the length when it lies more than a window after the latest server
        time the request can have been counted at, or off the grid. Once contradicted, the
        spacing of Resets is the server's window: two Resets are the ends of different windows
        only if the later one's request was counted after the earlier Reset had passed (a server
        whose Reset jitters by a second names one window twice, not two windows). Consecutive
        windows are seen whenever a run is busy; a skipped one only makes the estimate longer:
        slow, never refused.
        """
        off_grid = abs(reset - self.nearest_end(reset)) > self.tolerance()
        if off_grid or reset - last > self.length + DATE_RESOLUTION_SECONDS:
            self._contradicted = True
        self._resets[reset] = max(first, self._resets.get(reset, -math.inf))
        for old in sorted(self._resets)[:-RESETS_KEPT]:
            del self._resets[old]
        ends = sorted(self._resets.items())
        steps = [b - a for (a, _), (b, counted) in itertools.pairwise(ends) if counted >= a]
        length = min(steps) if self._contradicted and steps else self.length
        if abs(length - self.length) < DATE_RESOLUTION_SECONDS:
            if not off_grid:
                return False
            # windows that do not start on multiples of their length: re-align
            self._once(
                "phase",
                "quota windows end where X-RateLimit-Reset says, off the %g s grid of the epoch",
                self.length,
                level=logging.INFO,
            )
            self.phase = reset - round(reset / self.length) * self.length
            return True
        log.warning(
            "the server's quota windows are %g s long (from X-RateLimit-Reset), not the "
            "configured %g s: following the server",
            length,
            self.length,
        )
        self.length = length
        self.phase = reset - round(reset / length) * length
        self._contradicted = False
        return True
