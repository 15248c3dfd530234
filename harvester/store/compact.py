"""Compaction: many small files into one per partition, the ledger into one file, safely.

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

Memory stays bounded whatever the store's size (a nightly sync on a small VM compacts a store
of ten million rows): the ledger is decided on a narrow copy of its key columns; partitions are
rewritten a group at a time (small ones share one query, a large one has its own), streamed from
DuckDB into the new files a row group at a time; and DuckDB's own memory is capped, spilling to a
folder inside the store beyond it.

Attempt counts survive: a dropped record's attempts move into ``prior_attempts`` of its job's
latest record, so ``sum(attempts + prior_attempts)`` per job is unchanged. Quarantined raw
bodies are always kept; superseded valid ones are dropped with their rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from harvester import __version__
from harvester.store import schema as s
from harvester.store.files import ParquetSink, publish, remove
from harvester.store.views import empty_select, new_connection, parquet_source, sql_literal

# Beyond this many files in one partition (or in the ledger) reads slow down noticeably: DuckDB
# opens every file's footer, ~1 ms each, and `status` must stay under 2 s. A 550,000-job backfill
# in 500-job flushes leaves ~1,100 ledger files; a daily sync adds one per month partition a day.
COMPACT_FILES_THRESHOLD = 64

# Rows are grouped by job (phone, window, fetch); no order inside a job is promised. Sorting on
# the item columns as well cost ~70% more per partition for no measurable size gain.
_SORT_DATA = "phone, window_start, fetch_id"
_SORT_RAW = "phone, window_start, fetched_at"

# DuckDB's memory for a compaction (its sorts and hash tables); beyond it DuckDB spills to
# SPILL_DIR inside the store (the store's own disk: /tmp may be RAM). 128 MB holds the sort of a
# group of GROUP_ROWS rows and the narrow ledger of ~1.5 M jobs without spilling.
MEMORY_LIMIT = "128MB"
SPILL_DIR = ".compact.tmp"
# Rows (data) or bodies (raw) rewritten by one query: many small partitions share a query (one
# query per partition cost ~20 ms each, most of a compaction of a long, thin store), a larger
# partition has its own. Bounds the sort DuckDB holds: ~50 MB of data rows, ~60 MB of bodies.
GROUP_ROWS = 500_000
GROUP_BODIES = 30_000
# Rows per Parquet row group of a compacted file: DuckDB's own row group size, so a query's
# threads each take a row group and min/max statistics stay selective (per phone after the sort).
ROW_GROUP_ROWS = 122_880


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


def needs_compaction(layout: s.Layout) -> bool:
    """More than COMPACT_FILES_THRESHOLD files in the ledger or in any partition."""
    if len(layout.part_files(layout.ledger)) > COMPACT_FILES_THRESHOLD:
        return True
    for base in (layout.data, layout.raw):
        for files in layout.partitions(base).values():
            if len(files) > COMPACT_FILES_THRESHOLD:
                return True
    return False


def compact_store(layout: s.Layout, batch: int) -> CompactionResult:
    """Compact the store at ``layout`` under the new batch id ``batch``; hold the lock."""
    started = time.perf_counter()
    ledger_files = layout.part_files(layout.ledger)
    data_parts = layout.partitions(layout.data)
    raw_parts = layout.partitions(layout.raw)
    con = new_connection(ordered=False)
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = {sql_literal(str(layout.root / SPILL_DIR))}")
    try:
        records_before = _load_kept(con, ledger_files)
        data_todo = _partitions_to_rewrite(con, data_parts, "data")
        raw_todo = _partitions_to_rewrite(con, raw_parts, "raw")
        kept_records = _count(con, "keep")
        idle = not data_todo and not raw_todo and len(ledger_files) <= 1
        if idle and kept_records == records_before:
            return CompactionResult(seconds=time.perf_counter() - started)
        if kept_records >= s.MAX_RECORDS_PER_FILE:
            raise ValueError(f"a compacted ledger cannot hold {kept_records} records")
        meta = {"harvester.version": __version__, "harvester.batch_id": str(batch)}
        temps: list[Path] = []
        rows_kept = 0
        for months in _groups(data_todo, GROUP_ROWS):
            written, rows = _write_visible_rows(con, layout, data_parts, months, batch, meta)
            temps += written
            rows_kept += rows
        for months in _groups(raw_todo, GROUP_BODIES):
            temps += _write_kept_bodies(con, layout, raw_parts, months, batch, meta)[0]
        rows_before = sum(data_todo.values())
        publish(temps)
        ledger = _write_kept_ledger(con, layout, ledger_files, batch, set(data_todo), meta)
        publish([ledger.temp])
    finally:
        con.close()
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
    """Create temp tables ``keep`` (the kept records) and ``cur`` (visible fetches).

    ``keep`` holds only what the decisions need, per kept record: ``seq``, its new
    ``prior_attempts``, whether it is its job's visible fetch, ``fetch_id``/``batch_id``, its
    ``month`` and its ``position`` in seq order (its new seq); the records themselves are read
    again when the new ledger is written. Per job, aggregates (no window, no sort) find the latest
    record and the latest done one. Returns the number of records before compaction.
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
               l.fetch_id, l.batch_id, strftime(l.window_start, '%Y-%m') AS month,
               row_number() OVER (ORDER BY k.seq) - 1 AS position
        FROM kept AS k JOIN led AS l ON l.seq = k.seq
        """
    )
    con.execute("DROP TABLE led")
    con.execute(
        "CREATE TEMP TABLE cur AS SELECT fetch_id, batch_id, month FROM keep WHERE is_current"
    )
    return records


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    # fetchall, not fetchone: DuckDB 2 refuses new work while a result is only partly fetched.
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _partitions_to_rewrite(
    con: duckdb.DuckDBPyConnection, parts: dict[str, list[Path]], kind: str
) -> dict[str, int]:
    """Partition -> its row count, for partitions with several files or rows to drop."""
    if not parts:
        return {}
    files = [f for group in parts.values() for f in group]
    source = parquet_source(files, partitioned=True)
    if kind == "data":
        query = f"""
            SELECT f.month, count(*), count(c.fetch_id)
            FROM (SELECT month, fetch_id, batch_id FROM {source}) AS f
            LEFT JOIN cur AS c ON c.fetch_id = f.fetch_id AND c.batch_id = f.batch_id
            GROUP BY f.month
        """
    else:
        query = f"""
            SELECT f.month, count(*), count(*) FILTER (WHERE f.quarantined OR k.fetch_id NOT NULL)
            FROM (SELECT month, fetch_id, quarantined FROM {source}) AS f
            LEFT JOIN (SELECT DISTINCT fetch_id FROM keep) AS k ON k.fetch_id = f.fetch_id
            GROUP BY f.month
        """
    return {
        month: int(total)
        for month, total, kept in con.execute(query).fetchall()
        if len(parts[month]) > 1 or kept != total
    }


def _groups(rows_by_month: dict[str, int], limit: int) -> Iterator[list[str]]:
    """Consecutive months whose rows add up to at most ``limit`` (a larger month alone)."""
    group: list[str] = []
    rows = 0
    for month in sorted(rows_by_month):
        if group and rows + rows_by_month[month] > limit:
            yield group
            group, rows = [], 0
        group.append(month)
        rows += rows_by_month[month]
    if group:
        yield group


def _write_visible_rows(
    con: duckdb.DuckDBPyConnection,
    layout: s.Layout,
    parts: dict[str, list[Path]],
    months: list[str],
    batch: int,
    meta: dict[str, str],
) -> tuple[list[Path], int]:
    """The visible rows of ``months``, sorted, one new file per month; (temps, rows)."""
    files = [f for month in months for f in parts[month]]
    columns = ", ".join(f"f.{name}" for name in s.DATA_SCHEMA.names if name != "batch_id")
    relation = con.sql(
        f"""
        SELECT {columns}, CAST({batch} AS BIGINT) AS batch_id, f.month
        FROM {parquet_source(files, partitioned=True)} AS f
        JOIN (SELECT fetch_id, batch_id FROM cur WHERE month IN ({_in_list(months)})) AS c
            ON c.fetch_id = f.fetch_id AND c.batch_id = f.batch_id
        ORDER BY f.month, {", ".join(f"f.{c.strip()}" for c in _SORT_DATA.split(","))}
        """
    )
    return _write_by_month(
        relation, layout, layout.data, s.DATA_SCHEMA, s.DATA_DICTIONARY, batch, meta
    )


def _write_kept_bodies(
    con: duckdb.DuckDBPyConnection,
    layout: s.Layout,
    parts: dict[str, list[Path]],
    months: list[str],
    batch: int,
    meta: dict[str, str],
) -> tuple[list[Path], int]:
    """The bodies of kept fetches and every quarantined one, once per fetch, per month."""
    files = [f for month in months for f in parts[month]]
    columns = ", ".join(f"f.{name}" for name in s.RAW_SCHEMA.names if name != "batch_id")
    relation = con.sql(
        f"""
        SELECT {columns}, CAST({batch} AS BIGINT) AS batch_id, f.month
        FROM {parquet_source(files, partitioned=True)} AS f
        WHERE f.quarantined
           OR f.fetch_id IN (SELECT fetch_id FROM keep WHERE month IN ({_in_list(months)}))
        QUALIFY row_number() OVER (PARTITION BY f.fetch_id ORDER BY f.batch_id DESC) = 1
        ORDER BY f.month, {", ".join(f"f.{c.strip()}" for c in _SORT_RAW.split(","))}
        """
    )
    return _write_by_month(
        relation, layout, layout.raw, s.RAW_SCHEMA, s.RAW_DICTIONARY, batch, meta
    )


def _write_by_month(
    relation: Any,
    layout: s.Layout,
    base: Path,
    schema: pa.Schema,
    dictionary: list[str],
    batch: int,
    meta: dict[str, str],
) -> tuple[list[Path], int]:
    """Stream ``relation`` (sorted by its ``month`` column) into one new file per month."""
    temps: list[Path] = []
    rows = 0
    sink: ParquetSink | None = None
    month_of_sink = None
    try:
        for record_batch in _arrow_batches(relation):
            table = pa.Table.from_batches([record_batch])
            runs = pc.run_end_encode(record_batch.column("month"))
            start = 0
            for month, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
                if month != month_of_sink:
                    if sink is not None:
                        temps.append(sink.close())
                        rows += sink.rows
                    final = layout.partition(base, month) / s.part_name(batch)
                    sink = ParquetSink(final, schema, dictionary, meta, ROW_GROUP_ROWS)
                    month_of_sink = month
                assert sink is not None
                sink.write(table.slice(start, end - start).select(schema.names))
                start = end
        if sink is not None:
            temps.append(sink.close())
            rows += sink.rows
            sink = None
    finally:
        if sink is not None:
            sink.abandon()
    return temps, rows


def _write_kept_ledger(
    con: duckdb.DuckDBPyConnection,
    layout: s.Layout,
    ledger_files: list[Path],
    batch: int,
    rewritten: set[str],
    meta: dict[str, str],
) -> ParquetSink:
    """The kept records, renumbered under ``batch`` in seq order, those of rewritten partitions
    re-pointed to it, streamed into one ledger file; the closed sink (``temp``, ``rows``)."""
    sink = ParquetSink(
        layout.ledger / s.part_name(batch),
        s.LEDGER_SCHEMA,
        s.LEDGER_DICTIONARY,
        meta,
        ROW_GROUP_ROWS,
    )
    try:
        if ledger_files:
            months = _in_list(sorted(rewritten)) if rewritten else "NULL"
            columns = []
            for name in s.LEDGER_SCHEMA.names:
                if name == "seq":
                    columns.append(f"{batch << s.SEQ_BITS} + k.position AS seq")
                elif name == "batch_id":
                    columns.append(
                        f"CASE WHEN k.month IN ({months}) THEN CAST({batch} AS BIGINT) "
                        "ELSE l.batch_id END AS batch_id"
                    )
                elif name == "prior_attempts":
                    columns.append("k.prior_attempts")
                else:
                    columns.append(f"l.{name}")
            relation = con.sql(
                f"""
                SELECT {", ".join(columns)}
                FROM {parquet_source(ledger_files, partitioned=False)} AS l
                JOIN keep AS k ON k.seq = l.seq
                ORDER BY k.position
                """
            )
            for record_batch in _arrow_batches(relation):
                sink.write(pa.Table.from_batches([record_batch]))
        sink.close()
    except BaseException:
        sink.abandon()
        raise
    return sink


def _arrow_batches(relation: Any) -> Any:
    """The relation's rows as Arrow record batches of ROW_GROUP_ROWS, streamed."""
    reader = getattr(relation, "to_arrow_reader", None)  # DuckDB >= 1.4
    if reader is None:
        return relation.fetch_record_batch(ROW_GROUP_ROWS)
    return reader(ROW_GROUP_ROWS)


def _in_list(months: list[str]) -> str:
    return ", ".join(sql_literal(month) for month in months)
