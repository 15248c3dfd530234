"""Compaction: many small files into one per partition, the ledger into one file, safely.

When it is due: :func:`needs_compaction` (in :mod:`~harvester.store.schema`, re-exported here).

Order of operations (each file published with temp name, fsync, rename, folder fsync):

1. For every partition worth it (more than one file, or rows no ledger record makes visible),
   write its visible rows (data) or kept bodies (raw) into one new file under a NEW batch id B.
2. Write ONE ledger file holding the kept records (the latest per job, and the latest done one
   if that is older), renumbered under B, with records of rewritten partitions re-pointed to B.
   This single rename is the commit point: before it the new files are invisible (no record
   names batch B), after it the old files are (no current record names their batches).
3. Delete the old ledger files, then the old data and raw files.

A crash anywhere leaves a consistent store; the next compaction merges or drops the leftovers.
Readers that race step 3 may hit a vanished file and get an IOException: ``retry_read``.

Memory stays bounded by one partition whatever the store's size (a nightly sync on a small VM
may compact a store of ten million rows): DuckDB decides which records to keep from a narrow copy
of the ledger's key columns (aggregates, no window, no sort); then each partition's old files are
read through a filter (Arrow ``is_in`` against the kept fetches of their batch) and written
sorted, a row group at a time; the ledger's kept records are streamed file by file. Measured on
550,000 daily jobs (7.6 M rows, 3,364 files, 2 cores): sorting each partition in DuckDB and
materialising it took 22 s, 34 s of CPU and 0.95 GB; this takes 24 s, 26 s of CPU and 0.38 GB,
most of it reading and writing the Parquet itself (docs/benchmarks.md).

Attempt counts survive: a dropped record's attempts move into ``prior_attempts`` of its job's
latest record, so ``sum(attempts + prior_attempts)`` per job is unchanged. Quarantined raw
bodies are always kept; superseded valid ones are dropped with their rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester import __version__
from harvester.errors import StoreError
from harvester.store import schema as s
from harvester.store.files import ParquetSink, publish, remove
from harvester.store.schema import COMPACT_FILES_THRESHOLD, needs_compaction
from harvester.store.views import empty_select, new_connection, parquet_source

# The order of a compacted partition: by phone, then window, grouped by fetch. Rows of one phone
# (ALL above all) share row groups, so `phone = 'ALL'` and per-number queries skip the rest by
# min/max statistics: the account-wide views ran ~35% faster than over rows in fetch order, and
# phone-adjacent bodies compress ~15% better. Each partition is sorted on its own, so memory
# holds one partition (its strings kept dictionary-encoded), never the store.
_SORT_DATA = (("phone", "ascending"), ("window_start", "ascending"), ("fetch_id", "ascending"))
_SORT_RAW = (("phone", "ascending"), ("window_start", "ascending"), ("fetched_at", "ascending"))
# Read as Arrow dictionaries while a partition is held: a few distinct values per column (the
# sort keys must stay plain: Arrow sorts no dictionary column).
_DATA_DICTIONARIES = ("application", "page", "form", "item")
_RAW_DICTIONARIES = ("request_path", "reason", "run_id", "harvester_version")

# Rows per Parquet row group of a compacted data or ledger file: DuckDB's own row group size, so
# each of a query's threads takes whole row groups and statistics stay selective.
ROW_GROUP_ROWS = 122_880
# Raw bodies are ~2-3 KB each (ALL's ~5 KB): 4,096 of them keep a row group near 10 MB. zstd
# compresses page by page (1 MB), so smaller groups cost no size.
RAW_ROW_GROUP_ROWS = 4_096


__all__ = ["COMPACT_FILES_THRESHOLD", "CompactionResult", "compact_store", "needs_compaction"]


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What a compaction did; ``batch_id`` is None when there was nothing to do."""

    batch_id: int | None = None
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows_kept: int = 0
    rows_dropped: int = 0
    ledger_records: int = 0
    ledger_records_dropped: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.batch_id is None:
            return "nothing to compact"
        return (
            f"compacted {self.partitions} partition(s): {self.files_before} files -> "
            f"{self.files_after}; {self.rows_kept:,} rows kept, {self.rows_dropped:,} superseded "
            f"rows dropped; ledger {self.ledger_records:,} records "
            f"({self.ledger_records_dropped:,} dropped) in {self.seconds:.1f} s"
        )


