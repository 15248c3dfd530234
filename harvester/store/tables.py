"""The store's three Delta Lake tables through delta-rs (``deltalake``, imported inside functions
only, so ``harvester --help`` never pays its import, ~0.1 s; a table version is opened through
:mod:`~harvester.store.opening`).

Every commit the harvester makes is one atomic Delta commit: a reader (Spark, Trino, DuckDB,
Polars, pandas, or the harvester's own views) sees the version before it or the version after it,
never a half-written flush. Tables are named by URI plus storage options (``Layout.table_uri``),
so nothing here assumes a local folder.

Flush commits carry a Delta *transaction identifier* (app id ``harvester``, version = the flush's
batch id), the standard Delta mechanism for idempotent writers: after a crash, comparing the
ledger's and the data table's last batch tells whether a flush got its ledger records in but not
its rows (see :mod:`harvester.store.writer`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from harvester import __version__
from harvester.errors import StoreError
from harvester.store import schema as s
from harvester.store.location import CACHE_DIR, mirror, one_line, url_problem
from harvester.store.opening import Key, cached, drop_cached_reads, is_cached, load
from harvester.store.parquet_files import Journal, clean_unfinished, target, unfinished_journals

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

# The app id of the harvester's Delta transaction identifiers.
APP_ID = "harvester"
# Vacuum keeps no old version's files: at rest the Parquet files under a table's folder are
# exactly its current version, so a plain Parquet reader is exact too. A query that listed a
# file just before a vacuum removed it fails with a vanished file; the harvester's readers retry
# with the new version's list (views.retry_read), as they did around compaction before.
VACUUM_RETENTION_HOURS = 0
# Room a commit needs beyond its rows: the log entry, a checkpoint every 100 commits, Parquet
# footers. A write is refused (ENOSPC) before delta-rs starts it when the disk has less free
# than the rows' Arrow size (an upper bound of their compressed size) plus this: delta-rs fails
# cleanly on a full disk, but its I/O threads print panics to stderr on the way.
SPACE_MARGIN_BYTES = 64 * 1024
# Table properties: no log older than the newest checkpoint is kept (the files of older versions
# are vacuumed at once, so their log entries could only mislead a time-travel query). Without this
# a store's logs grew by ~30 MB over 1,100 flushes, a quarter of its size. A checkpoint every 10
# commits, not Delta's default 100: every commit through delta-rs 1.6 replays the log since the
# last checkpoint, so a commit's CPU grew from ~9 to ~35 ms over 100 flushes; a checkpoint of a
# table of ~600 files costs ~10 ms (docs/benchmarks.md, "Pipeline").
TABLE_CONFIGURATION = {
    "delta.logRetentionDuration": "interval 0 hours",
    "delta.enableExpiredLogCleanup": "true",
    "delta.checkpointInterval": "10",
}
# Tries of one commit that lost the race to another writer's (object storage, where no lock
# spans machines): each try re-reads the new version first, and a writer rarely loses twice.
COMMIT_ATTEMPTS = 5
# delta-rs's own allocator (jemalloc, read once when the library loads): give freed pages back at
# once instead of keeping them for 10 s. With the default, a pull's heap grew by ~0.5 MB a flush
# (90 -> 190 MB of anonymous memory over 200 flushes) and a compaction's by ~35 MB. Set before
# deltalake is first imported (only this module imports it); a value in the environment wins.
JEMALLOC_ENV = "_RJEM_MALLOC_CONF"
JEMALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
os.environ.setdefault(JEMALLOC_ENV, JEMALLOC_CONF)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One active file of a table's current version."""

    path: str  # relative to the table, as the Delta log names it
    uri: str  # where to read it
    size: int
    rows: int
    month: str | None


def _commit(batch: int | None, operation: str, *, txn: bool = False) -> Any:
    """Commit properties: who wrote it (visible in the table's history), and for a flush the
    transaction identifier ``(harvester, batch)``."""
    from deltalake import CommitProperties, Transaction

    metadata = {"harvester.version": __version__, "harvester.operation": operation}
    if batch is not None:
        metadata["harvester.batch_id"] = str(batch)
    transactions = [Transaction(APP_ID, batch)] if txn and batch is not None else None
    return CommitProperties(custom_metadata=metadata, app_transactions=transactions)


def write_errors() -> tuple[type[BaseException], ...]:
    """What a failed write raises: OSError, delta-rs's DeltaError, and its Rust panics
    (``PanicException`` derives from BaseException, so ``except Exception`` would miss it)."""
    from deltalake.exceptions import DeltaError

    kinds: list[type[BaseException]] = [OSError, DeltaError]
    with contextlib.suppress(ImportError):
        from pyo3_runtime import PanicException  # type: ignore[import-not-found]

        kinds.append(PanicException)
    return tuple(kinds)


