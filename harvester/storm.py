"""A pause in sending while the server answers nothing but errors (a 5xx storm).

Why: every request costs quota, 5xx answers included, and one job may try ``max_attempts``
times. When the server is down behind a proxy that answers 502, or broken and answering 500 to
everything, retrying every job at its own pace spends a window's quota in seconds and fails every
job of the plan. A storm is a run of :attr:`StormPolicy.after` server errors in a row (any job):
then sending pauses for everyone, first for ``pause`` seconds, doubled after every probe that
fails, up to ``pause_cap``. After a pause one request alone goes out (a probe); its answer ends
the storm (anything that is not a server error: the server works again) or starts the next,
longer pause. So a server that stays broken costs a request every ``pause_cap`` at most, and jobs
do not use up their attempts meanwhile.

Time passes only through the injectable clock (:mod:`harvester.clock`), so tests shrink the
pauses through the policy, or run on virtual time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from harvester.clock import Clock

log = logging.getLogger("harvester")

# Server errors in a row (from any job) that make a storm. Five: with independent failures at a
# 30% rate, five in a row happen once in ~400 requests; a broken server gives them in a second.
STORM_AFTER = 5
# The first pause, and the longest. 15 s outlasts a process restart behind a proxy; doubling to
# five minutes means a server broken for an hour costs ~15 requests, 1/10 of one window's quota.
STORM_PAUSE_SECONDS = 15.0
STORM_PAUSE_CAP_SECONDS = 300.0

Verdict = Literal["ok", "server error", "no answer"]


@dataclass(frozen=True)
class StormPolicy:
    """When a storm starts and how long its pauses are (tests shrink them)."""

    after: int = STORM_AFTER
    pause: float = STORM_PAUSE_SECONDS
    pause_cap: float = STORM_PAUSE_CAP_SECONDS


class StormBreaker:
    """Counts server errors in a row and, in a storm, holds senders until a probe is due.

    Senders call :meth:`wait_to_send` before asking the quota gate for a permit, ask
    :meth:`holds` again once they have it, and report what came back with :meth:`record`
    (``"no answer"`` for a lost reply or no connection: it says nothing about the server's
    health, so it neither starts nor ends a storm).
    """

    def __init__(self, policy: StormPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._errors_in_a_row = 0
        self._pause = policy.pause
        self._until: float | None = None  # in a storm: no request before this monotonic time
        self._probing = False  # a probe is out; everyone else waits for its answer
        self._changed = asyncio.Event()
        self.storms = 0  #: storms seen in this run

    @property
    def in_storm(self) -> bool:
        return self._until is not None

    async def wait_to_send(self) -> bool:
        """Return when a request may be sent: at once outside a storm; in one, when this caller
        is the probe that the end of a pause lets out (then True: pass it on to :meth:`record`).
        """
        while self._until is not None:
            wait = self._until - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
                continue
            if not self._probing:
                self._probing = True
                return True
            self._changed.clear()
            await self._changed.wait()
        return False

    def holds(self, probe: bool) -> bool:
        """Whether a sender let through before a storm began must not send after all (it
        waited for a quota permit meanwhile); a probe never is."""
        return self._until is not None and not probe

    def record(self, verdict: Verdict, probe: bool) -> None:
        """What a request sent after :meth:`wait_to_send` came to (``probe``: what it said)."""
        if verdict == "no answer":
            if probe:  # let another sender probe in its place
                self._end_probe()
            return
        if verdict == "ok":
            self._errors_in_a_row = 0
            if self._until is not None:
                log.info("the server answers again; sending resumes")
                self._until = None
                self._pause = self._policy.pause
            self._end_probe()
            return
        self._errors_in_a_row += 1
        if self._until is not None:
            if probe:  # the probe failed: a longer pause
                self._pause = min(self._policy.pause_cap, self._pause * 2)
                self._pause_now()
                self._end_probe()
            return
        if self._errors_in_a_row >= self._policy.after:
            self.storms += 1
            log.warning(
                "the server answered %d errors in a row; pausing requests (%.0f s, growing to "
                "%.0f s while it keeps failing) instead of spending the quota on retries",
                self._errors_in_a_row,
                self._pause,
                self._policy.pause_cap,
            )
            self._pause_now()

    def _pause_now(self) -> None:
        self._until = self._clock.monotonic() + self._pause

    def _end_probe(self) -> None:
        self._probing = False
        self._changed.set()
