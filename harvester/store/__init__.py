"""The store: hive-partitioned Parquet data, a Parquet job ledger, a raw archive, one lock.

    store = Store(root)                          # no I/O
    store.ensure_writable(grain)                 # StoreError naming the path
    with store.lock(run_id):                     # StoreLockedError naming pid, host, since
        index = store.job_index()                # state(key), done_window(key), last_done_end()
        with store.writer(run_id) as writer:     # batched, atomic, crash-safe
            writer.record_done(job, parsed, body, meta)
            writer.record_failed(job, reason, body, meta, quarantine)
    store.compact(); store.needs_compaction(); store.status(); store.quarantine()

The layout is in :mod:`harvester.store.schema`; the visibility rule (a row is visible iff its
fetch is its job's latest done ledger record) in :mod:`harvester.store.views`, whose
:func:`base_views_sql` defines the relations ``queries/*.sql`` are written against.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvester import __version__
from harvester.errors import StoreError
from harvester.jobs import Grain
from harvester.store import schema as s
from harvester.store.ledger import JobIndex, JobState, load_index
from harvester.store.lock import LockHolder, hold_lock
from harvester.store.status import PhoneStatus, RunInfo, StoreStatus, store_status
from harvester.store.views import base_views_sql, connect_base, parquet_source, retry_read

# Writing and compacting need pyarrow.parquet and pyarrow.compute (~80 ms to import); reading the
# ledger (`harvester plan`, `status`) does not. So those modules load on first use (PEP 562).
_LAZY = {
    "CompactionResult": "harvester.store.compact",
    "FetchMeta": "harvester.store.writer",
    "FlushResult": "harvester.store.writer",
    "StoreWriter": "harvester.store.writer",
}

if TYPE_CHECKING:
    from harvester.store.compact import CompactionResult
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
    "open_index",
    "retry_read",
]

# Entries a fresh store folder may already hold (a previous ensure_writable that crashed, or an
# empty folder the user made): anything else means the folder is not ours to fill.
_OWN_ENTRIES = {s.STORE_FILE, s.LOCK_FILE, s.DATA_DIR, s.RAW_DIR, s.LEDGER_DIR}


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

    def __init__(self, root: Path | str) -> None:
        self.path = Path(root)
        self._layout = s.Layout(self.path)
        self._write_mutex = threading.Lock()  # one flush or compaction at a time
        self._batch_mutex = threading.Lock()
        self._next_batch: int | None = None
        self._lock_depth = 0
        self._run_id: str | None = None

    # -- set-up -------------------------------------------------------------------------------

    def grain(self) -> Grain | None:
        """The window grain recorded in ``store.json``, or None for a new or foreign folder."""
        try:
            info = json.loads(self._layout.store_file.read_text())
            return Grain(info["grain"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def ensure_writable(self, grain: Grain | str) -> None:
        """Create the store (folders, ``store.json``) or check that it can take ``grain``."""
        grain = Grain(grain)
        root = self.path
        if root.exists() and not root.is_dir():
            raise StoreError(f"store.path {root} is a file, not a folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store.path: cannot create the store folder {root}: {exc.strerror}"
            ) from None
        store_file = self._layout.store_file
        if store_file.exists():
            self._check_store_file(grain)
        else:
            foreign = sorted(e.name for e in root.iterdir() if e.name not in _OWN_ENTRIES)
            if foreign:
                raise StoreError(
                    f"store.path {root} is not empty and holds no {s.STORE_FILE} "
                    f"(found {', '.join(foreign[:3])}): point it at a new or existing store"
                )
        self._probe_writable()
        for folder in (self._layout.data, self._layout.raw, self._layout.ledger):
            folder.mkdir(exist_ok=True)
        if not store_file.exists():
            from harvester.store.files import fsync_dir, temp_path

            info = {
                "format": s.FORMAT_NAME,
                "format_version": s.FORMAT_VERSION,
                "grain": grain.value,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "created_by": f"harvester {__version__}",
            }
            tmp = temp_path(store_file)
            tmp.write_text(json.dumps(info, indent=2) + "\n")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, store_file)
            fsync_dir(root)

    def _check_store_file(self, grain: Grain) -> None:
        store_file = self._layout.store_file
        try:
            info = json.loads(store_file.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{store_file} is unreadable: {exc}") from None
        if not isinstance(info, dict) or info.get("format") != s.FORMAT_NAME:
            raise StoreError(f"{store_file} is not a harvester store file")
        if info.get("format_version") != s.FORMAT_VERSION:
            raise StoreError(
                f"store.path {self.path} has format version {info.get('format_version')}; "
                f"this harvester writes version {s.FORMAT_VERSION}"
            )
        if info.get("grain") != grain.value:
            raise StoreError(
                f"store.path {self.path} holds {info.get('grain')} windows, not {grain.value}: "
                "use another store.path for another window"
            )

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

        Taking it also removes temp files a crashed writer left behind.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield None
            finally:
                self._lock_depth -= 1
            return
        if not self.path.is_dir():
            raise StoreError(f"store.path {self.path} is not a store folder")
        from harvester.store.files import remove_temps

        with hold_lock(self._layout.lock_file, run_id) as holder:
            self._lock_depth, self._run_id, self._next_batch = 1, run_id, None
            try:
                remove_temps([self._layout.data, self._layout.raw, self._layout.ledger])
                yield holder
            finally:
                self._lock_depth, self._run_id = 0, None

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
        return StoreWriter(
            self._layout,
            run_id,
            allocate_batch=self._allocate_batch,
            write_mutex=self._write_mutex,
            flush_jobs=flush_jobs,
            flush_seconds=flush_seconds,
            monotonic=monotonic,
        )

    def compact(self) -> CompactionResult:
        """Merge small files (one per partition) and the ledger (one file); results unchanged.

        Takes the lock unless this object already holds it (a pull compacting at its end).
        """
        if not self._layout.ledger.is_dir() and not self._layout.data.is_dir():
            raise StoreError(f"store.path {self.path} holds no store")
        from harvester.store.compact import compact_store

        with self.lock(self._run_id or f"compact-{os.getpid()}"), self._write_mutex:
            return compact_store(self._layout, self._allocate_batch())

    def needs_compaction(self) -> bool:
        """Whether enough small files piled up for :meth:`compact` to pay off."""
        return s.needs_compaction(self._layout)

    def _require_lock(self, what: str) -> None:
        if not self._lock_depth:
            raise StoreError(f"cannot {what} the store {self.path} without holding its lock")

    def _allocate_batch(self) -> int:
        """A batch id above every id on disk (files of crashed writers included)."""
        with self._batch_mutex:
            if self._next_batch is None:
                self._next_batch = self._max_batch_on_disk() + 1
            batch = self._next_batch
            self._next_batch += 1
            return batch

    def _max_batch_on_disk(self) -> int:
        highest = 0
        for base in (self._layout.data, self._layout.raw, self._layout.ledger):
            if not base.is_dir():
                continue
            for _, _, names in os.walk(base):
                for name in names:
                    batch = s.batch_of(name)
                    if batch is not None and batch > highest:
                        highest = batch
        return highest

    # -- reading ------------------------------------------------------------------------------

    def load_quota_state(self) -> dict[str, Any] | None:
        """The quota state the last run saved here (see :mod:`harvester.store.quota_state`)."""
        from harvester.store.quota_state import load_quota_state

        return load_quota_state(self.path)

    def save_quota_state(self, state: Mapping[str, object]) -> bool:
        """Keep ``state`` for the next run (atomically); False if it could not be written."""
        from harvester.store.quota_state import save_quota_state

        return save_quota_state(self.path, state)

    def job_index(self) -> JobIndex:
        """Every job's state, attempts and visible window, loaded once (works without a lock)."""
        return load_index(self._layout.root, self.grain())

    def status(self) -> StoreStatus:
        """Jobs, rows, coverage, gaps, files and the last run, from the ledger alone."""
        if not self.path.is_dir():
            raise StoreError(f"store.path {self.path} does not exist")
        return store_status(
            self._layout,
            g.value if (g := self.grain()) else None,
            needs_compaction=self.needs_compaction(),
        )

    def quarantine(self) -> list[QuarantinedReply]:
        """Every quarantined reply (newest first), with the job's current state."""
        if not self._layout.part_files(self._layout.raw):
            return []
        raw = parquet_source(f"{self._layout.raw}/*/*{s.PARQUET_SUFFIX}", partitioned=True)
        # Filter before de-duplicating: the raw_replies view's dedupe would read every body.
        query = f"""
            SELECT r.phone, r.period, r.window_start, r.window_end, r.request_path,
                   r.http_status, r.fetched_at, r.reason, r.fetch_id, r.run_id, r.body, l.state
            FROM (SELECT * FROM {raw} WHERE quarantined
                  QUALIFY row_number() OVER (PARTITION BY fetch_id ORDER BY batch_id DESC) = 1)
                 AS r
            LEFT JOIN ledger_latest AS l USING (phone, period)
            ORDER BY r.fetched_at DESC, r.fetch_id
        """
        con = connect_base(self._layout.root)
        try:
            rows = retry_read(lambda: con.execute(query).fetchall())
        finally:
            con.close()
        return [QuarantinedReply(*row) for row in rows]

    def views_sql(self) -> str:
        """The base relations' SQL for this store (see :func:`base_views_sql`)."""
        return base_views_sql(self._layout.root)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harvester.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def open_index(path: Path | str) -> JobIndex:
    """The job index of the store at ``path``, empty if there is no store there (plan, sync)."""
    return Store(path).job_index()
