"""What we know of the server's clock: the interval known to hold its offset from ours.

The quota's windows end at fixed times on the *server's* clock, and the only clock we can wait on
is the local monotonic one. So the gate needs ``theta`` (server = local monotonic + theta), and
it needs to know how wrong its estimate may be: waiting from the interval's low end is what makes
a new window's first request surely late enough, never early. This module keeps that interval:
each reply bounds ``theta`` (how, is the gate's business: see the "server's clock" paragraph of
:mod:`harvester.gate`), the bounds are intersected over replies, and old bounds widen with the
drift two clocks may have. It knows nothing of windows, quota or headers.
"""

from __future__ import annotations

import math

# Relative drift allowed between our monotonic clock and the server's (20 ppm: the tolerance of
# a common quartz crystal; NTP-synced hosts agree within a few ppm). Old offset bounds widen by
# this; faster drift is absorbed by the gate's WAKE_MARGIN_SECONDS (a further 110 ppm over a
# window).
CLOCK_DRIFT_RATE = 2e-5


class OffsetEstimate:
    """The interval known to hold ``theta`` (server clock = local monotonic + theta)."""

    __slots__ = ("_at", "_hi", "_lo")

    def __init__(self) -> None:
        self._lo: float | None = None
        self._hi = math.inf
        self._at = 0.0

    def bounds(self, now: float) -> tuple[float, float] | None:
        """The interval as of ``now``: older bounds widen by the allowed drift."""
        if self._lo is None:
            return None
        slack = CLOCK_DRIFT_RATE * max(0.0, now - self._at)
        return self._lo - slack, self._hi + slack

    def add(self, lo: float, hi: float, now: float) -> bool:
        """Intersect with ``[lo, hi]``. If that is empty a clock has stepped: the newest interval
        is the only one still true, so start again from it and return False."""
        current = self.bounds(now)
        stepped = False
        if current is not None:
            lo_both, hi_both = max(lo, current[0]), min(hi, current[1])
            stepped = lo_both > hi_both
            if not stepped:
                lo, hi = lo_both, hi_both
        self._lo, self._hi, self._at = lo, hi, now
        return not stepped
