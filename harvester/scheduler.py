"""The scheduler: stream a plan's jobs through the quota gate to the API and into the store.

One run = one store lock, one ``aiohttp`` session, one :class:`~harvester.gate.QuotaGate` (which
lets ``concurrency`` requests on the wire) and ``2 x concurrency`` workers that pull jobs from a
shared iterator (the plan is never materialised). Each job loops until it is done or failed for
good, on the outcome the API layer (:mod:`harvester.api`) makes of each exchange:

- rows (an empty answer included): done;
- an invalid body (quarantined), a 5xx, a reply lost on the way: retried with capped, jittered
  backoff, every retry paid from the quota, up to ``api.max_attempts``; then failed for this run
  (the next pull or sync tries it again). Five 5xx in a row pause all sending, for growing pauses
  (:mod:`harvester.storm`), so a broken server costs little quota;
- unreachable (no connection at all): the request never left, so it is neither an attempt nor
  quota; jobs wait with the same backoff for ``outage_patience`` (10 minutes) at most, then the
  run stops (exit 1), everything kept;
- misconfigured (the base URL's host does not resolve, TLS fails): the run stops at once with a
  ConfigError naming ``api.base_url`` (exit 2);
- 429: the gate waits for the window the reply names; sent again, never an attempt;
- 400/404/405: rejected, failed for good with the server's message (only ``--retry-failed``
  sends it again); the run goes on;
- 401: renew the temporary credentials if the config can (single-flight), else stop the run
  cleanly with :class:`~harvester.errors.CredentialsError` (exit 3), keeping everything fetched;
- unfinished (the server's date has not passed the window's end): nothing recorded, the job is
  left for a later run; once the server's date is known, such jobs are not even sent.

Results are buffered in the store's writer and flushed in a worker thread every
``store.flush_jobs`` jobs or ``store.flush_seconds``, so the event loop never waits on fsync.
A stop request (SIGINT/SIGTERM) lets requests already on the wire finish for a short grace,
abandons jobs still waiting for quota, flushes, and raises nothing: the summary says it stopped.
Any other HarvesterError (a misconfiguration, or the quota gate giving up on a server that
refuses everything) stops the run the same way, then propagates with its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp

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
from harvester.api.transport import open_session
from harvester.clock import Clock, SystemClock
from harvester.config import Config
from harvester.errors import (
    ConfigError,
    CredentialsError,
    StoreError,
    StoreWriteError,
)
from harvester.gate import Permit, QuotaGate
from harvester.jobs import Job
from harvester.plan import JobIndex, Plan, count
from harvester.progress import NullProgress, ProgressSink, format_duration
from harvester.retrying import Backoff
from harvester.store import FetchMeta, Store, StoreWriter
from harvester.storm import (
    STORM_AFTER,
    STORM_PAUSE_CAP_SECONDS,
    STORM_PAUSE_SECONDS,
    StormBreaker,
    StormPolicy,
    Verdict,
)
from harvester.summary import RunSummary, new_run_id

__all__ = ["RetryPolicy", "RunSummary", "harvest", "new_run_id"]

log = logging.getLogger("harvester")

# Retry backoff for 5xx, timeouts, drops and malformed bodies: full jitter over an exponential
# ramp (1, 2, 4 ... s) capped at one minute, the usual advice for a shared, rate-limited API.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
# How long the API may stay unreachable (no connection at all) before a run gives up: jobs wait
# meanwhile instead of failing, since such a request never reached the server. Ten minutes
# rides out a restart or a network blip; an outage longer than that is for the next run.
OUTAGE_PATIENCE_SECONDS = 600.0
# After a stop request, how long requests already on the wire may take to come back.
STOP_GRACE_SECONDS = 5.0
# How often the progress display is refreshed.
PROGRESS_INTERVAL_SECONDS = 0.5
# Worker tasks per concurrency slot. A job waiting out its retry backoff (or a credential renewal)
# holds a worker, not a connection: with twice as many workers as the gate has slots, the other
# jobs keep the wire and the window's budget busy meanwhile. The gate still bounds what is sent.
WORKERS_PER_SLOT = 2
# Waits while the API is unreachable back off like retries, up to this attempt's delay.
OUTAGE_BACKOFF_STEPS = 16


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried, and 5xx storms paused (tests shrink the times)."""

    max_attempts: int = 6
    backoff_base: float = BACKOFF_BASE_SECONDS
    backoff_cap: float = BACKOFF_CAP_SECONDS
    outage_patience: float = OUTAGE_PATIENCE_SECONDS
    storm_after: int = STORM_AFTER
    storm_pause: float = STORM_PAUSE_SECONDS
    storm_pause_cap: float = STORM_PAUSE_CAP_SECONDS

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1``."""
        return Backoff(self.backoff_base, self.backoff_cap).delay(attempt, rng)

    @property
    def storm(self) -> StormPolicy:
        return StormPolicy(self.storm_after, self.storm_pause, self.storm_pause_cap)


async def harvest(
    config: Config,
    plan_for: Callable[[JobIndex], Plan],
    *,
    clock: Clock | None = None,
    session: aiohttp.ClientSession | None = None,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
    retry: RetryPolicy | None = None,
) -> RunSummary:
    """Run a pull or sync to completion (or a clean stop) and return its summary.

    ``plan_for`` builds the plan from the store's ledger once the lock is held (a sync needs to
    know where each phone's data ends). Raises StoreError/StoreLockedError before sending
    anything if the store cannot be written.
    """
    clock = clock or SystemClock()
    store = Store(config.store.path)
    run_id = new_run_id(clock)
    store.ensure_writable(config.harvest.window)
    with store.lock(run_id):
        index = store.job_index()
        plan = plan_for(index)
        run = _Run(
            config,
            plan,
            index,
            store,
            run_id,
            clock=clock,
            progress=progress or NullProgress(),
            stop=stop or asyncio.Event(),
            retry=retry or RetryPolicy(max_attempts=config.api.max_attempts),
        )
        if session is not None:
            summary = await run.run(session)
        else:
            async with open_session(config.api) as own:
                summary = await run.run(own)
        if summary.stopped is None and config.store.auto_compact and store.needs_compaction():
            await asyncio.to_thread(store.compact)
    return summary


class _Run:
    """The state of one run; private to this module."""

    def __init__(
        self,
        config: Config,
        plan: Plan,
        index: JobIndex,
        store: Store,
        run_id: str,
        *,
        clock: Clock,
        progress: ProgressSink,
        stop: asyncio.Event,
        retry: RetryPolicy,
    ) -> None:
        self.config = config
        self.plan = plan
        self.index = index
        self.store = store
        self.clock = clock
        self.progress = progress
        self.stop = stop
        self.retry = retry
        self.rng = random.Random()
        self.summary = RunSummary(plan.command, run_id)
        self.gate = QuotaGate(
            limit=config.quota.limit,
            window_seconds=config.quota.window_seconds,
            reserve=config.quota.reserve,
            concurrency=config.api.concurrency,
            clock=clock,
        )
        self.storm = StormBreaker(retry.storm, clock)
        self.writer: StoreWriter = store.writer(
            run_id,
            flush_jobs=config.store.flush_jobs,
            flush_seconds=config.store.flush_seconds,
        )
        self.flush_wanted = asyncio.Event()
        self.flush_lock = asyncio.Lock()
        self.sending: set[asyncio.Task[None]] = set()
        self.fatal: CredentialsError | None = None
        # a bug, a store failure or another HarvesterError: re-raised at the end
        self.error: Exception | None = None
        self.unreachable_since: float | None = None  # the API has refused connections since
        self.outage: str | None = None  # why the run stopped when the API stayed unreachable

    async def run(self, session: aiohttp.ClientSession) -> RunSummary:
        started = self.clock.monotonic()
        counts = count(self.plan, self.index)
        s = self.summary
        s.planned, s.to_fetch = counts.total, counts.to_fetch
        s.already_done = counts.done
        if counts.failed:  # exit 0 means every planned job is done: earlier failures count
            s.failed_before = [
                job
                for job in self.plan.jobs()
                if self.index.state(job.key) == "failed"
                and not self.plan.is_pending(job, "failed", self.index)
            ]
        self.progress.started(self.plan.command, counts, self.gate)
        zone = self.config.harvest.zone()
        client = ApiClient(session, self.config.api, self.clock, zone)
        jobs = self.plan.pending(self.index)  # one generator shared by the workers: streamed
        workers = [
            asyncio.create_task(self._worker(jobs, client))
            for _ in range(self.config.api.concurrency * WORKERS_PER_SLOT)
        ]
        helpers = [
            asyncio.create_task(self._flusher()),
            asyncio.create_task(self._ticker()),
        ]
        watcher = asyncio.create_task(self._watch_stop(workers))
        try:
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            watcher.cancel()
            for task in helpers:
                task.cancel()
            await asyncio.gather(watcher, *helpers, return_exceptions=True)
            async with self.flush_lock:
                await asyncio.to_thread(self.writer.close)
        if self.error is not None:
            raise self.error
        if self.fatal is not None:
            s.stopped, s.message = "credentials", str(self.fatal)
        elif self.outage is not None:
            s.stopped, s.message = "unreachable", self.outage
        elif self.stop.is_set():
            s.stopped = "interrupted"
        s.renewals = client.credentials.renewals
        if s.unfinished:
            log.info(
                "%d jobs end on or after the server's date (%s): not over yet, left for a later "
                "run",
                s.unfinished,
                client.server_today,
            )
        s.elapsed_seconds = self.clock.monotonic() - started
        self.progress.tick(s, self.gate.snapshot())
        self.progress.finished(s)
        return s

    async def _watch_stop(self, workers: list[asyncio.Task[None]]) -> None:
        """On a stop request: abandon every job not on the wire at once (cancelling a task that
        waits in the gate takes nothing from the quota), then give requests on the wire a grace
        to come back and be recorded, then abandon them too."""
        await self.stop.wait()
        for task in workers:
            if task not in self.sending:
                task.cancel()
        alive = [t for t in workers if not t.done()]
        if alive:
            await asyncio.wait(alive, timeout=STOP_GRACE_SECONDS)
        for task in workers:
            task.cancel()

    def request_stop(self, reason: CredentialsError | None = None) -> None:
        if reason is not None and self.fatal is None:
            self.fatal = reason
        self.stop.set()

    async def _worker(self, jobs: Iterator[Job], client: ApiClient) -> None:
        try:
            for job in jobs:
                if self.stop.is_set():
                    return
                await self._run_job(job, client)
                if self.writer.flush_due():
                    self.flush_wanted.set()
        except CredentialsError as exc:
            self.request_stop(exc)
        except Exception as exc:
            # a bug, or a HarvesterError that ends the run (a misconfiguration; the quota gate
            # giving up): stop everything, keep what is done, re-raise at the end
            if self.error is None:
                self.error = exc
            self.stop.set()

    async def _run_job(self, job: Job, client: ApiClient) -> None:
        """Send ``job`` until it is done or failed for good; return early on a stop request.

        The stop flag is checked before the gate is entered: once the gate grants a permit the
        request is sent (it is "on the wire" for the stop's grace), so the gate never has to
        charge a permit that sent nothing. A stop while waiting in the gate cancels the task.
        A count changes only for what happened: ``attempts`` for exchanges that reached the
        server and count against the job, ``waits`` for exchanges that never left.
        """
        attempts = waits = 0
        quarantine: list[InvalidBody] = []  # invalid bodies, recorded with the job's outcome
        while not self.stop.is_set():
            if self._not_over(job, client):
                return
            credentials = await client.authorize()
            if not isinstance(credentials, Credentials):
                waits += 1
                await self._not_sent(credentials, waits)
                continue
            outcome = await self._send(job, client, credentials)
            match outcome:
                case Unreachable() | Misconfigured():
                    waits += 1
                    await self._not_sent(outcome, waits)
                    continue
                case RateLimited():  # the gate waits for the reset; never an attempt
                    self.summary.rate_limited += 1
                    continue
                case Unauthorized():  # not counted by the server either
                    renewed = await client.renew(credentials)
                    if not isinstance(renewed, Credentials):
                        waits += 1
                        await self._not_sent(renewed, waits)
                    continue
                case Unfinished():
                    self._unfinished(job)
                    return
            self.unreachable_since = None
            attempts += 1
            match outcome:
                case Rows(rows=rows, body=body):
                    self._record_quarantine(job, quarantine)
                    meta = self._meta(job, outcome.head.status, attempts - len(quarantine))
                    self.writer.record_done(job, rows, body, meta)
                    self.summary.done += 1
                    self.summary.rows += len(rows)
                    self.progress.job_finished(job, "done", len(rows))
                    return
                case Rejected(reason=reason):  # a retry gets the same answer
                    self._failed(job, reason, outcome, attempts, quarantine)
                    return
                case InvalidBody(reason=reason):
                    self.summary.quarantined += 1
                    quarantine.append(outcome)
                case ServerError(reason=reason) | NoReply(reason=reason):
                    pass
            if attempts >= self.retry.max_attempts:
                reason = f"{reason} (after {attempts} attempts)"
                self._failed(job, reason, outcome, attempts, quarantine)
                return
            if self.stop.is_set():
                return
            self.summary.retries += 1
            log.debug("retrying %s after %s", job.path, reason)
            await self.clock.sleep(self.retry.delay(attempts, self.rng))

    async def _send(self, job: Job, client: ApiClient, credentials: Credentials) -> Outcome:
        """One request of ``job`` through the storm breaker and the quota gate."""
        task = asyncio.current_task()
        assert task is not None
        probe = await self.storm.wait_to_send()
        async with self.gate.request() as permit:
            self.sending.add(task)
            try:
                outcome = await client.fetch(job.path, job.window_end, credentials)
            finally:
                self.sending.discard(task)
            _tell_gate(permit, outcome)
        if not isinstance(outcome, Unreachable | Misconfigured):
            self.summary.requests += 1
        self.storm.record(_health(outcome), probe)
        return outcome

    def _not_over(self, job: Job, client: ApiClient) -> bool:
        """A job whose window the server's day has not passed is not sent: its reply would
        only be recorded as unfinished."""
        if client.server_today is None or job.window_end < client.server_today:
            return False
        self._unfinished(job)
        return True

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
        self.writer.record_failed(job, reason, body, meta, last_invalid)
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
            as_of=self.plan.today,
        )

    async def _flusher(self) -> None:
        """Flush in a worker thread when a batch is full or ``flush_seconds`` have passed."""
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # arrives as the event is set, and the run would wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.store.flush_seconds):
                    await self.flush_wanted.wait()
            self.flush_wanted.clear()
            try:
                async with self.flush_lock:
                    await asyncio.to_thread(self.writer.flush)
            except (StoreError, StoreWriteError) as exc:  # buffer kept; the final flush retries
                if self.error is None:
                    self.error = exc
                self.stop.set()
                return

    async def _ticker(self) -> None:
        while True:
            self.progress.tick(self.summary, self.gate.snapshot())
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)


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
