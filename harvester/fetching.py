"""One job, sent until it is done or failed for good: the scheduler's per-job loop.

Each exchange comes back from the API layer as one typed outcome (:mod:`harvester.api.outcomes`)
and is matched here in a few lines; see :mod:`harvester.scheduler` for what each one does to the
job. Counts change only for what happened: ``attempts`` for exchanges that reached the server
and count against the job, ``waits`` for those that never left; none is corrected afterwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from harvester import __version__
from harvester.api.client import ApiClient
from harvester.api.credentials import Credentials
from harvester.api.outcomes import (
    InvalidBody,
    Misconfigured,
    NoReply,
    NotSent,
    Outcome,
    RateLimited,
    Rejected,
    Rows,
    ServerError,
    Unauthorized,
    Unfinished,
    Unreachable,
)
from harvester.clock import Clock
from harvester.config import Config
from harvester.errors import ConfigError
from harvester.gate import Permit, QuotaGate
from harvester.jobs import Job
from harvester.logs import format_duration
from harvester.progress import ProgressSink
from harvester.store import FetchMeta, StoreWriter
from harvester.storm import StormBreaker, Verdict
from harvester.summary import RunSummary

if TYPE_CHECKING:
    from harvester.scheduler import RetryPolicy

log = logging.getLogger("harvester")

# Waits while the API is unreachable back off like retries, up to this attempt's delay.
OUTAGE_BACKOFF_STEPS = 16
UNFINISHED: Literal["unfinished"] = "unfinished"  # exchange(): the window is not over yet


@dataclass(frozen=True, slots=True)
class Final:
    """A request's last exchange: rows, a rejection, or the last failure once retries are
    spent; ``reason`` says why it failed (empty for rows), ``quarantine`` its invalid bodies."""

    outcome: Rows | Rejected | InvalidBody | ServerError | NoReply
    attempts: int
    quarantine: list[InvalidBody]
    reason: str


class JobFetcher:
    """Fetches jobs one at a time (one per worker) through the storm breaker and the quota gate,
    records each in the store's writer and counts it in the run's summary.

    ``sending`` holds the tasks with a request on the wire (a stop gives them a grace);
    ``outage`` says why the run stopped when the API stayed unreachable too long.
    """

    def __init__(
        self,
        config: Config,
        client: ApiClient,
        gate: QuotaGate,
        writer: StoreWriter,
        summary: RunSummary,
        *,
        clock: Clock,
        progress: ProgressSink,
        retry: RetryPolicy,
        stop: asyncio.Event,
        as_of: dt.date | None,
        room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.gate = gate
        self.writer = writer
        self.summary = summary
        self.clock = clock
        self.progress = progress
        self.retry = retry
        self.stop = stop
        self.as_of = as_of
        self.room = room  # waits while the writer holds more than it should (backpressure)
        self.storm = StormBreaker(retry.storm, clock)
        self.rng = random.Random()
        self.sending: set[asyncio.Task[None]] = set()
        self.unreachable_since: float | None = None  # the API has refused connections since
        self.outage: str | None = None

    async def fetch(self, job: Job) -> None:
        """Send ``job`` until it is done or failed for good, and record it; return early on a
        stop request."""
        final = await self.exchange(job)
        if final == UNFINISHED:
            self._unfinished(job)
        if not isinstance(final, Final):
            return
        outcome, attempts, quarantine = final.outcome, final.attempts, final.quarantine
        if isinstance(outcome, Rows):
            self._record_quarantine(job, quarantine)
            meta = self._meta(job, outcome.head.status, attempts - len(quarantine))
            self.writer.record_done(job, outcome.rows.columns(), outcome.body, meta)
            self.summary.done += 1
            self.summary.rows += len(outcome.rows)
            self.progress.job_finished(job, "done", len(outcome.rows))
        else:
            self._failed(job, final.reason, outcome, attempts, quarantine)

    async def exchange(self, job: Job) -> Final | Literal["unfinished"] | None:
        """Send ``job`` until it has a final outcome (rows, a rejection, retries spent), which
        is returned unrecorded; ``UNFINISHED``: the window is not over; None: a stop request.

        The stop flag is checked before the gate is entered: once the gate grants a permit the
        request is sent (it is "on the wire" for the stop's grace), so the gate never has to
        charge a permit that sent nothing. A stop while waiting in the gate cancels the task.
        A count changes only for what happened: ``attempts`` for exchanges that reached the
        server and count against the job, ``waits`` for exchanges that never left.
        """
        if self.room is not None:
            await self.room()
        attempts = waits = 0
        quarantine: list[InvalidBody] = []  # invalid bodies, recorded with the job's outcome
        while not self.stop.is_set():
            if self._not_over(job):
                return UNFINISHED
            credentials = await self.client.authorize()
            if not isinstance(credentials, Credentials):
                waits += 1
                await self._not_sent(credentials, waits)
                continue
            outcome = await self._send(job, credentials)
            match outcome:
                case Unreachable() | Misconfigured():
                    waits += 1
                    await self._not_sent(outcome, waits)
                    continue
                case RateLimited():  # the gate waits for the reset; never an attempt
                    self.summary.rate_limited += 1
                    continue
                case Unauthorized():  # not counted by the server either
                    if self.stop.is_set():
                        return None
                    renewed = await self.client.renew(credentials)
                    if not isinstance(renewed, Credentials):
                        waits += 1
                        await self._not_sent(renewed, waits)
                    continue
                case Unfinished():
                    return UNFINISHED
            attempts += 1
            match outcome:
                case Rows():
                    return Final(outcome, attempts, quarantine, "")
                case Rejected(reason=reason):  # a retry gets the same answer
                    return Final(outcome, attempts, quarantine, reason)
                case InvalidBody(reason=reason):
                    self.summary.quarantined += 1
                    quarantine.append(outcome)
                case ServerError(reason=reason) | NoReply(reason=reason):
                    pass
            if attempts >= self.retry.max_attempts:
                return Final(outcome, attempts, quarantine, f"{reason} (after {attempts} attempts)")
            if self.stop.is_set():
                return None
            self.summary.retries += 1
            log.debug("retrying %s after %s", job.path, reason)
            await self.clock.sleep(self.retry.delay(attempts, self.rng))
        return None

    async def _send(self, job: Job, credentials: Credentials) -> Outcome:
        """One request of ``job`` through the storm breaker and the quota gate. A storm that
        began while this request waited for the gate holds it back: the permit is returned
        unused (the gate charges nothing for it) and the request waits for the storm's probe."""
        task = asyncio.current_task()
        assert task is not None
        while True:
            probe = await self.storm.wait_to_send()
            async with self.gate.request() as permit:
                if self.storm.holds(probe):
                    permit.unsent()
                    continue
                self.sending.add(task)
                outcome: Outcome | None = None  # stays None if a stop abandons the request
                try:
                    outcome = await self.client.fetch(job.path, job.window_end, credentials)
                finally:
                    self.sending.discard(task)
                    if not isinstance(outcome, Unreachable | Misconfigured):
                        self.summary.requests += 1  # it left (an abandoned one may have, too)
                _tell_gate(permit, outcome)
            if not isinstance(outcome, Unreachable | Misconfigured):
                self.unreachable_since = None  # the server was heard from
            self.storm.record(_health(outcome), probe)
            return outcome

    def _not_over(self, job: Job) -> bool:
        """A job whose window the server's day has not passed is not sent: its reply would
        only be recorded as unfinished."""
        return self.client.server_today is not None and job.window_end >= self.client.server_today

    def _unfinished(self, job: Job) -> None:
        self.summary.unfinished += 1
        self.progress.job_finished(job, "unfinished", 0)

    async def _not_sent(self, outcome: NotSent, waits: int) -> None:
        """A request that could not be sent: a misconfiguration stops the run (exit 2); while
        the API refuses connections, jobs wait (backing off) rather than fail, and once it has
        been unreachable for longer than ``outage_patience`` the run stops: everything fetched
        is kept, and the jobs left are the next run's."""
        if isinstance(outcome, Misconfigured):
            source = self.config.source or "config"
            raise ConfigError(
                f"{source}: [api] base_url: {self.config.api.base_url}: {outcome.reason}"
            )
        now = self.clock.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
            log.warning(
                "the API is unreachable (%s); jobs wait for it, for %s at most",
                outcome.reason,
                format_duration(self.retry.outage_patience),
            )
        elif now - self.unreachable_since > self.retry.outage_patience:
            if self.outage is None:
                lasted = format_duration(now - self.unreachable_since)
                self.outage = (
                    f"the API has been unreachable for {lasted} ({outcome.reason}); stopped: "
                    "everything fetched is stored, re-run to resume"
                )
            self.stop.set()
            return
        await self.clock.sleep(self.retry.delay(min(waits, OUTAGE_BACKOFF_STEPS), self.rng))

    def _record_quarantine(self, job: Job, quarantine: list[InvalidBody]) -> None:
        """Keep each invalid body of a job, just before the job's outcome: a job is never left
        marked failed by a body that a later attempt replaced (the outcome's record wins)."""
        for invalid in quarantine:
            meta = self._meta(job, invalid.head.status, 1)
            self.writer.record_failed(job, invalid.reason, invalid.body, meta, True)

    def _failed(
        self,
        job: Job,
        reason: str,
        last: Rejected | InvalidBody | ServerError | NoReply,
        attempts: int,
        quarantine: list[InvalidBody],
    ) -> None:
        last_invalid = bool(quarantine) and quarantine[-1] is last
        earlier = quarantine[:-1] if last_invalid else quarantine
        self._record_quarantine(job, earlier)
        body = None if isinstance(last, NoReply) else last.body
        status = last.head.status if last.head is not None else None
        meta = self._meta(job, status, attempts - len(earlier))
        self.writer.record_failed(
            job, reason, body, meta, last_invalid, rejected=isinstance(last, Rejected)
        )
        self.summary.failed.append((job, reason))
        self.progress.job_finished(job, "failed", 0)
        log.warning(
            "job failed: %s %s..%s: %s", job.phone, job.window_start, job.window_end, reason
        )

    def _meta(self, job: Job, status: int | None, attempts: int) -> FetchMeta:
        return FetchMeta(
            fetched_at=dt.datetime.fromtimestamp(self.clock.wall(), dt.UTC),
            attempts=attempts,
            http_status=status,
            request_path=job.path,
            harvester_version=__version__,
            as_of=self.as_of,
        )


def _tell_gate(permit: Permit, outcome: Outcome) -> None:
    """What the quota gate must learn from an exchange: the reply's head, or that nothing left
    (a lost reply without a head tells it nothing: the request stays charged)."""
    match outcome:
        case Unreachable() | Misconfigured():
            permit.unsent()
        case NoReply(head=None):
            pass
        case _:
            assert outcome.head is not None
            permit.observe(outcome.head.status, outcome.head.headers)


def _health(outcome: Outcome) -> Verdict:
    """What an exchange says of the server's health, for the storm breaker."""
    match outcome:
        case ServerError():
            return "server error"
        case NoReply() | Unreachable() | Misconfigured():
            return "no answer"
        case _:
            return "ok"
