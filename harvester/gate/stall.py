"""When waiting is pointless: a server that refuses every request, window after window.

A 429 normally means "this window is spent, come back at its Reset", and the gate waits. But a
suspended account, a broken proxy or an account spent by another tool around the clock answers
429 to everything; waiting for the next window then sends one request per window forever, and a
cron sync never ends. So the gate gives up, with the server's own words, when

- every request was refused in ``STALL_WINDOWS`` windows in a row (nothing accepted between), or
- a 429 names a Reset further ahead than a quota window can end (see
  :meth:`~harvester.gate.grid.WindowGrid.too_far`) and no accepted reply ever named that Reset
  (a window we were accepted in is merely spent, even when it is longer than configured).

This module only counts and words it; the model decides what a refusal's window is.
"""

from __future__ import annotations

import math
from collections import deque

from harvester.gate.grid import RESET_MAX_WINDOWS_AHEAD

# Windows in a row in which every request was refused before the gate gives up: one spent by
# another tool is normal, two can be bad luck at a boundary, three is a server that refuses.
STALL_WINDOWS = 3
# Resets named by accepted replies, remembered to tell a spent window from a refusal far ahead.
ACCEPTED_RESETS_KEPT = 8

RefusalKey = tuple[str, int]


class RefusalWatch:
    """Counts windows in which everything was refused; ``stalled`` says why to give up."""

    __slots__ = ("_accepted", "_windows", "stalled")

    def __init__(self) -> None:
        self._windows: set[RefusalKey] = set()
        self._accepted: deque[float] = deque(maxlen=ACCEPTED_RESETS_KEPT)
        self.stalled: str | None = None  # the message, once the gate gives up

    def accepted(self, reset: float) -> None:
        """A reply other than 429: the server takes requests, the refusals so far were spent
        windows. ``reset`` is the Reset it named (NaN if none)."""
        self._windows.clear()
        if math.isfinite(reset) and reset not in self._accepted:
            self._accepted.append(reset)

    def refused(self, window: RefusalKey, answer: str) -> None:
        """A 429 in ``window`` (any key naming one window); ``answer`` describes the reply."""
        self._windows.add(window)
        if len(self._windows) >= STALL_WINDOWS and self.stalled is None:
            self.stalled = f"the API refused every request for {STALL_WINDOWS} windows ({answer})"

    def refused_far_ahead(self, reset: float, answer: str) -> None:
        """A 429 whose Reset lies beyond any window of ours."""
        if reset not in self._accepted and self.stalled is None:
            self.stalled = (
                f"the API refused a request until more than {RESET_MAX_WINDOWS_AHEAD} quota "
                f"windows ahead ({answer})"
            )


def describe(
    status: int,
    *,
    reset_text: str | None,
    reset_ahead: float | None,
    retry_after: float | None,
    quota_headers: bool,
) -> str:
    """What the server answered, for the message a user reads: status and timing headers."""
    parts = [str(status)]
    if reset_ahead is not None:
        parts.append(f"X-RateLimit-Reset {duration(reset_ahead)} ahead")
    elif reset_text is not None:
        parts.append(f"X-RateLimit-Reset {reset_text.strip()[:40]!r}")
    if retry_after is not None:
        parts.append(f"Retry-After {duration(retry_after)}")
    if not quota_headers:
        parts.append("no X-RateLimit headers")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """A rough human duration: ``45 s``, ``13 min``, ``2 hours``."""
    if seconds < 90:
        return f"{max(0.0, seconds):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{round(seconds / 3600, 1):g} hours"
