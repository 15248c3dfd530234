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
- 429: the gate waits for the window the reply names; sent again, never an attempt; a server
  that refuses everything makes the gate give up (QuotaStalled): the run stops (exit 1),
  everything fetched kept;
- 400/404/405: rejected, failed for good with the server's message (only ``--retry-failed``
  sends it again); the run goes on;
- 401: renew the temporary credentials if the config can (single-flight), else stop the run
  cleanly with :class:`~harvester.errors.CredentialsError` (exit 3), keeping everything fetched;
- unfinished (the server's date has not passed the window's end): nothing recorded, the job is
  left for a later run; once the server's date is known, such jobs are not even sent.

Results are buffered in the store's writer and flushed in a worker thread every
``store.flush_jobs`` jobs or ``store.flush_seconds``, so the event loop never waits on fsync.
A stop request (SIGINT/SIGTERM/SIGHUP) lets requests already on the wire finish for a short grace,
abandons jobs still waiting for quota, flushes, and raises nothing: the summary says it stopped.
Any other HarvesterError (a misconfiguration) stops the run the same way, then propagates with
its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from harvester.api.client import ApiClient
from harvester.api.transport import open_session
from harvester.clock import Clock, SystemClock
from harvester.config import Config
from harvester.economy_run import EconomyRun
from harvester.errors import CredentialsError, QuotaStalled, StoreError, StoreWriteError
from harvester.fetching import JobFetcher
from harvester.gate import LastWindow, QuotaGate
from harvester.jobs import Job
from harvester.plan import LedgerLookup, Plan, count, economy_applies
from harvester.progress import NullProgress, ProgressSink
from harvester.retrying import Backoff
from harvester.store import Store, StoreWriter
from harvester.store.compact_child import ChildNotStarted
from harvester.storm import STORM_AFTER, STORM_PAUSE_CAP_SECONDS, STORM_PAUSE_SECONDS, StormPolicy
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
    plan: Plan,
    *,
    clock: Clock | None = None,
    session: aiohttp.ClientSession | None = None,
    progress: ProgressSink | None = None,
    stop: asyncio.Event | None = None,
    retry: RetryPolicy | None = None,
) -> RunSummary:
    """Run a pull or sync to completion (or a clean stop) and return its summary.

    ``plan`` (from :func:`~harvester.plan.pull_plan` or :func:`~harvester.plan.sync_plan`) says
    which jobs the run covers, not which it sends: it is resolved against the store's ledger
    only once the lock is held, so the jobs already done, failed or due for a late-data re-fetch
    are judged on the ledger no other run can change meanwhile. Raises StoreError or
    StoreLockedError before sending anything if the store cannot be written.
    """
    if not isinstance(plan, Plan):  # e.g. the callback harvest() took before it took a plan
        raise TypeError(f"harvest() takes a Plan (pull_plan(...), sync_plan(...)), not {plan!r}")
    clock = clock or SystemClock()
    store = Store(config.store.path)
    run_id = new_run_id(clock)
    store.ensure_writable(config.harvest.window)
    with store.lock(run_id):
        index = store.job_index()
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
        saved = store.load_quota_state() or {}
        if saved.get("api") == config.api.base_url:  # another API's window tells nothing
            run.gate.recall(LastWindow.from_json(saved))
        try:
            if session is not None:
                summary = await run.run(session, proxy_from_env=False)
            else:
                async with open_session(config.api) as own:
                    summary = await run.run(own, proxy_from_env=True)
        finally:  # the next run starts from the last quota window this one saw
            last = run.gate.last_window()
            if last is not None:
                store.save_quota_state({"api": config.api.base_url, **last.to_json()})
        if summary.stopped is None and config.store.auto_compact and store.needs_compaction():
            # in a child process sharing the lock: the compaction's memory (DuckDB, the tables'
            # file lists; ~130 MB at 100,000 jobs) is not added to the pull's resident set
            try:
                await asyncio.to_thread(store.compact_in_child)
            except ChildNotStarted as exc:
                log.warning("%s; compacting in this process", exc)
                await asyncio.to_thread(store.compact)
    return summary