def compact_store(layout: s.Layout, batch: int) -> CompactionResult:
    """Compact the store at ``layout`` under the new batch id ``batch``; hold the lock."""
    started = time.perf_counter()
    ledger_files = layout.part_files(layout.ledger)
    data_parts = layout.partitions(layout.data)
    raw_parts = layout.partitions(layout.raw)
    con = new_connection(ordered=False)
    try:
        records_before = _load_kept(con, ledger_files)
        data_todo = _partitions_to_rewrite(con, data_parts, "data")
        raw_todo = _partitions_to_rewrite(con, raw_parts, "raw")
        kept = _Kept.load(con, set(data_todo))
    finally:
        con.close()
    idle = not data_todo and not raw_todo and len(ledger_files) <= 1
    if idle and kept.records == records_before:
        return CompactionResult(seconds=time.perf_counter() - started)
    if kept.records >= s.MAX_RECORDS_PER_FILE:
        raise ValueError(f"a compacted ledger cannot hold {kept.records} records")
    meta = {"harvester.version": __version__, "harvester.batch_id": str(batch)}
    temps: list[Path] = []
    rows_kept = rows_before = 0
    for month in sorted(data_todo):
        final = layout.partition(layout.data, month) / s.part_name(batch)
        sink = ParquetSink(final, s.DATA_SCHEMA, s.DATA_DICTIONARY, meta, ROW_GROUP_ROWS)
        rows_before += _rewrite(
            data_parts[month], sink, batch, kept.visible_rows(month), _SORT_DATA, _DATA_DICTIONARIES
        )
        temps += _finish(sink)
        rows_kept += sink.rows
    for month in sorted(raw_todo):
        final = layout.partition(layout.raw, month) / s.part_name(batch)
        sink = ParquetSink(final, s.RAW_SCHEMA, s.RAW_DICTIONARY, meta, RAW_ROW_GROUP_ROWS)
        keep = kept.kept_bodies(month)
        _rewrite(raw_parts[month], sink, batch, keep, _SORT_RAW, _RAW_DICTIONARIES)
        temps += _finish(sink)
    publish(temps)
    final = layout.ledger / s.part_name(batch)
    ledger = ParquetSink(final, s.LEDGER_SCHEMA, s.LEDGER_DICTIONARY, meta, ROW_GROUP_ROWS)
    _copy_ledger(ledger_files, ledger, batch, kept)
    if ledger.rows != kept.records:  # every kept record is in the file its seq names
        ledger.abandon()
        raise StoreError(
            f"compaction found {ledger.rows} of {kept.records} kept ledger records in "
            f"{layout.ledger}: a ledger file's name does not match its records; nothing changed"
        )
    publish(_finish(ledger, keep_empty=True))
    old_files = [f for month in data_todo for f in data_parts[month]]
    old_files += [f for month in raw_todo for f in raw_parts[month]]
    remove(f for f in ledger_files if f.name != s.part_name(batch))
    remove(old_files)
    return CompactionResult(
        batch_id=batch,
        partitions=len(data_todo),
        files_before=len(old_files) + len(ledger_files),
        files_after=len(temps) + 1,
        rows_kept=rows_kept,
        rows_dropped=rows_before - rows_kept,
        ledger_records=ledger.rows,
        ledger_records_dropped=records_before - ledger.rows,
        seconds=time.perf_counter() - started,
    )


def _load_kept(con: duckdb.DuckDBPyConnection, ledger_files: list[Path]) -> int:
    """Create temp table ``keep``: per kept record its ``seq``, new ``prior_attempts``, whether
    it is its job's visible fetch (``is_current``), ``fetch_id``, ``batch_id`` and ``month``.

    Only the columns the decisions need are loaded; the records themselves are copied from the
    ledger files afterwards. Per job, aggregates (no window, no sort) find the latest record and
    the latest done one. Returns the number of records before compaction.
    """
    if ledger_files:
        source = parquet_source(ledger_files, partitioned=False)
    else:
        source = f"({empty_select(s.LEDGER_SCHEMA)})"
    con.execute(
        f"""
        CREATE TEMP TABLE led AS
        SELECT phone, period, seq, state, attempts, prior_attempts, fetch_id, batch_id,
               window_start
        FROM {source}
        """
    )
    records = _count(con, "led")
    con.execute(
        """
        CREATE TEMP TABLE keep AS
        WITH jobs AS (
            SELECT max(seq) AS latest,
                   max(seq) FILTER (WHERE state = 'done') AS current,
                   CAST(sum(attempts + prior_attempts) AS BIGINT) AS total,
                   arg_max(attempts, seq) AS latest_attempts,
                   arg_max(attempts, seq) FILTER (WHERE state = 'done') AS current_attempts
            FROM led
            GROUP BY phone, period
        ), kept AS (
            SELECT latest AS seq,
                   total - latest_attempts
                       - CASE WHEN current <> latest THEN current_attempts ELSE 0 END
                       AS prior_attempts,
                   coalesce(current = latest, false) AS is_current
            FROM jobs
            UNION ALL
            SELECT current, 0, true FROM jobs WHERE current <> latest
        )
        SELECT k.seq, CAST(k.prior_attempts AS BIGINT) AS prior_attempts, k.is_current,
               l.fetch_id, l.batch_id, strftime(l.window_start, '%Y-%m') AS month
        FROM kept AS k JOIN led AS l ON l.seq = k.seq
        """
    )
    con.execute("DROP TABLE led")
    return records


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    # fetchall, not fetchone: DuckDB 2 refuses new work while a result is only partly fetched.
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _partitions_to_rewrite(
    con: duckdb.DuckDBPyConnection, parts: dict[str, list[Path]], kind: str
) -> set[str]:
    """Partitions with several files, or one file holding rows to drop (read to find out)."""
    todo = {month for month, files in parts.items() if len(files) > 1}
    single = [files[0] for month, files in parts.items() if month not in todo]
    if not single:
        return todo
    source = parquet_source(single, partitioned=True)
    if kind == "data":
        query = f"""
            SELECT DISTINCT f.month
            FROM (SELECT month, fetch_id, batch_id FROM {source}) AS f
            ANTI JOIN (SELECT fetch_id, batch_id FROM keep WHERE is_current) AS c
                ON c.fetch_id = f.fetch_id AND c.batch_id = f.batch_id
        """
    else:
        query = f"""
            SELECT DISTINCT f.month
            FROM (SELECT month, fetch_id FROM {source} WHERE NOT quarantined) AS f
            ANTI JOIN (SELECT DISTINCT fetch_id FROM keep) AS k ON k.fetch_id = f.fetch_id
        """
    return todo | {month for (month,) in con.execute(query).fetchall()}


