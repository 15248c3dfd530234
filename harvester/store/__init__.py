"""The store: three Delta Lake tables (data, raw archive, job ledger), ``store.json``, one lock.

    store = Store(root)                          # no I/O
    store.ensure_writable(grain)                 # StoreError naming the path
    with store.lock(run_id):                     # StoreLockedError naming pid, host, since
        index = store.job_index()                # state(key), done_window(key), last_done_end()
        with store.writer(run_id) as writer:     # batched: one Delta commit per table and flush
            writer.record_done(job, rows, body, meta)          # rows: Arrow, items.item_schema()
            writer.record_failed(job, reason, body, meta, quarantine, rejected=...)
    store.compact(); store.needs_compaction(); store.status(); store.quarantine()

The layout is in :mod:`harvester.store.schema`, the Delta layer in :mod:`~harvester.store.tables`.
The data table's current version is exactly the visible rows; :func:`base_views_sql` defines the
relations ``queries/*.sql`` are written against. Releasing the lock after a run that committed
vacuums the files its commits removed, so at rest the Parquet files are exactly the tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvester.errors import StoreError
from harvester.jobs import Grain
from harvester.store import schema as s
from harvester.store.format import (
    read_store_file,
    record_table_metadata,
    store_info,
    table_properties,
    write_store_file,
)
from harvester.store.ledger import JobIndex, JobState, load_index
from harvester.store.location import one_line
from harvester.store.lock import LockHolder, adopt_lock, held_lock
from harvester.store.status import PhoneStatus, RunInfo, StoreStatus, store_status
from harvester.store.tables import FileInfo, Tables
from harvester.store.verify import check_files, lasting_problems, reading
from harvester.store.views import (
    base_views_sql,
    connect_base,
    define_base_views,
    retry_read,
)

# Writing and compacting need more of pyarrow and deltalake; reading the ledger (`harvester
# plan`, `status`) needs less. So those modules load on first use (PEP 562).
_LAZY = {
    "CompactionResult": "harvester.store.compact",
    "FetchMeta": "harvester.store.writer",
    "FlushResult": "harvester.store.writer",
    "StoreWriter": "harvester.store.writer",
}

if TYPE_CHECKING:
    from harvester.store.compact import CompactionResult
    from harvester.store.verify import VerifyReport
    from harvester.store.writer import FetchMeta, FlushResult, StoreWriter

__all__ = [
    "CompactionResult",
    "FetchMeta",
    "FlushResult",
    "JobIndex",
    "JobState",
    "LockHolder",
    "PhoneStatus",
    "QuarantinedReply",
    "RunInfo",
    "Store",
    "StoreStatus",
    "StoreWriter",
    "base_views_sql",
    "connect_base",
    "define_base_views",
    "open_index",
    "retry_read",
]

# Entries a fresh store folder may already hold (a previous ensure_writable that crashed, or an
# empty folder the user made): anything else means the folder is not ours to fill.
_OWN_ENTRIES = {s.STORE_FILE, s.LOCK_FILE, s.DATA_DIR, s.RAW_DIR, s.LEDGER_DIR}

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QuarantinedReply:
    """A reply that failed validation, kept with its body; ``job_state`` is the job's state now."""

    phone: str
    period: dt.date
    window_start: dt.date
    window_end: dt.date
    request_path: str
    http_status: int | None
    fetched_at: dt.datetime
    reason: str
    fetch_id: int
    run_id: str
    body: bytes
    job_state: JobState | None


