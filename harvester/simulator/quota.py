"""The account's quota: fixed windows on the server's clock, shared with the account's other tool.

Why it exists: the quota is the trap a harvester must respect, so its accounting is kept in one
place, small enough to check against the API document. Windows are aligned to multiples of
``window_seconds`` on the *server's* clock (which may be skewed), and every reply states the
result in its ``X-RateLimit-*`` headers. Documented choices where the API is silent:

- every request that passes authentication is counted at arrival, including 400s and every
  faulty reply (500, malformed, truncated and *dropped*: the server did the work, the client
  cannot tell), and 429s unless ``count_429`` is False;
- 401s, 404s and 405s are not counted: the server cannot (or need not) attribute them;
- the counter is per account and shared by all of its temporary credentials; "another tool"
  of the account (``other_client_spend``) spends from it too.

``POST /auth`` has its own counter and limit, which no other tool spends from.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
from dataclasses import dataclass

from harvester.simulator.sampling import seeded_rng
from harvester.simulator.settings import SimulatorSettings


@dataclass(frozen=True, slots=True)
class QuotaState:
    """The account's quota as the ``X-RateLimit-*`` headers state it."""

    limit: int
    used: int
    reset: int  # epoch seconds (server clock) when the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class _Window:
    """Requests counted in the current fixed window; forgets them when a new window begins."""

    def __init__(self) -> None:
        self.index: int | None = None
        self.used = 0

    def at(self, index: int) -> int:
        if index != self.index:
            self.index, self.used = index, 0
        return self.used


@functools.lru_cache(maxsize=256)
def _other_moments(seed: int, index: int, spend: int, length: float) -> list[float]:
    """Seeded random offsets into window ``index`` at which the other tool sends its requests."""
    rng = seeded_rng(seed, "other", index)
    return sorted(rng.uniform(0.0, length) for _ in range(spend))


class AccountQuota:
    """The account's two counters, data requests and ``POST /auth``, safe across threads.

    Settings are passed on every call rather than kept, because they may change live.
    """

    def __init__(self) -> None:
        self._data_window = _Window()
        self._auth_window = _Window()
        self._lock = threading.Lock()  # the server thread counts, test threads read

    def data(self, s: SimulatorSettings, now: float, *, spend: bool) -> tuple[QuotaState, bool]:
        """Count a data request at ``now`` if ``spend``; return the state and whether it may go."""
        length = s.window_seconds
        index = math.floor(now / length)
        other = 0
        if s.other_client_spend:
            offset = now - index * length
            if s.other_client_at is not None:
                other = s.other_client_spend if offset >= s.other_client_at else 0
            else:
                moments = _other_moments(s.seed, index, s.other_client_spend, length)
                other = bisect.bisect_right(moments, offset)
        with self._lock:
            own = self._data_window.at(index)
            allowed = own + other < s.limit
            if spend and (allowed or s.count_429):
                own = self._data_window.used = own + 1
        return QuotaState(s.limit, own + other, math.ceil((index + 1) * length)), allowed

    def auth(self, s: SimulatorSettings, now: float, *, spend: bool) -> tuple[QuotaState, bool]:
        """Like :meth:`data` for ``POST /auth``: its own counter, limit and no other tool."""
        index = math.floor(now / s.window_seconds)
        with self._lock:
            used = self._auth_window.at(index)
            allowed = used < s.auth_limit
            if spend and (allowed or s.count_429):
                used = self._auth_window.used = used + 1
        return QuotaState(s.auth_limit, used, math.ceil((index + 1) * s.window_seconds)), allowed
