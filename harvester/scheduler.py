"""The scheduler: stream a plan's jobs through the quota gate to the API and into the store.

One run = one store lock, one ``aiohttp`` session, one :class:`~harvester.gate.QuotaGate` (which
lets ``concurrency`` requests on the wire) and ``2 x concurrency`` workers that pull jobs from a
shared iterator (the plan is never materialised).
Each job loops until it is done or failed for good:

- 200 with a valid body: done (an empty answer is done with zero rows);
- 200 with an invalid body, 5xx, timeouts, drops: quarantine/retry with capped, jittered backoff,
  every retry paid from the quota, up to ``api.max_attempts``; then failed for this run (the
  next pull or sync tries it again);
- no connection at all (refused, no route, DNS): the request never reached the server, so it
  is neither an attempt nor quota; jobs wait with the same backoff while the API is unreachable,
  for ``outage_patience`` (10 minutes) at most, then the run stops (exit 1), everything kept;
- 429: the gate waits for the window the reply names; retried, never counted as an attempt;
- 400/404/405: rejected, failed for good with the server's message (only ``--retry-failed``
  sends it again); the run goes on;
- 401: renew the temporary credentials if the config can (single-flight), else stop the run
  cleanly with :class:`~harvester.errors.CredentialsError` (exit 3), keeping everything fetched.

Results are buffered in the store's writer and flushed in a worker thread every
``store.flush_jobs`` jobs or ``store.flush_seconds``, so the event loop never waits on fsync.
A stop request (SIGINT/SIGTERM) lets requests already on the wire finish for a short grace,
abandons jobs still waiting for quota, flushes, and raises nothing: the summary says it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from harvester import __version__
from harvester.client import ApiClient, RawReply, TransportError
from harvester.clock import Clock, SystemClock
from harvester.config import Config
from harvester.credentials import CredentialSource
from harvester.errors import CredentialsError, ReplyError, StoreError, StoreWriteError
from harvester.gate import QuotaGate
from harvester.jobs import Job
from harvester.plan import JobIndex, Plan, count
from harvester.progress import NullProgress, ProgressSink, format_duration
from harvester.reply import parse_reply
from harvester.store import FetchMeta, Store, StoreWriter

# Replies that will not change on a retry: such a job is recorded as rejected and waits for
# --retry-failed; any other failure (5xx, transport, an invalid body, retries spent) is tried
# again by the next pull or sync. (The store records the verdict; it reads no status.)
REJECTED_STATUSES = frozenset({400, 404, 405})

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

Outcome = Literal["done", "failed"]


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried (tests shrink the backoff)."""

    max_attempts: int = 6
    backoff_base: float = BACKOFF_BASE_SECONDS
    backoff_cap: float = BACKOFF_CAP_SECONDS
    outage_patience: float = OUTAGE_PATIENCE_SECONDS

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1``."""
        return rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))


@dataclass
class RunSummary:
    """What a pull or sync did; ``exit_code`` follows the contract."""

    command: str
    run_id: str
    planned: int = 0
    already_done: int = 0
    to_fetch: int = 0
    done: int = 0
    failed: list[tuple[Job, str]] = field(default_factory=list)
    # jobs of the plan that failed in an earlier run and that this run did not retry
    failed_before: list[Job] = field(default_factory=list)
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    rows: int = 0
    quarantined: int = 0
    renewals: int = 0
    elapsed_seconds: float = 0.0
    stopped: Literal["interrupted", "credentials", "unreachable"] | None = None
    message: str | None = None

    @property
    def exit_code(self) -> int:
        if self.stopped == "credentials":
            return 3
        if self.stopped == "interrupted":
            return 130
        if self.stopped == "unreachable":  # finished early; what was left is for the next run
            return 1
        return 1 if self.failed or self.failed_before else 0

    @property
    def pending(self) -> int:
        """Jobs of this run neither done nor failed (a stopped run leaves some)."""
        return max(0, self.to_fetch - self.done - len(self.failed))

    def to_json(self) -> str:
        """The machine-readable summary printed by ``--json``."""
        return json.dumps(
            {
                "command": self.command,
                "run_id": self.run_id,
                "exit_code": self.exit_code,
                "planned": self.planned,
                "already_done": self.already_done,
                "to_fetch": self.to_fetch,
                "done": self.done,
                "failed": [
                    {
                        "phone": j.phone,
                        "window_start": j.window_start.isoformat(),
                        "window_end": j.window_end.isoformat(),
                        "reason": reason,
                    }
                    for j, reason in self.failed
                ],
                "failed_before": [
                    {
                        "phone": j.phone,
                        "window_start": j.window_start.isoformat(),
                        "window_end": j.window_end.isoformat(),
                    }
                    for j in self.failed_before
                ],
                "pending": self.pending,
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "retries": self.retries,
                "rows": self.rows,
                "quarantined": self.quarantined,
                "renewals": self.renewals,
                "elapsed_seconds": round(self.elapsed_seconds, 3),
                "stopped": self.stopped,
                "message": self.message,
            }
        )


def new_run_id(clock: Clock) -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    stamp = dt.datetime.fromtimestamp(clock.wall(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


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
            connector = aiohttp.TCPConnector(limit=config.api.concurrency)
            async with aiohttp.ClientSession(connector=connector) as own:
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
        self.credentials = CredentialSource(config.api, clock)
        self.writer: StoreWriter = store.writer(
            run_id,
            flush_jobs=config.store.flush_jobs,
            flush_seconds=config.store.flush_seconds,
        )
        self.flush_wanted = asyncio.Event()
        self.flush_lock = asyncio.Lock()
        self.sending: set[asyncio.Task[None]] = set()
        self.fatal: CredentialsError | None = None
        self.error: Exception | None = None  # a bug or a store failure: re-raised at the end
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
        client = ApiClient(session, self.config.api.base_url, self.config.api.timeout_seconds)
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
        s.renewals = self.credentials.renewals
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
        except Exception as exc:  # a bug: stop everything, keep what is done, re-raise at the end
            if self.error is None:
                self.error = exc
            self.stop.set()

    async def _run_job(self, job: Job, client: ApiClient) -> None:
        """Send ``job`` until it is done or failed for good; return early on a stop request.

        The stop flag is checked before the gate is entered: once the gate grants a permit the
        request is sent (it is "on the wire" for the stop's grace), so the gate never has to
        charge a permit that sent nothing. A stop while waiting in the gate cancels the task.
        """
        attempts = waits = 0
        quarantine: list[tuple[str, RawReply]] = []  # invalid bodies, recorded with the outcome
        task = asyncio.current_task()
        assert task is not None
        while not self.stop.is_set():
            try:
                credentials = await self.credentials.current(client.session)
            except TransportError as exc:  # POST /auth could not connect
                waits += 1
                await self._wait_out_an_outage(exc, waits)
                continue
            async with self.gate.request() as permit:
                self.sending.add(task)
                attempts += 1
                self.summary.requests += 1
                try:
                    reply: RawReply | None = await client.get(job.path, credentials)
                    problem = None
                except TransportError as exc:
                    reply, problem = None, exc
                finally:
                    self.sending.discard(task)
                if reply is not None:
                    permit.observe(reply.status, reply.headers)
                elif problem is not None and problem.unreachable:
                    permit.unsent()
                elif problem is not None and problem.status is not None:
                    permit.observe(problem.status, problem.headers or {})
            if problem is not None and problem.unreachable:
                attempts -= 1  # it never reached the server: neither an attempt nor quota
                self.summary.requests -= 1
                waits += 1
                await self._wait_out_an_outage(problem, waits)
                continue
            self.unreachable_since = None
            heard = reply.status if reply is not None else problem.status if problem else None
            if heard is not None and heard != 401:  # the server took the credentials
                self.credentials.accepted(credentials)
            if reply is None:
                reason = f"transport: {problem}"
            elif reply.status == 200:
                try:
                    parsed = parse_reply(reply.body)
                except ReplyError as exc:
                    reason = f"invalid reply: {exc}"
                    self.summary.quarantined += 1
                    quarantine.append((reason, reply))
                    if attempts >= self.retry.max_attempts:
                        self._failed(job, reason, reply, attempts, quarantine)
                        return
                else:
                    self._record_quarantine(job, quarantine)
                    meta = self._meta(job, reply, attempts - len(quarantine))
                    self.writer.record_done(job, parsed.columns(), reply.body, meta)
                    self.summary.done += 1
                    self.summary.rows += len(parsed)
                    self.progress.job_finished(job, "done", len(parsed))
                    return
            elif reply.status == 429:
                self.summary.rate_limited += 1
                attempts -= 1  # the gate waits for the reset; a 429 never counts as an attempt
                continue
            elif reply.status == 401:
                attempts -= 1  # not counted by the server either
                if not self.stop.is_set():
                    try:
                        await self.credentials.renew(client.session, stale=credentials)
                    except TransportError as exc:  # POST /auth could not connect
                        waits += 1
                        await self._wait_out_an_outage(exc, waits)
                continue
            elif reply.status in REJECTED_STATUSES:  # a retry gets the same answer
                reason = f"HTTP {reply.status}: {_error_message(reply)}"
                self._failed(job, reason, reply, attempts, quarantine, rejected=True)
                return
            else:
                reason = f"HTTP {reply.status}: {_error_message(reply)}"
            if attempts >= self.retry.max_attempts:
                reason = f"{reason} (after {attempts} attempts)"
                self._failed(job, reason, reply, attempts, quarantine)
                return
            if self.stop.is_set():
                return
            self.summary.retries += 1
            log.debug("retrying %s after %s", job.path, reason)
            await self.clock.sleep(self.retry.delay(attempts, self.rng))

    async def _wait_out_an_outage(self, problem: TransportError, waits: int) -> None:
        """While the API refuses connections, jobs wait (backing off) rather than fail; once it
        has been unreachable for longer than ``outage_patience`` the run stops: everything
        fetched is kept, and the jobs left are the next run's."""
        if not problem.unreachable:
            raise problem
        now = self.clock.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
            log.warning(
                "the API is unreachable (%s); jobs wait for it, for %s at most",
                problem,
                format_duration(self.retry.outage_patience),
            )
        elif now - self.unreachable_since > self.retry.outage_patience:
            if self.outage is None:
                lasted = format_duration(now - self.unreachable_since)
                self.outage = (
                    f"the API has been unreachable for {lasted} ({problem}); stopped: "
                    "everything fetched is stored, re-run to resume"
                )
            self.stop.set()
            return
        await self.clock.sleep(self.retry.delay(min(waits, 16), self.rng))

    def _record_quarantine(self, job: Job, quarantine: list[tuple[str, RawReply]]) -> None:
        """Keep each invalid body of a job, just before the job's outcome: a job is never left
        marked failed by a body that a later attempt replaced (the outcome's record wins)."""
        for reason, reply in quarantine:
            self.writer.record_failed(job, reason, reply.body, self._meta(job, reply, 1), True)

    def _failed(
        self,
        job: Job,
        reason: str,
        reply: RawReply | None,
        attempts: int,
        quarantine: list[tuple[str, RawReply]],
        *,
        rejected: bool = False,
    ) -> None:
        last_invalid = bool(quarantine) and quarantine[-1][1] is reply
        earlier = quarantine[:-1] if last_invalid else quarantine
        self._record_quarantine(job, earlier)
        body = reply.body if reply is not None else None
        meta = self._meta(job, reply, attempts - len(earlier))
        self.writer.record_failed(job, reason, body, meta, last_invalid, rejected=rejected)
        self.summary.failed.append((job, reason))
        self.progress.job_finished(job, "failed", 0)
        log.warning(
            "job failed: %s %s..%s: %s", job.phone, job.window_start, job.window_end, reason
        )

    def _meta(self, job: Job, reply: RawReply | None, attempts: int) -> FetchMeta:
        return FetchMeta(
            fetched_at=dt.datetime.fromtimestamp(self.clock.wall(), dt.UTC),
            attempts=attempts,
            http_status=reply.status if reply is not None else None,
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


def _error_message(reply: RawReply) -> str:
    """The API's ``{"error": ...}`` text, shortened; a placeholder when there is none."""
    try:
        message = json.loads(reply.body).get("error")
    except (ValueError, AttributeError, UnicodeDecodeError):
        message = None
    return str(message)[:200] if message else "no error message"
