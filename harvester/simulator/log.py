"""The request log: every request the simulator saw, and how it was answered.

Why it exists: tests judge a client by what reached the server (how many requests, which were
retried, what each cost), so the server records each exchange as a :class:`LogEntry`, and
:class:`RequestLog` lets a test thread read them while the server thread appends.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One request as the server saw it. ``path`` is below the base (``/path/...``, ``/auth``)."""

    t: float  # time.monotonic() at arrival
    at: float  # server clock (epoch seconds, skew included) at arrival
    method: str
    path: str
    phone: str | None
    start: str | None
    end: str | None
    status: int | None  # None: dropped, no reply at all
    outcome: str  # ok, 400, 401, 404, 405, 429, 500, dropped, malformed, truncated
    remaining: int  # X-RateLimit-Remaining as sent (or as it would have been sent)


class RequestLog:
    """Every request, appended by the server thread and read by tests under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LogEntry] = []

    def append(self, entry: LogEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[LogEntry]:
        """A snapshot, in the order the replies were sent (arrival order unless latency varies)."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self.entries())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def count(
        self, *, status: int | None = None, outcome: str | None = None, path: str | None = None
    ) -> int:
        """How many requests match every filter given (None matches anything)."""
        return sum(
            1
            for e in self.entries()
            if (status is None or e.status == status)
            and (outcome is None or e.outcome == outcome)
            and (path is None or e.path == path)
        )

    def outcomes(self) -> Counter[str]:
        return Counter(e.outcome for e in self.entries())

    def successes_by_path(self) -> Counter[str]:
        """Paths (as ``Job.path``) answered 200 with valid data, with how often."""
        return Counter(e.path for e in self.entries() if e.outcome == "ok" and e.path != "/auth")