class Tables:
    """The data, raw and ledger tables of one store."""

    def __init__(self, layout: s.Layout, locked: Callable[[], bool] = lambda: False) -> None:
        self.layout = layout
        # open tables of the writer (under the lock, nobody else commits): loading a table
        # costs ~10 ms (~50-250 ms on object storage), a commit through an open one updates it
        # in place
        self._handles: dict[str, DeltaTable] = {}
        # whether the store holds the lock: reads use the writer's open tables too then (the
        # lock's repair, file check, job index, batch ids and compaction read each table once
        # per run instead of ~6 times)
        self._locked = locked

    def uri(self, kind: str) -> str:
        """Where delta-rs finds table ``kind``; StoreError for a path it cannot address."""
        root = str(self.layout.root)
        if self.layout.url is None and ("[" in root or "]" in root):
            # delta-rs 1.6 turns the path into an object-store URL whose host then holds the
            # bracket (an IPv6 literal to the URL parser) and panics; a symlink does not help
            # (it resolves it first)
            raise StoreError(
                f"store.path {root}: the Delta Lake writer (delta-rs) cannot use a folder whose "
                "path holds '[' or ']': rename or move the folder"
            )
        problem = None if self.layout.url is None else url_problem(self.layout.url)
        if problem is not None:
            raise StoreError(f"store.path {self.layout.name}: {problem}")
        return self.layout.table_uri(kind)

    def forget(self) -> None:
        """Drop the open tables (the lock was taken: another process may have committed), and
        the versions read-only commands cached (:func:`cached_reads`)."""
        self._handles.clear()
        drop_cached_reads()

    def handle(self, kind: str) -> DeltaTable:
        """The writer's open table ``kind`` (StoreError if the store has no such table)."""
        table = self._handles.get(kind)
        if table is None:
            table = self._load(kind)  # its own: commits update it in place
            if table is None:
                raise StoreError(f"store.path {self.layout.name} has no {kind} table")
            self._handles[kind] = table
        return table

    # -- reading ------------------------------------------------------------------------------

    def exists(self, kind: str) -> bool:
        from deltalake import DeltaTable

        if kind in self._handles or is_cached(self._cache_key(kind)):
            return True
        return bool(
            DeltaTable.is_deltatable(self.uri(kind), storage_options=self.layout.storage_options)
        )

    def open(self, kind: str) -> DeltaTable | None:
        """The table's current version, or None if it does not exist (yet); within
        :func:`cached_reads`, the version this process opened first; under the lock, the
        writer's open table (current: only this process commits)."""
        if self._locked():
            table = self._handles.get(kind)
            if table is None:
                table = self._load(kind)
                if table is not None:
                    self._handles[kind] = table
            return table
        return cached(self._cache_key(kind), lambda: self._load(kind))

    def _cache_key(self, kind: str) -> Key:
        return self.uri(kind), tuple(sorted((self.layout.storage_options or {}).items()))

    def _load(self, kind: str) -> DeltaTable | None:
        """The table's current version, read from its log now (None if there is no table)."""
        what = f"the {kind} table of {self.layout.name}"
        return load(self.uri(kind), self.layout.storage_options, what)

    def description(self) -> str | None:
        """The data table's description (``store.json``'s content, see ``create_missing``)."""
        table = self.open(s.DATA_DIR)
        return None if table is None else table.metadata().description

    def files(self, kind: str) -> list[str]:
        """The current version's files (what a query must read: no more, no less); local
        paths, on object storage those of the read cache (:mod:`harvester.store.location`)."""
        table = self.open(kind)
        if table is None:
            return []
        if self.layout.url is not None:
            return [str(path) for path in self._mirror(kind, table).values()]
        return [_local(uri) for uri in table.file_uris()]

    def _mirror(self, kind: str, table: DeltaTable) -> dict[str, Path]:
        try:
            return mirror(table, self.layout.root / CACHE_DIR / kind)
        except OSError as exc:
            raise StoreError(
                f"cannot read the {kind} table of {self.layout.name}: {one_line(exc)}"
            ) from None

    def active_paths(self, kind: str) -> list[str]:
        """The current version's files, relative to the table (nothing is downloaded)."""
        import pyarrow as pa

        table = self.open(kind)
        if table is None:
            return []
        actions = pa.table(table.get_add_actions(flatten=True))
        return [unquote(path) for path in actions.column("path").to_pylist()]

    def file_infos(self, kind: str) -> list[FileInfo]:
        """The current version's files with their sizes, row counts and partitions."""
        import pyarrow as pa

        table = self.open(kind)
        if table is None:
            return []
        actions = pa.table(table.get_add_actions(flatten=True))
        if not actions.num_rows:
            return []
        months = (
            actions.column(f"partition.{s.PARTITION_KEY}").to_pylist()
            if f"partition.{s.PARTITION_KEY}" in actions.column_names
            else [None] * actions.num_rows
        )
        base = _local(self.uri(kind)).rstrip("/")
        local = (
            {unquote(k): str(v) for k, v in self._mirror(kind, table).items()}
            if self.layout.url is not None
            else {}
        )
        return [
            FileInfo(
                path,
                local.get(unquote(path)) or f"{base}/{unquote(path)}",
                int(size or 0),
                int(rows or 0),
                month,
            )
            for path, size, rows, month in zip(
                actions.column("path").to_pylist(),
                actions.column("size_bytes").to_pylist(),
                actions.column("num_records").to_pylist(),
                months,
                strict=True,
            )
        ]

    def batch(self, kind: str) -> int:
        """The last flush batch committed to ``kind`` (its transaction identifier), or 0."""
        table = self._handles.get(kind) or self.open(kind)
        if table is None:
            return 0
        from deltalake.exceptions import DeltaError

        try:
            version = table.transaction_version(APP_ID)
        except DeltaError:
            return 0
        return int(version) if version is not None else 0

    def highest_batch(self) -> int:
        """The highest batch id any harvester commit of this store names (flush or not)."""
        highest = max(self.batch(kind) for kind in s.KINDS)
        for kind in s.KINDS:
            table = self.open(kind)
            if table is None:
                continue
            for entry in table.history(limit=20):
                with contextlib.suppress(TypeError, ValueError):
                    highest = max(highest, int(entry.get("harvester.batch_id", 0)))
        return highest

    # -- writing (only under the store's lock) ------------------------------------------------

    def ensure_space(self, rows: Any = None) -> None:
        """OSError(ENOSPC) if a local store's disk cannot take ``rows`` (an Arrow table or None)
        plus SPACE_MARGIN_BYTES; object storage is not checked."""
        if self.layout.url is not None:
            return
        try:
            stats = os.statvfs(self.layout.root)
        except OSError:
            return
        free = stats.f_bavail * stats.f_frsize
        need = int(getattr(rows, "nbytes", 0)) + SPACE_MARGIN_BYTES
        if free < need:
            raise OSError(
                errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free:,} bytes free, need ~{need:,})"
            )

    def create_missing(
        self, properties: dict[str, str] | None = None, description: str | None = None
    ) -> None:
        """Create each table that does not exist yet, empty, with its explicit schema and
        ``properties`` (the store's grain and format) in its configuration; the data table's
        description is ``description`` (the same, as JSON, for engines that show descriptions)."""
        from deltalake import DeltaTable

        for kind in s.KINDS:
            if self.exists(kind):
                continue
            DeltaTable.create(
                self.uri(kind),
                schema=s.SCHEMAS[kind](),
                mode="ignore",
                partition_by=[s.PARTITION_KEY] if kind in s.PARTITIONED else None,
                name=f"harvester_{kind}",
                description=description if kind == s.DATA_DIR else None,
                configuration={**TABLE_CONFIGURATION, **(properties or {})},
                storage_options=self.layout.storage_options,
                commit_properties=_commit(None, "create"),
                raise_if_key_not_exists=False,  # the harvester.* properties
            )
        drop_cached_reads()

    def append(
        self, kind: str, rows: pa.Table | pa.RecordBatchReader, batch: int, *, txn: bool = True
    ) -> None:
        """One commit adding ``rows`` (possibly none: then only the transaction identifier)."""
        self.ensure_space(rows)
        self._commit_files(kind, rows, None, batch, "flush", txn=txn)

    def replace(
        self,
        kind: str,
        rows: pa.Table | pa.RecordBatchReader,
        predicate: str,
        batch: int,
        operation: str,
    ) -> None:
        """One commit removing the rows ``predicate`` matches and adding ``rows`` (which should
        all match it): what Delta's overwrite with a predicate (replaceWhere) does."""
        self.ensure_space(rows)
        self._commit_files(kind, rows, predicate, batch, operation, txn=operation == "flush")

    def overwrite(
        self, kind: str, rows: pa.Table | pa.RecordBatchReader, batch: int, operation: str
    ) -> None:
        """One commit replacing the whole table by ``rows`` (an Arrow table or stream)."""
        self.ensure_space(rows)
        self._commit_files(kind, rows, "true", batch, operation, txn=False)

    def delete(self, kind: str, predicate: str, batch: int, operation: str) -> None:
        """One commit deleting the rows ``predicate`` matches (no commit if none matches)."""
        self.ensure_space()
        self._commit_files(kind, None, predicate, batch, operation, txn=operation == "flush")

    def _commit_files(
        self,
        kind: str,
        rows: pa.Table | pa.RecordBatchReader | None,
        predicate: str | None,
        batch: int,
        operation: str,
        *,
        txn: bool,
    ) -> None:
        """One commit of ``rows`` written as new files (page checksums) and of the removal of
        the rows ``predicate`` matches (:mod:`harvester.store.commit`); none when there is
        nothing to add or remove and no transaction identifier to record. If another writer
        committed first and delta-rs's conflict check refuses it (``CommitFailedError``: a
        conditional put lost on object storage, or a file it removes was removed meanwhile),
        it is worked out again on the new version."""
        from deltalake.exceptions import CommitFailedError

        from harvester.store.commit import FileCommit

        where = target(self.uri(kind), self.layout.storage_options)
        journal = Journal(self.layout.root, kind)
        commit = FileCommit(where, journal, rows, predicate, txn=txn)
        drop_cached_reads()  # a cached version is about to be an old one
        try:
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                table = self.handle(kind)
                try:
                    committed = commit.attempt(table, _commit(batch, operation, txn=txn))
                except CommitFailedError:
                    if attempt == COMMIT_ATTEMPTS:
                        commit.abandon()
                        raise
                    log.info("a concurrent commit won on the %s table: redoing this one", kind)
                    self._handles.pop(kind, None)
                    continue
                if committed:
                    try:  # unlike delta-rs's own writes, this one leaves the open table behind
                        table.update_incremental()
                    except write_errors():  # committed all the same: the next use reopens it
                        self._handles.pop(kind, None)
                return
        finally:
            journal.close()

    def vacuum(self, kind: str) -> int:
        """Delete the files no current version needs (removed by a commit, or written for a
        commit a killed writer never made: :class:`~harvester.store.parquet_files.Journal`);
        returns how many. Only under the store's lock, with no commit under way.

        Files that are not the table's (a user's copy, a stray file) are never touched.
        """
        if not self.exists(kind):
            return 0
        self.ensure_space()
        drop_cached_reads()  # its files are about to go
        table = self.handle(kind)
        removed = table.vacuum(
            retention_hours=VACUUM_RETENTION_HOURS,
            dry_run=False,
            enforce_retention_duration=False,
            commit_properties=_commit(None, "vacuum"),
        )
        return len(removed) + self._clean_unfinished(kind, table)

    def sweep_uncommitted(self, kind: str) -> int:
        """Delete the files a killed writer of this machine wrote for a commit it never made
        (named in its journal); returns how many. Only under the store's lock, with no commit
        under way: taking the lock does it, so a plain Parquet reader of the folder is exact
        again even when the next run commits nothing. No journal, nothing read."""
        if not unfinished_journals(self.layout.root, kind):
            return 0
        table = self.open(kind)
        return 0 if table is None else self._clean_unfinished(kind, table)

    def _clean_unfinished(self, kind: str, table: DeltaTable) -> int:
        where = target(self.uri(kind), self.layout.storage_options)
        return clean_unfinished(self.layout.root, kind, where, _active_paths(table))

    def tidy_log(self, kind: str) -> None:
        """Write a checkpoint of the current version and delete the log entries before it."""
        if not self.exists(kind):
            return
        self.ensure_space()
        drop_cached_reads()  # the log entries a cached version was read from are about to go
        table = self.handle(kind)
        configuration = table.metadata().configuration
        if any(configuration.get(k) != v for k, v in TABLE_CONFIGURATION.items()):
            # a table created before these properties (one commit, once)
            table.alter.set_table_properties(
                TABLE_CONFIGURATION, commit_properties=_commit(None, "configure")
            )
        table.create_checkpoint()
        table.cleanup_metadata()


def _active_paths(table: DeltaTable) -> set[str]:
    """The relative paths of the files the table's current version holds."""
    import pyarrow as pa

    paths = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
    return {unquote(path) for path in paths}


def _local(uri: str) -> str:
    """A local file as a plain path: delta-rs percent-encodes them (``a%20b``); URIs stay."""
    return uri if "://" in uri else unquote(uri)


def sql_string(text: str) -> str:
    """A SQL string literal for a delta-rs predicate."""
    return "'" + text.replace("'", "''") + "'"


def in_list(column: str, values: Iterator[str] | list[str]) -> str:
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"