# keep(rows, batch id of the file they come from) -> which rows to keep
_Filter = Callable[[pa.RecordBatch, int], pa.Array]


@dataclass(frozen=True)
class _Kept:
    """The kept records, in Arrow: ``by_seq`` sorted by seq, ``by_month`` by month."""

    by_seq: pa.Table  # seq, prior_attempts, repoint (its partition is rewritten)
    by_month: pa.Table  # month, fetch_id, batch_id, is_current
    months: dict[str, tuple[int, int]]  # month -> its slice of by_month
    batches: dict[int, tuple[int, int]]  # batch of a ledger file -> its slice of by_seq

    @property
    def records(self) -> int:
        return int(self.by_seq.num_rows)

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, rewritten: set[str]) -> _Kept:
        months = "[" + ", ".join(f"'{m}'" for m in sorted(rewritten)) + "]"
        by_seq = con.sql(
            f"SELECT seq, prior_attempts, list_contains({months}, month) AS repoint "
            "FROM keep ORDER BY seq"
        ).to_arrow_table()
        by_month = con.sql(
            "SELECT month, fetch_id, batch_id, is_current FROM keep ORDER BY month"
        ).to_arrow_table()
        ledger_batches = pc.shift_right(by_seq.column("seq"), s.SEQ_BITS)
        return cls(by_seq, by_month, _runs(by_month.column("month")), _runs(ledger_batches))

    def visible_rows(self, month: str) -> _Filter:
        """Keeps a data row iff its fetch is its job's visible one (fetch_id and batch_id)."""
        start, end = self.months.get(month, (0, 0))
        current = self.by_month.slice(start, end - start).filter(
            self.by_month.column("is_current").slice(start, end - start)
        )
        batches = _group(current.column("batch_id"), current.column("fetch_id"))
        empty = pa.array([], pa.int64())

        def keep(rows: pa.RecordBatch, batch: int) -> pa.Array:
            fetches = batches.get(batch, empty)
            mask = pc.is_in(rows.column("fetch_id"), value_set=fetches)
            return pc.and_(mask, pc.equal(rows.column("batch_id"), batch))

        return keep

    def kept_bodies(self, month: str) -> _Filter:
        """Keeps a raw body iff it is quarantined or its fetch has a kept record; once per fetch
        (a compaction that crashed before its deletes leaves a second copy)."""
        start, end = self.months.get(month, (0, 0))
        fetches = self.by_month.column("fetch_id").slice(start, end - start)
        seen: set[int] = set()

        def keep(rows: pa.RecordBatch, batch: int) -> pa.Array:
            wanted = pc.or_(rows.column("quarantined"), pc.is_in(rows.column("fetch_id"), fetches))
            ids = rows.column("fetch_id").to_pylist()
            first = [False] * len(ids)
            for i, (fetch, want) in enumerate(zip(ids, wanted.to_pylist(), strict=True)):
                if want and fetch not in seen:
                    seen.add(fetch)
                    first[i] = True
            return pa.array(first, pa.bool_())

        return keep


