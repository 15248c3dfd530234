"""The batched writer: finished jobs are buffered, then flushed as three Delta commits.

Why batches: a Delta commit costs ~20 ms (append) to ~0.2 s (replace) whatever its size, so a
commit per job would cap a pull far below 1,000 jobs/s; 500 jobs per flush keep it a few percent
of a core.

One flush, in this order, each step one atomic commit tagged with the flush's batch id (a Delta
transaction identifier, see :mod:`harvester.store.tables`):

1. ``raw``: the reply bodies (an orphan body of a crashed flush is harmless: nothing counts it);
2. ``ledger``: one record per job (state, attempts, provenance);
3. ``data``: the rows, in ONE commit that removes the rows of the batch's re-fetched jobs and
   adds the new rows (Delta's overwrite with a ``month IN (...) AND job_key IN (...)``
   predicate), or a plain append when the batch re-fetches nothing (every pull's usual case).

The data table's current version is therefore exactly the visible rows at every moment. A crash
between steps 2 and 3 leaves ledger records whose rows never landed: the next writer that takes
the lock sees the ledger's batch ahead of the data table's and deletes that batch's records
(:func:`repair`), so those jobs are fetched again; nothing is ever visible twice.

Which jobs a batch re-fetches: those the ledger held a done record for when the writer started,
plus those this writer already stored. A failed data commit (disk full) deletes its batch's ledger
records again and puts the jobs back into the buffer; if even that fails, the batch stays
pending and its rows are retried by the next flush, never re-recorded.

Threads: ``record_*`` run on the event loop's thread and only append to the buffer under a lock;
``flush`` runs in a worker thread (``asyncio.to_thread``), swaps the buffer out under that lock and
does all conversion and I/O outside it. Flushes are serialised by the store's write mutex, which
compaction also takes.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import pyarrow as pa

from harvester import __version__
from harvester.errors import StoreError, StoreWriteError
from harvester.items import COLUMNS, item_schema
from harvester.jobs import Job
from harvester.store import schema as s
from harvester.store.data_rows import data_table, micros
from harvester.store.ledger import JobIndex
from harvester.store.stored_months import StoredMonths
from harvester.store.tables import Tables, in_list, sql_string, write_errors

# A reply's rows: an Arrow table of the item columns, or those columns as Python sequences.
StoredRows: TypeAlias = "pa.Table | Mapping[str, Sequence[object]]"

# fetch ids are random positive int64 values: 63 bits make a collision between two fetches of one
# store astronomically unlikely without any coordination between runs. They come from a generator
# seeded once per writer with 128 bits from the OS (secrets), not from the OS per job: an
# os.urandom call per job was ~1.5% of a pull's CPU at 1,000 jobs/s.
FETCH_ID_BITS = 63
SEED_BITS = 128


@dataclass(frozen=True, slots=True)
class FetchMeta:
    """How one reply was obtained: the provenance stored with its ledger record and raw body.

    ``fetch_id`` is normally left None and assigned by the writer (a fresh random 63-bit id).
    ``request_path`` is the path below the API base URL: never headers, never credentials.
    ``http_status`` is kept as provenance only: the store gives it no meaning.
    """

    fetched_at: dt.datetime
    attempts: int
    http_status: int | None
    request_path: str
    fetch_id: int | None = None
    harvester_version: str = __version__
    # the run's "today" in the account's time zone (sync judges late data by it); default:
    # the UTC date of fetched_at
    as_of: dt.date | None = None
    # request economy: the day's provenance in the ledger (None: fetched), as plain values
    provenance: str | None = None
    proof: str | None = None
    mismatch: str | None = None

    def __post_init__(self) -> None:
        if self.fetched_at.tzinfo is None or self.fetched_at.utcoffset() is None:
            raise ValueError("FetchMeta.fetched_at must be timezone-aware (UTC)")
        if self.attempts < 0:
            raise ValueError("FetchMeta.attempts must be >= 0")
        if self.fetch_id is not None and not 0 <= self.fetch_id < 2**FETCH_ID_BITS:
            raise ValueError("FetchMeta.fetch_id must be in 0 .. 2**63-1")


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one flush made durable (all zeros when the buffer was empty); ``files`` counts
    the commits it made."""

    batch_id: int | None = None
    jobs: int = 0
    done: int = 0
    failed: int = 0
    rows: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class _Entry:
    job: Job
    state: str  # "done" | "failed" | "raw" | "raw-invalid" (raw archive only)
    rows: StoredRows | None
    body: bytes | None
    meta: FetchMeta
    fetch_id: int
    reason: str | None = None
    quarantine: bool = False
    rejected: bool = False
    recorded_at: int = 0  # epoch microseconds
    count: int = 0  # rows of a done job


