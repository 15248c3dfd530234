"""Request economy in a real run: an :class:`~harvester.economy.EconomyPlanner` driven through
the same storm breaker, quota gate and API client as jobs, its proofs recorded in the store.

Why it exists: the planner (:mod:`harvester.economy`) is pure; this is where its requests meet
the wire and its day resolutions become the store's jobs. One coordinator keeps up to
``api.concurrency`` range requests in flight (each sent by :meth:`JobFetcher.exchange`, so
retries, 429s, 401 renewals, storms and outages behave exactly as for jobs), and after every
reply tells the planner, then records:

- every 200 reply in the raw archive (``record_raw``: the body with its range's request path),
  *before* the days it proves, so a day's ledger record is committed in the same flush as its
  proof or a later one (the writer commits raw before ledger, whole buffers in order);
- every resolved day as that day's job (``record_done``): the rows a direct fetch returns,
  provenance ``fetched`` / ``empty`` / ``derived`` / ``unchanged`` and the proof's ranges as
  plain values in :class:`~harvester.store.FetchMeta`;
- a mismatch (ranges not additive): ``store.json`` says derivation is off at once (so a crash
  cannot lose it), one warning line, and the planner fetches every day it derived again;
- a long range refused (400): the planner asks shorter ones; the longest accepted length is
  kept in ``store.json`` for the next run.

Days whose requests failed for good are recorded failed at the end, as jobs would be. A kill
loses only what was in flight or buffered: nothing a day's record needs is committed after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harvester import __version__
from harvester.api.outcomes import Rejected, Rows
from harvester.economy import (
    DayRange,
    DayResolution,
    EconomyPlanner,
    EconomyPolicy,
    Kind,
    Mismatch,
    RangeLimits,
    Request,
)
from harvester.fetching import UNFINISHED, Final, JobFetcher
from harvester.items import COLUMNS
from harvester.jobs import Job
from harvester.plan import LedgerLookup, Plan
from harvester.store import FetchMeta
from harvester.store.provenance import history, load_economy, save_economy, stored_day_rows

log = logging.getLogger("harvester")

# A 400 for a range of several days means "too long" (the API notes, "Range arithmetic").
TOO_LONG_STATUS = 400


_Exchange = asyncio.Task[Final | Literal["unfinished"] | None]


@dataclass
class _Failure:
    reason: str
    final: Final | None  # None: the window was not over (unfinished): not a failure to record
    request: Request


class EconomyRun:
    """One run's planner, fed from the plan's pending jobs, driven until done or stopped."""

    def __init__(
        self,
        plan: Plan,
        index: LedgerLookup,
        root: Path,
        fetcher: JobFetcher,
        *,
        concurrency: int,
        stop: asyncio.Event,
        grace: float,
        on_recorded: Callable[[], None],
    ) -> None:
        self.fetcher = fetcher
        self.writer = fetcher.writer
        self.summary = fetcher.summary
        self.progress = fetcher.progress
        self.root = root
        self.concurrency = concurrency
        self.stop = stop
        self.grace = grace
        self.on_recorded = on_recorded
        self.state = load_economy(root)
        derive = bool(self.state.get("derive", True))
        limits = RangeLimits(longest_accepted=int(self.state.get("longest_accepted", 0)))
        refused = self.state.get("shortest_refused")
        if isinstance(refused, int):  # propose what was accepted, not the untried between
            limits.refused(refused)
        self.planner = EconomyPlanner(EconomyPolicy(derive=derive), limits)
        self.jobs: dict[tuple[str, dt.date], Job] = {}
        self.recorded: set[tuple[str, dt.date]] = set()
        self.failures: dict[tuple[str, dt.date], _Failure] = {}
        self.mismatches: dict[tuple[str, dt.date], str] = {}
        self._add_phones(plan, index, derive)

    def _add_phones(self, plan: Plan, index: LedgerLookup, derive: bool) -> None:
        """Plain days: never fetched, failed, or refetched; a sync's done days: rechecked
        against their stored rows. With derivation off, days proven by additivity are fetched
        again (a mismatch may have been found by a run that died before fetching them)."""
        known = history(self.root)
        days: dict[str, list[dt.date]] = {p: [] for p in plan.phones}
        recheck: list[tuple[str, dt.date]] = []
        for job in plan.pending(index):
            self.jobs[job.key] = job
            if plan.command == "sync" and index.state(job.key) == "done":
                recheck.append(job.key)
            else:
                days[job.phone].append(job.period)
        if not derive:
            for job in plan.jobs():
                if job.key not in self.jobs and job.period in known.by_additivity.get(
                    job.phone, ()
                ):
                    self.jobs[job.key] = job
                    days[job.phone].append(job.period)
        stored = stored_day_rows(self.root, recheck)
        rechecks: dict[str, dict[dt.date, list[tuple[object, ...]]]] = {}
        for phone, day in recheck:
            rechecks.setdefault(phone, {})[day] = stored[phone, day]
        for phone in days:
            if days[phone] or phone in rechecks:
                self.planner.add_phone(
                    phone,
                    days[phone],
                    density=known.density.get(phone),
                    recheck=rechecks.get(phone),  # type: ignore[arg-type]
                )

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Send what the planner proposes until it is done; on a stop request, let requests on
        the wire finish for the grace, abandon the rest, record what was proven."""
        inflight: dict[_Exchange, Request] = {}
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                if not self.stop.is_set():
                    for request in self.planner.next_requests(self.concurrency - len(inflight)):
                        task = asyncio.ensure_future(self.fetcher.exchange(self._job_of(request)))
                        inflight[task] = request
                if not inflight:
                    break
                if self.stop.is_set():
                    await self._wind_down(inflight)
                    break
                waiting: list[asyncio.Future[Any]] = [*inflight, stopping]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in inflight if t.done()]:
                    self._settle(inflight.pop(task), task.result())
                self._drain()
        finally:
            stopping.cancel()
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
        self._drain()
        if not self.stop.is_set():
            self._record_unresolved()
        self._save_limits()

    async def _wind_down(self, inflight: dict[_Exchange, Request]) -> None:
        sending = self.fetcher.sending
        for task in list(inflight):
            if task not in sending:
                task.cancel()
        if inflight:
            await asyncio.wait(inflight, timeout=self.grace)
        for task, request in list(inflight.items()):
            if task.done() and not task.cancelled() and task.exception() is None:
                self._settle(request, task.result())
                del inflight[task]
        self._drain()

    def _job_of(self, request: Request) -> Job:
        """The request as a job: its phone and range (only its path and dates are used)."""
        span = request.span
        return Job(request.phone, span.start, span.start, span.end)

    # -- replies ------------------------------------------------------------------------------

    def _settle(self, request: Request, final: Final | str | None) -> None:
        if final is None:  # a stop request: nothing learnt
            return
        job = self._job_of(request)
        if final == UNFINISHED:
            self._fail(request, _Failure("not over yet", None, request))
            return
        assert isinstance(final, Final)
        for invalid in final.quarantine:
            meta = self._meta(request.path, invalid.head.status, 1)
            self.writer.record_raw(job, invalid.body, meta, invalid.reason)
        outcome = final.outcome
        if isinstance(outcome, Rows):
            meta = self._meta(request.path, outcome.head.status, final.attempts)
            self.writer.record_raw(job, outcome.body, meta, None)  # the proof, before its days
            self.planner.on_rows(request, outcome.rows.rows())
        elif (
            isinstance(outcome, Rejected)
            and outcome.head.status == TOO_LONG_STATUS
            and len(request.span) > 1
        ):
            self.planner.on_refused(request)
        else:
            self._fail(request, _Failure(final.reason, final, request))

    def _fail(self, request: Request, failure: _Failure) -> None:
        for day in request.span.days():
            self.failures[request.phone, day] = failure
        self.planner.on_failed(request)

    def _drain(self) -> None:
        for event in self.planner.events():
            if isinstance(event, Mismatch):
                self._mismatch(event)
        for resolution in self.planner.resolved():
            self._record(resolution)
        if self.writer.flush_due():
            self.on_recorded()

    def _mismatch(self, event: Mismatch) -> None:
        message = event.message()
        for day in event.span.days():
            self.mismatches[event.phone, day] = message
        if self.state.get("derive", True):
            self.state["derive"] = False
            save_economy(self.root, {"derive": False, "mismatch": message})
            log.warning(
                "request economy: ranges do not add up here (%s): derivation is off for this "
                "store; the days it derived are fetched again",
                message,
            )

    def _record(self, resolution: DayResolution) -> None:
        key = (resolution.phone, resolution.day)
        job = self.jobs.get(key)
        if job is None:  # a day the run did not plan (cannot happen; kept safe)
            return
        rows = resolution.rows
        columns = {name: [row[i] for row in rows] for i, name in enumerate(COLUMNS)}
        proof = resolution.proof
        kind = resolution.kind
        meta = self._meta(
            _path(resolution.phone, proof.plus),
            200,
            1 if kind is Kind.FETCHED else 0,
            provenance=kind.value,
            proof=None if kind is Kind.FETCHED else str(proof),
            mismatch=self.mismatches.get(key),
        )
        self.writer.record_done(job, columns, None, meta)
        if key not in self.recorded:  # a day fetched again after a mismatch counts once
            self.recorded.add(key)
            self.summary.done += 1
            self.summary.rows += len(rows)
            self.progress.job_finished(job, "done", len(rows))

    def _record_unresolved(self) -> None:
        """Days no reply proved: failed for this run (or left, when not over yet)."""
        for phone, days in self.planner.unresolved().items():
            for day in days:
                job = self.jobs.get((phone, day))
                failure = self.failures.get((phone, day))
                if job is None or failure is None:
                    continue
                if failure.final is None:
                    self.summary.unfinished += 1
                    self.progress.job_finished(job, "unfinished", 0)
                    continue
                outcome = failure.final.outcome
                status = outcome.head.status if outcome.head is not None else None
                meta = self._meta(failure.request.path, status, 0)
                rejected = isinstance(outcome, Rejected)
                self.writer.record_failed(job, failure.reason, None, meta, rejected=rejected)
                self.summary.failed.append((job, failure.reason))
                self.progress.job_finished(job, "failed", 0)

    def _save_limits(self) -> None:
        limits = self.planner.limits
        learnt = {"longest_accepted": limits.longest_accepted}
        if limits.shortest_refused is not None:
            learnt["shortest_refused"] = limits.shortest_refused
        if any(self.state.get(k) != v for k, v in learnt.items()):
            save_economy(self.root, learnt)

    def _meta(
        self,
        path: str,
        status: int | None,
        attempts: int,
        *,
        provenance: str | None = None,
        proof: str | None = None,
        mismatch: str | None = None,
    ) -> FetchMeta:
        return FetchMeta(
            fetched_at=dt.datetime.fromtimestamp(self.fetcher.clock.wall(), dt.UTC),
            attempts=attempts,
            http_status=status,
            request_path=path,
            harvester_version=__version__,
            as_of=self.fetcher.as_of,
            provenance=provenance,
            proof=proof,
            mismatch=mismatch,
        )


def _path(phone: str, span: DayRange) -> str:
    return Job(phone, span.start, span.start, span.end).path