def _runs(values: pa.ChunkedArray) -> dict[Any, tuple[int, int]]:
    """Value -> (start, end) of its run in a column sorted by it."""
    encoded = pc.run_end_encode(values.combine_chunks()) if len(values) else None
    if encoded is None:
        return {}
    out: dict[Any, tuple[int, int]] = {}
    start = 0
    for value, end in zip(encoded.values.to_pylist(), encoded.run_ends.to_pylist(), strict=True):
        out[value] = (start, end)
        start = end
    return out


def _group(keys: pa.ChunkedArray, values: pa.ChunkedArray) -> dict[int, pa.Array]:
    """Values grouped by key (few keys: the batches of one partition)."""
    table = pa.table({"key": keys, "value": values}).sort_by("key")
    return {
        key: table.column("value").slice(start, end - start).combine_chunks()
        for key, (start, end) in _runs(table.column("key")).items()
        if isinstance(key, int)
    }


def _rewrite(
    files: list[Path],
    sink: ParquetSink,
    batch: int,
    keep: _Filter,
    order: tuple[tuple[str, str], ...],
    dictionaries: tuple[str, ...],
) -> int:
    """Write the rows of one partition's ``files`` that ``keep`` keeps into ``sink``, sorted by
    ``order``, under ``batch``; returns the rows read. On an error the sink is abandoned (its
    temp file left for remove_temps).

    Sorting moves row indices, not rows: the kept rows stay where they were read, and one row
    group's worth is gathered (``take``) at a time.
    """
    read = 0
    parts: list[pa.Table] = []
    try:
        for path in files:
            source_batch = s.batch_of(path.name)
            assert source_batch is not None  # part_files lists part files only
            source = pq.ParquetFile(path, read_dictionary=dictionaries)
            for rows in source.iter_batches(batch_size=sink.row_group_rows):
                read += rows.num_rows
                kept = rows.filter(keep(rows, source_batch))
                if kept.num_rows:
                    parts.append(pa.Table.from_batches([kept]))
        if parts:
            table = pa.concat_tables(parts)
            indices = pc.sort_indices(table.select([key for key, _ in order]), sort_keys=order)
            for start in range(0, len(indices), sink.row_group_rows):
                group = table.take(indices.slice(start, sink.row_group_rows))
                sink.write(_with_batch(group, batch))
    except BaseException:
        sink.abandon()
        raise
    return read


def _with_batch(table: pa.Table, batch: int) -> pa.Table:
    position = table.schema.get_field_index("batch_id")
    values = pa.repeat(pa.scalar(batch, pa.int64()), table.num_rows)
    return table.set_column(position, "batch_id", values)


def _copy_ledger(files: list[Path], sink: ParquetSink, batch: int, kept: _Kept) -> None:
    """The kept records, in file (= seq) order, renumbered under ``batch`` (the new seq keeps
    their order), their ``prior_attempts`` updated, those of rewritten partitions re-pointed."""
    base = batch << s.SEQ_BITS
    try:
        for path in files:
            _copy_records(path, sink, batch, base, kept)
    except BaseException:
        sink.abandon()
        raise


def _copy_records(path: Path, sink: ParquetSink, batch: int, base: int, kept: _Kept) -> None:
    """One ledger file's kept records: a record's new seq is ``base`` plus its position among
    all kept records in seq order (``kept.by_seq``, where this file's records are one slice)."""
    file_batch = s.batch_of(path.name)
    assert file_batch is not None  # part_files lists part files only
    start, end = kept.batches.get(file_batch, (0, 0))
    if start == end:
        return  # no record of this file is kept
    mine = kept.by_seq.slice(start, end - start)
    seqs = mine.column("seq").combine_chunks()
    for rows in pq.ParquetFile(path).iter_batches(batch_size=sink.row_group_rows):
        found = pc.index_in(rows.column("seq"), value_set=seqs)
        records = pa.Table.from_batches([rows]).filter(pc.is_valid(found))
        if not records.num_rows:
            continue
        where = found.filter(pc.is_valid(found))
        columns = {
            "seq": pc.add(pc.add(where.cast(pa.int64()), start), base),
            "prior_attempts": mine.column("prior_attempts").take(where),
            "batch_id": pc.if_else(
                mine.column("repoint").take(where), batch, records.column("batch_id")
            ),
        }
        for name, values in columns.items():
            position = records.schema.get_field_index(name)
            records = records.set_column(position, name, values)
        sink.write(records)


def _finish(sink: ParquetSink, *, keep_empty: bool = False) -> list[Path]:
    """Close ``sink``; its temp path, or nothing (file deleted) if it got no rows."""
    temp = sink.close()
    if sink.rows or keep_empty:
        return [temp]
    temp.unlink()
    return []