@dataclass(slots=True)
class _Buffer:
    entries: list[_Entry] = field(default_factory=list)
    fetch_ids: set[int] = field(default_factory=set)
    first_at: float | None = None


class StoreWriter:
    """Buffers finished jobs and flushes them every ``flush_jobs`` jobs or ``flush_seconds``.

    Get one from :meth:`Store.writer` while holding the store's lock.
    """

    def __init__(
        self,
        tables: Tables,
        run_id: str,
        *,
        allocate_batch: Callable[[], int],
        write_mutex: threading.Lock,
        flush_jobs: int,
        flush_seconds: float,
        monotonic: Callable[[], float],
        index: JobIndex,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        if not 1 <= flush_jobs < s.MAX_RECORDS_PER_FILE:
            raise ValueError(f"flush_jobs must be in 1 .. {s.MAX_RECORDS_PER_FILE - 1}")
        if flush_seconds <= 0:
            raise ValueError("flush_seconds must be > 0")
        self._tables = tables
        self._run_id = run_id
        self._allocate_batch = allocate_batch
        self._write_mutex = write_mutex
        self._flush_jobs = flush_jobs
        self._flush_seconds = flush_seconds
        self._monotonic = monotonic
        self._on_commit = on_commit
        self._index = index  # the ledger when the writer started
        # the month of the rows this writer stored for each job (a later fetch replaces them)
        self._stored = StoredMonths()
        self._pending: tuple[int, list[_Entry]] | None = None  # a batch whose rows failed
        self._lock = threading.Lock()
        self._buffer = _Buffer()
        self._closed = False
        self._fetch_ids = random.Random(secrets.randbits(SEED_BITS))
        self._schema = s.data_schema()
        self._items = item_schema()
        # open the tables now, not in the first flush: a run's first batch is as quick as the rest
        for kind in s.KINDS:
            tables.handle(kind)

    # -- the loop thread's side --------------------------------------------------------------

    def record_done(
        self, job: Job, rows: StoredRows, raw_body: bytes | None, meta: FetchMeta
    ) -> None:
        """Buffer a job whose reply parsed into ``rows``: they replace any earlier fetch of the
        job (``raw_body`` None: its proof is archived already, see :meth:`record_raw`).
        ``rows`` holds the item columns (:data:`harvester.items.COLUMNS`) as an Arrow table
        of :func:`~harvester.items.item_schema`, or as a mapping of column name to values, which
        is converted once per flush for the whole batch (~3x cheaper than a table per reply)."""
        if isinstance(rows, pa.Table):
            if rows.schema.names[: len(COLUMNS)] != list(COLUMNS):
                raise ValueError(f"record_done wants the item columns {COLUMNS}")
            count = rows.num_rows
        else:
            if any(name not in rows for name in COLUMNS):
                raise ValueError(f"record_done wants the item columns {COLUMNS}")
            count = len(rows[COLUMNS[0]])
        entry = _Entry(job, "done", rows, raw_body, meta, 0)
        entry.count = count
        self._add(entry)

    def record_failed(
        self,
        job: Job,
        reason: str,
        raw_body: bytes | None,
        meta: FetchMeta,
        quarantine: bool = False,
        *,
        rejected: bool = False,
    ) -> None:
        """Buffer a failed job; with ``quarantine`` its body is kept as an invalid reply.

        ``rejected``: the failure will not change on a retry (the caller knows why: the store
        does not interpret statuses), so the job waits for ``--retry-failed``; otherwise the next
        pull or sync tries it again. An earlier successful fetch of the job stays visible: a
        failed re-fetch must not hide good data.
        """
        if quarantine and raw_body is None:
            raise ValueError("a quarantined reply needs its raw body")
        self._add(_Entry(job, "failed", None, raw_body, meta, 0, reason, quarantine, rejected))

    def record_raw(self, job: Job, raw_body: bytes, meta: FetchMeta, reason: str | None) -> None:
        """Buffer a reply body for the raw archive only (a range reply of request economy,
        ``job`` spanning its range): no ledger record, no rows. Recorded before the days it
        proves, it is committed in the same flush as their records or an earlier one."""
        state = "raw" if reason is None else "raw-invalid"
        self._add(_Entry(job, state, None, raw_body, meta, 0, reason, reason is not None))

    def _add(self, entry: _Entry) -> None:
        entry.recorded_at = time.time_ns() // 1000
        with self._lock:
            if self._closed:
                raise StoreError("the store writer is closed")
            buffer = self._buffer
            fetch_id = entry.meta.fetch_id
            if fetch_id is None:
                fetch_id = self._fetch_ids.getrandbits(FETCH_ID_BITS)
                while fetch_id in buffer.fetch_ids:
                    fetch_id = self._fetch_ids.getrandbits(FETCH_ID_BITS)
            elif fetch_id in buffer.fetch_ids:
                raise ValueError(f"fetch_id {fetch_id} recorded twice; leave it None")
            entry.fetch_id = fetch_id
            buffer.fetch_ids.add(fetch_id)
            buffer.entries.append(entry)
            if buffer.first_at is None:
                buffer.first_at = self._monotonic()

    @property
    def pending(self) -> int:
        """Jobs buffered and not yet durable."""
        with self._lock:
            waiting = len(self._pending[1]) if self._pending else 0
            return len(self._buffer.entries) + waiting

    def flush_due(self) -> bool:
        """A batch is full, or the oldest buffered job has waited ``flush_seconds``."""
        with self._lock:
            buffer = self._buffer
            if not buffer.entries or buffer.first_at is None:
                return False
            if len(buffer.entries) >= self._flush_jobs:
                return True
            return self._monotonic() - buffer.first_at >= self._flush_seconds

    # -- the worker thread's side ------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Make every buffered job durable and visible; safe to call from a worker thread.

        If writing fails (disk full...), StoreWriteError is raised and nothing is lost while the
        process lives: jobs whose ledger records were not committed go back into the buffer,
        and a batch whose rows were not committed is retried by the next flush.
        """
        with self._write_mutex:
            try:
                if self._pending is not None:
                    self._commit_data(*self._pending)
                    self._pending = None
            except write_errors() as exc:
                raise self._write_error(exc) from exc
            with self._lock:
                buffer, self._buffer = self._buffer, _Buffer()
            if not buffer.entries:
                return FlushResult()
            try:
                return self._write(buffer.entries)
            except write_errors() as exc:
                if not self._is_pending(buffer.entries):  # their records were not stored
                    with self._lock:
                        buffer.entries.extend(self._buffer.entries)
                        buffer.fetch_ids |= self._buffer.fetch_ids
                        self._buffer = buffer
                raise self._write_error(exc) from exc

    def _is_pending(self, entries: list[_Entry]) -> bool:
        """Whether ``entries`` are the batch whose records are stored and rows are not."""
        return self._pending is not None and self._pending[1] is entries

    def _write_error(self, exc: BaseException) -> StoreWriteError:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return StoreWriteError(f"cannot write to the store {self._tables.layout.name}: {first}")

    def close(self) -> FlushResult:
        """Flush what is buffered; later ``record_*`` calls raise StoreError."""
        result = self.flush()
        with self._lock:
            self._closed = True
        return result

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self, entries: list[_Entry]) -> FlushResult:
        started = time.perf_counter()
        batch = self._allocate_batch()
        commits = 0
        raw = _raw_table(entries, batch, self._run_id)
        if raw.num_rows:
            self._tables.append(s.RAW_DIR, raw, batch)
            commits += 1
        self._tables.append(s.LEDGER_DIR, _ledger_table(entries, batch, self._run_id), batch)
        commits += 1
        self._on_commit()
        self._pending = (batch, entries)
        try:
            rows = self._commit_data(batch, entries)
        except write_errors():
            if self._undo_records(batch):
                self._pending = None  # the jobs go back into the buffer, as if never flushed
            raise
        self._pending = None
        done = sum(1 for e in entries if e.state == "done")
        return FlushResult(
            batch_id=batch,
            jobs=len(entries),
            done=done,
            failed=sum(1 for e in entries if e.state == "failed"),
            rows=rows,
            files=commits + 1,
            seconds=time.perf_counter() - started,
        )

    def _undo_records(self, batch: int) -> bool:
        """Delete the ledger records of a batch whose rows could not be stored, so the store is
        consistent while the process lives on; False if that fails too (then the batch's rows
        are retried by the next flush, or the next lock undoes the records)."""
        try:
            self._tables.ensure_space()
            self._tables.handle(s.LEDGER_DIR).delete(f"batch_id = {batch}")
        except write_errors():
            return False
        return True

    def _commit_data(self, batch: int, entries: list[_Entry]) -> int:
        """The batch's rows as one data commit; returns the rows added."""
        latest: dict[str, _Entry] = {}
        for entry in entries:  # a later fetch of a job in the same batch wins
            if entry.state == "done":
                latest[s.job_key(entry.job.phone, entry.job.period)] = entry
        months: set[str] = set()
        replaced = False
        for key, entry in latest.items():
            months.add(s.month_of(entry.job.window_start))
            earlier = self._earlier_month(key, entry.job)
            if earlier is not None:
                months.add(earlier)
                replaced = True
        table = data_table(list(latest.values()), self._schema)
        if replaced:
            months_in = in_list(s.PARTITION_KEY, sorted(months))
            predicate = f"{months_in} AND {in_list('job_key', sorted(latest))}"
            if table.num_rows:
                self._tables.replace(s.DATA_DIR, table, predicate, batch, "flush")
            else:
                self._tables.delete(s.DATA_DIR, predicate, batch, "flush")
        if not replaced or (not table.num_rows and self._tables.batch(s.DATA_DIR) < batch):
            self._tables.append(s.DATA_DIR, table, batch)  # no rows: only the batch id
        self._on_commit()
        for entry in latest.values():
            self._stored.set(entry.job.phone, entry.job.period, entry.job.window_start)
        return int(table.num_rows)

    def _earlier_month(self, key: str, job: Job) -> str | None:
        """The partition of rows an earlier fetch of ``job`` may have stored, or None."""
        stored = self._stored.get(job.phone, job.period)
        if stored is not None:
            return stored
        window = self._index.done_window(job.key)
        return None if window is None else s.month_of(window[0])


def repair(tables: Tables) -> int:
    """Undo a flush that crashed between its ledger and its data commit; returns records deleted.

    The ledger's last batch ahead of the data table's means that batch's rows never landed: its
    ledger records are deleted (one commit), so its jobs are back to their earlier state and the
    next pull fetches them again. Only under the store's lock.
    """
    ledger_batch = tables.batch(s.LEDGER_DIR)
    if ledger_batch <= tables.batch(s.DATA_DIR):
        return 0
    metrics = tables.handle(s.LEDGER_DIR).delete(f"batch_id = {ledger_batch}")
    deleted = int(metrics.get("num_deleted_rows", 0))
    # the data table learns the batch too, so the check holds until the next flush
    tables.append(s.DATA_DIR, data_table([], s.data_schema()), ledger_batch)
    return deleted


def _raw_table(entries: list[_Entry], batch: int, run_id: str) -> pa.Table:
    kept = [e for e in entries if e.body is not None]
    return pa.Table.from_pydict(
        {
            "phone": [e.job.phone for e in kept],
            "period": [s.epoch_day(e.job.period) for e in kept],
            "window_start": [s.epoch_day(e.job.window_start) for e in kept],
            "window_end": [s.epoch_day(e.job.window_end) for e in kept],
            "request_path": [e.meta.request_path for e in kept],
            "http_status": [e.meta.http_status for e in kept],
            "fetched_at": [micros(e.meta.fetched_at) for e in kept],
            "valid": [e.state in ("done", "raw") for e in kept],
            "quarantined": [e.quarantine for e in kept],
            "reason": [e.reason for e in kept],
            "body": [e.body for e in kept],
            "fetch_id": [e.fetch_id for e in kept],
            "batch_id": [batch] * len(kept),
            "run_id": [run_id] * len(kept),
            "harvester_version": [e.meta.harvester_version for e in kept],
            s.PARTITION_KEY: [s.month_of(e.job.window_start) for e in kept],
        },
        schema=s.raw_schema(),
    )


def _ledger_table(entries: list[_Entry], batch: int, run_id: str) -> pa.Table:
    """One record per job entry, in recording order: a later record of the same job wins."""
    entries = [e for e in entries if e.state in ("done", "failed")]
    return pa.Table.from_pydict(
        {
            "phone": [e.job.phone for e in entries],
            "period": [s.epoch_day(e.job.period) for e in entries],
            "seq": [s.seq_of(batch, i) for i in range(len(entries))],
            "state": [e.state for e in entries],
            "rejected": [e.rejected for e in entries],
            "reason": [e.reason for e in entries],
            "quarantined": [e.quarantine for e in entries],
            "attempts": [e.meta.attempts for e in entries],
            "prior_attempts": [0] * len(entries),
            "rows": [e.count for e in entries],
            "http_status": [e.meta.http_status for e in entries],
            "fetched_at": [micros(e.meta.fetched_at) for e in entries],
            "as_of": [
                s.epoch_day(e.meta.as_of or e.meta.fetched_at.astimezone(dt.UTC).date())
                for e in entries
            ],
            "fetch_id": [e.fetch_id for e in entries],
            "batch_id": [batch] * len(entries),
            "window_start": [s.epoch_day(e.job.window_start) for e in entries],
            "window_end": [s.epoch_day(e.job.window_end) for e in entries],
            "complete": [e.job.complete for e in entries],
            "run_id": [run_id] * len(entries),
            "request_path": [e.meta.request_path for e in entries],
            "harvester_version": [e.meta.harvester_version for e in entries],
            "recorded_at": [e.recorded_at for e in entries],
            "provenance": [e.meta.provenance for e in entries],
            "proof": [e.meta.proof for e in entries],
            "mismatch": [e.meta.mismatch for e in entries],
        },
        schema=s.ledger_schema(),
    )


__all__ = ["FetchMeta", "FlushResult", "StoreWriter", "repair", "sql_string"]