class Store:
    """One store folder. Reading needs nothing; writing needs :meth:`lock`."""

    def __init__(self, root: Path | str, storage_options: dict[str, str] | None = None) -> None:
        self.path = Path(root)
        self._layout = s.Layout(root, storage_options)
        # what messages name: the folder, or the URL of a store on object storage
        self.location = self._layout.name
        self._tables = Tables(self._layout, locked=lambda: bool(self._lock_depth))
        self._write_mutex = threading.Lock()  # one flush or compaction at a time
        self._batch_mutex = threading.Lock()
        self._next_batch: int | None = None
        self._lock_depth = 0
        self._lock_fd: int | None = None  # the lock file's descriptor while this object holds it
        self._run_id: str | None = None
        self._committed = False  # a commit since the lock was taken: vacuum on release
        self._index: JobIndex | None = None  # loaded under the lock, until the next commit

    # -- set-up -------------------------------------------------------------------------------

    def grain(self) -> Grain | None:
        """The window grain recorded in ``store.json``, or None for a new or foreign folder.

        StoreError if ``store.json`` is malformed or of another format (one line)."""
        info = read_store_file(self._layout)
        return None if info is None else Grain(info["grain"])

    def check_format(self) -> None:
        """StoreError (one line) unless the folder is new or a store of this format."""
        read_store_file(self._layout)

    def ensure_writable(self, grain: Grain | str) -> None:
        """Create the store (tables, ``store.json``) or check that it can take ``grain``."""
        grain = Grain(grain)
        root = self.path
        self._tables.uri(s.DATA_DIR)  # a path the table layer cannot use: refused before any write
        if self._layout.url is not None:
            self._ensure_remote(grain)
            return
        if root.exists() and not root.is_dir():
            raise StoreError(f"store.path {root} is a file, not a folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store.path: cannot create the store folder {root}: {exc.strerror}"
            ) from None
        store_file = self._layout.store_file
        info = read_store_file(self._layout)
        if info is not None:
            if info["grain"] != grain.value:
                raise StoreError(
                    f"store.path {self.path} holds {info['grain']} windows, not {grain.value}: "
                    "use another store.path for another window"
                )
        else:
            foreign = sorted(e.name for e in root.iterdir() if e.name not in _OWN_ENTRIES)
            if foreign:
                raise StoreError(
                    f"store.path {root} is not empty and holds no {s.STORE_FILE} "
                    f"(found {', '.join(foreign[:3])}): point it at a new or existing store"
                )
        self._probe_writable()
        try:
            self._tables.create_missing(table_properties(grain), json.dumps(store_info(grain)))
        except OSError as exc:
            raise StoreError(f"store.path {root}: cannot create its tables: {exc}") from None
        if info is None:
            write_store_file(store_file, grain)

    def _ensure_remote(self, grain: Grain) -> None:
        """``ensure_writable`` on object storage: the format and grain live in the data table's
        description (written by the commit that creates it); the companion folder is local."""
        info = read_store_file(self._layout)
        if info is not None and info["grain"] != grain.value:
            raise StoreError(
                f"store.path {self.location} holds {info['grain']} windows, not {grain.value}: "
                "use another store.path for another window"
            )
        try:
            self._layout.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store.path {self.location}: cannot create its local folder "
                f"{self._layout.root}: {exc.strerror}"
            ) from None
        if info is not None and all(self._tables.exists(kind) for kind in s.KINDS):
            return
        try:
            self._tables.create_missing(table_properties(grain), json.dumps(store_info(grain)))
        except OSError as exc:
            raise StoreError(
                f"store.path {self.location}: cannot create its tables: {one_line(exc)}"
            ) from None

    def exists(self) -> bool:
        """Whether there is a store here to read (a folder; on object storage, a data table)."""
        if self._layout.url is None:
            return self.path.is_dir()
        try:
            return self._tables.exists(s.DATA_DIR)
        except OSError as exc:  # no such bucket, no credentials, endpoint down: one line
            raise StoreError(f"store.path {self.location}: {one_line(exc)}") from None

    def _probe_writable(self) -> None:
        probe = self.path / f".write-probe-{os.getpid()}{s.TMP_SUFFIX}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"store.path {self.path} is not writable: {exc.strerror}") from None

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[LockHolder | None]:
        """Hold the store's write lock (re-entrant within this object); StoreLockedError if taken.

        Taking it repairs a flush a crash cut between its ledger and data commits; releasing
        it after commits vacuums the files they removed (at rest, the files are the tables).
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield None
            finally:
                self._lock_depth -= 1
            return
        if not self.exists():
            raise StoreError(f"store.path {self.location} is not a store folder")
        self.check_format()
        self._layout.root.mkdir(parents=True, exist_ok=True)  # an object store's companion
        from harvester.store.writer import repair

        with held_lock(self._layout.lock_file, run_id, self.location) as held:
            holder, self._lock_fd = held.holder, held.fd
            self._lock_depth, self._run_id, self._next_batch = 1, run_id, None
            self._committed, self._index = False, None
            self._tables.forget()
            try:
                tables_exist = self._tables.exists(s.LEDGER_DIR) and self._tables.exists(s.DATA_DIR)
                grain = self.grain()
                if tables_exist and grain is not None:  # a store made before tables held it
                    record_table_metadata(self._tables, grain)
                if tables_exist and repair(self._tables):
                    self._committed = True
                    log.warning(
                        "the last run stopped between storing a batch's records and its rows; "
                        "those jobs will be fetched again"
                    )
                self._sweep_uncommitted()
                yield holder
            finally:
                try:
                    if self._committed:
                        self._vacuum()
                finally:
                    self._lock_depth, self._run_id, self._index = 0, None, None
                    self._lock_fd = None

    @contextlib.contextmanager
    def adopted_lock(self, fd: int, run_id: str) -> Iterator[None]:
        """Act under the lock another process holds and handed over as ``fd`` (StoreError if it
        does not); nothing is repaired, vacuumed or released here (:mod:`.compact_child`)."""
        adopt_lock(self._layout.lock_file, fd)
        self._lock_depth, self._run_id, self._next_batch = 1, run_id, None
        self._tables.forget()
        try:
            yield
        finally:
            self._lock_depth, self._run_id, self._index = 0, None, None

    def _vacuum(self) -> None:
        """Delete the files this lock's commits removed, and any a failed write left
        uncommitted (:meth:`Tables.vacuum`); a failure only postpones it."""
        from harvester.store.tables import write_errors

        with self._write_mutex:
            for kind in s.KINDS:
                try:
                    self._tables.vacuum(kind)
                except write_errors() as exc:
                    log.warning("could not vacuum the %s table (next run will): %s", kind, exc)

    def _sweep_uncommitted(self) -> None:
        """Delete the files a killed writer wrote but never committed (no version names them,
        yet a plain Parquet reader of the folder would count them); a failure only postpones."""
        from harvester.store.tables import write_errors

        failures: tuple[type[BaseException], ...] = (StoreError, *write_errors())
        for kind in s.KINDS:
            try:
                self._tables.sweep_uncommitted(kind)
            except failures as exc:
                log.warning("could not clear the %s table's unfinished writes: %s", kind, exc)

    def _mark_committed(self) -> None:
        self._committed = True
        self._index = None

    def writer(
        self,
        run_id: str,
        *,
        flush_jobs: int = 500,
        flush_seconds: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> StoreWriter:
        """A batched writer; only while this object holds the lock.

        ``monotonic`` is the clock of ``flush_seconds`` (pass the harvester's ``Clock.monotonic``
        when the writer is polled from the event loop).
        """
        from harvester.store.writer import StoreWriter

        self._require_lock("write")
        index = self.job_index()  # which jobs already have rows: their next fetch replaces them
        return StoreWriter(
            self._tables,
            run_id,
            allocate_batch=self._allocate_batch,
            write_mutex=self._write_mutex,
            flush_jobs=flush_jobs,
            flush_seconds=flush_seconds,
            monotonic=monotonic,
            index=index,
            on_commit=self._mark_committed,
        )

    def compact(self) -> CompactionResult:
        """Optimize and rewrite the tables (few files, nothing superseded); results unchanged.

        Takes the lock unless this object already holds it (a pull compacting at its end).
        """
        if not self.exists() or not self._tables.exists(s.LEDGER_DIR):
            self.check_format()
            raise StoreError(f"store.path {self.location} holds no store")
        from harvester.store.compact import compact_store

        with self.lock(self._run_id or f"compact-{os.getpid()}"), self._write_mutex:
            check_files(self._tables)
            with reading(self._tables):
                result = compact_store(self._tables, self._allocate_batch())
            self._committed, self._index = False, None  # compact_store vacuumed already
            return result

    def compact_in_child(self) -> CompactionResult:
        """:meth:`compact` in a child process sharing this object's lock, its memory not added
        to the caller's; ChildNotStarted if none can be started (:mod:`.compact_child`)."""
        from harvester.store.compact_child import compact_in_child

        self._require_lock("compact")
        assert self._lock_fd is not None and self._run_id is not None
        done = False
        try:
            with self._write_mutex:
                options, fd = self._layout.storage_options, self._lock_fd
                result = compact_in_child(self._layout.name, options, fd, self._run_id)
                done = True
                return result
        finally:  # stale after the child's commits: a vacuum through them would delete its files
            self._tables.forget()
            self._next_batch, self._index = None, None
            self._committed = not done  # the child vacuumed, unless it did not finish

    def needs_compaction(self) -> bool:
        """Whether enough small files piled up for :meth:`compact` to pay off."""
        from harvester.store.compact import needs_compaction

        return needs_compaction(self._file_infos())

    def _file_infos(self) -> dict[str, list[FileInfo]]:
        return {kind: self._tables.file_infos(kind) for kind in s.KINDS}

    def _require_lock(self, what: str) -> None:
        if not self._lock_depth:
            raise StoreError(f"cannot {what} the store {self.path} without holding its lock")

    def _allocate_batch(self) -> int:
        """A batch id above every id a commit of this store names."""
        with self._batch_mutex:
            if self._next_batch is None:
                self._next_batch = self._tables.highest_batch() + 1
            batch = self._next_batch
            self._next_batch += 1
            return batch

    # -- reading ------------------------------------------------------------------------------

    def load_quota_state(self) -> dict[str, Any] | None:
        """The quota state the last run saved here (see :mod:`harvester.store.quota_state`)."""
        from harvester.store.quota_state import load_quota_state

        return load_quota_state(self._layout.root)

    def save_quota_state(self, state: Mapping[str, object]) -> bool:
        """Keep ``state`` for the next run (atomically); False if it could not be written."""
        from harvester.store.quota_state import save_quota_state

        return save_quota_state(self._layout.root, state)

    def job_index(self) -> JobIndex:
        """Every job's state, attempts and visible window, loaded once (works without a lock;
        under it, loaded once until the next commit)."""
        if self._lock_depth and self._index is not None:
            return self._index
        grain = self.grain()
        check_files(self._tables)  # a missing or truncated file: one line, not a silent "done"
        with reading(self._tables):
            index = retry_read(lambda: load_index(self._tables.files(s.LEDGER_DIR), grain))
        if self._lock_depth:
            self._index = index
        return index

    def status(self) -> StoreStatus:
        """Jobs, rows, coverage, gaps, files and the last run, from the ledger alone."""
        if not self.exists():
            raise StoreError(f"store.path {self.location} does not exist")
        grain = self.grain()
        from harvester.store.compact import needs_compaction

        unreadable = len(lasting_problems(self._tables))  # first: it may list the tables again
        infos = self._file_infos()
        with reading(self._tables):
            return store_status(
                self._tables,
                grain.value if grain else None,
                infos,
                needs_compaction=needs_compaction(infos),
                unreadable=unreadable,
            )

    def quarantine(self) -> list[QuarantinedReply]:
        """Every quarantined reply (newest first), with the job's current state."""
        self.check_format()
        if not self._tables.files(s.RAW_DIR):
            return []
        # Filter before de-duplicating: the raw_replies view's dedupe would read every body.
        query = """
            SELECT r.phone, r.period, r.window_start, r.window_end, r.request_path,
                   r.http_status, r.fetched_at, r.reason, r.fetch_id, r.run_id, r.body, l.state
            FROM (SELECT * FROM raw_files WHERE quarantined
                  QUALIFY row_number() OVER (PARTITION BY fetch_id ORDER BY batch_id DESC) = 1)
                 AS r
            LEFT JOIN ledger_latest AS l USING (phone, period)
            ORDER BY r.fetched_at DESC, r.fetch_id
        """
        with reading(self._tables):
            con = connect_base(self.path)
            try:
                rows = retry_read(lambda: con.execute(query).fetchall())
            finally:
                con.close()
        return [QuarantinedReply(*row) for row in rows]

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Every file and every job's rows checked (:mod:`harvester.store.verify`); ``repair``
        heals under the lock: damaged files moved aside, their jobs fetched again."""
        if not self.exists():
            raise StoreError(f"store.path {self.location} does not exist")
        from harvester.store.verify import verify_store

        return verify_store(
            Tables(self._layout),
            self.grain(),
            repair=repair,
            lock=lambda: self.lock(f"verify-{os.getpid()}"),
        )

    def views_sql(self) -> str:
        """The base relations' SQL for this store (see :func:`base_views_sql`)."""
        return base_views_sql(self.path)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harvester.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def open_index(path: Path | str) -> JobIndex:
    """The job index of the store at ``path``, empty if there is no store there (plan, sync)."""
    return Store(path).job_index()