class _Run:
    """The state of one run; private to this module."""

    def __init__(
        self,
        config: Config,
        plan: Plan,
        index: LedgerLookup,
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
        self.summary = RunSummary(plan.command, run_id)
        self.gate = QuotaGate(
            limit=config.quota.limit,
            window_seconds=config.quota.window_seconds,
            reserve=config.quota.reserve,
            concurrency=config.api.concurrency,
            clock=clock,
        )
        self.writer: StoreWriter = store.writer(
            run_id,
            flush_jobs=config.store.flush_jobs,
            flush_seconds=config.store.flush_seconds,
        )
        self.flush_wanted = asyncio.Event()
        self.flushed = asyncio.Event()  # set after each flush (and when the flusher ends)
        self.flush_lock = asyncio.Lock()
        self.fatal: CredentialsError | None = None
        self.stalled: QuotaStalled | None = None  # the gate gave up on a server refusing all
        # a bug, a store failure or another HarvesterError: re-raised at the end
        self.error: Exception | None = None
        self.fetcher: JobFetcher | None = None  # made once the session is known

    async def run(self, session: aiohttp.ClientSession, *, proxy_from_env: bool) -> RunSummary:
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
        client = ApiClient(
            session, self.config.api, self.clock, zone, proxy_from_env=proxy_from_env
        )
        fetcher = self.fetcher = JobFetcher(
            self.config,
            client,
            self.gate,
            self.writer,
            s,
            clock=self.clock,
            progress=self.progress,
            retry=self.retry,
            stop=self.stop,
            as_of=self.plan.today,
            room=self._room,
        )
        if economy_applies(self.plan, self.config.harvest.economy):
            economy = EconomyRun(
                self.plan,
                self.index,
                self.store.path,
                fetcher,
                concurrency=self.config.api.concurrency,
                stop=self.stop,
                grace=STOP_GRACE_SECONDS,
                on_recorded=self.flush_wanted.set,
            )
            workers = [asyncio.create_task(self._guarded(economy.run()))]
            watched: list[asyncio.Task[None]] = []  # it gives requests on the wire their grace
        else:
            jobs = self.plan.pending(self.index)  # one generator shared by the workers: streamed
            workers = watched = [
                asyncio.create_task(self._guarded(self._worker(jobs, fetcher)))
                for _ in range(self.config.api.concurrency * WORKERS_PER_SLOT)
            ]
        helpers = [
            asyncio.create_task(self._flusher()),
            asyncio.create_task(self._ticker()),
        ]
        watcher = asyncio.create_task(self._watch_stop(watched))
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
        elif self.stalled is not None:
            s.stopped = "quota"
            s.message = f"{self.stalled}; stopped: everything fetched is stored, re-run later"
        elif fetcher.outage is not None:
            s.stopped, s.message = "unreachable", fetcher.outage
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
        sending = self.fetcher.sending if self.fetcher is not None else set()
        for task in workers:
            if task not in sending:
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

    async def _worker(self, jobs: Iterator[Job], fetcher: JobFetcher) -> None:
        for job in jobs:
            if self.stop.is_set():
                return
            await fetcher.fetch(job)
            if self.writer.flush_due():
                self.flush_wanted.set()

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``, turning what ends a run into a clean stop (re-raised at the end)."""
        try:
            await work
        except CredentialsError as exc:
            self.request_stop(exc)
        except QuotaStalled as exc:  # waiting longer is pointless: a clean stop, exit 1
            if self.stalled is None:
                self.stalled = exc
            self.stop.set()
        except Exception as exc:
            # a bug, or a HarvesterError that ends the run (a misconfiguration; the quota gate
            # giving up): stop everything, keep what is done, re-raise at the end
            if self.error is None:
                self.error = exc
            self.stop.set()

    async def _room(self) -> None:
        """Backpressure: no new request while a whole batch waits behind the flush being
        written. What a kill -9 can lose (and what the buffer holds in memory) stays within
        the flush on disk, one batch and the requests in flight, however slow the disk."""
        while self.writer.pending >= self.config.store.flush_jobs and not self.stop.is_set():
            self.flushed.clear()
            self.flush_wanted.set()
            await self.flushed.wait()

    async def _flusher(self) -> None:
        """Flush in a worker thread when a batch is full or ``flush_seconds`` have passed."""
        try:
            await self._flush_forever()
        finally:
            self.flushed.set()  # nobody waits for a flusher that is gone

    async def _flush_forever(self) -> None:
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
            self.flushed.set()

    async def _ticker(self) -> None:
        while True:
            self.progress.tick(self.summary, self.gate.snapshot())
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
