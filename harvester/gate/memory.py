"""What a run leaves the next one: the last quota window it saw, as a small plain value.

A run that starts in a window an earlier run spent would otherwise learn that with a probe and a
429. The gate hands out a :class:`LastWindow` (where that window ends on the server's clock, what
was spent in it, and how the server's clock stood against our wall clock), the harvest layer keeps
it in the store, and the next run's gate sends nothing until that window has surely reset.

The monotonic clock does not survive a process, so the server's clock is carried as an offset from
the *wall* clock (``server = wall + offset``, within ``[offset_lo, offset_hi]``); the wait it
implies is judged from the interval's low end, as every wait of the gate is. A value that no
longer fits (the window has reset, another window length, a Reset further than a window ahead
because a clock stepped or the store now talks to another server) is ignored: the cost of
ignoring it is the one probe it would have saved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class LastWindow:
    """The last quota window a gate saw. Plain data: ``to_json``/``from_json`` round-trip it."""

    reset: float  #: server time (epoch seconds) at which the window ends: its X-RateLimit-Reset
    window_seconds: float  #: the window length the gate was using (configured or learnt)
    limit: int  #: the window's X-RateLimit-Limit
    spent: int  #: requests the server had counted in it (others' included) as far as we know
    offset_lo: float  #: server clock minus local wall clock, seconds: low end of the interval
    offset_hi: float  #: ... and high end

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> LastWindow | None:
        """The value saved by :meth:`to_json`; None for anything else (never an exception)."""
        if data is None:
            return None
        try:
            value = cls(
                reset=_number(data["reset"]),
                window_seconds=_number(data["window_seconds"]),
                limit=int(_number(data["limit"])),
                spent=int(_number(data["spent"])),
                offset_lo=_number(data["offset_lo"]),
                offset_hi=_number(data["offset_hi"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        sane = value.window_seconds > 0 and value.limit >= 1 and value.spent >= 0
        return value if sane and value.offset_lo <= value.offset_hi else None

    def resets_in(self, wall: float) -> float | None:
        """Seconds from wall-clock time ``wall`` until the window has surely reset (judged from
        the offset's low end); None when that value no longer fits: already reset, or further
        ahead than one ``window_seconds`` can end, which only a stepped clock or another server
        explains."""
        surely = self.reset - (wall + self.offset_lo)
        possibly = self.reset - (wall + self.offset_hi)
        if surely <= 0 or possibly > self.window_seconds:
            return None
        return surely


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not finite: {value!r}")
    return number
