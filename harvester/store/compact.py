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

Attempt counts survive: a dropped record's attempts move into ``prior_attempts`` of its job's
latest record, so ``sum(attempts + prior_attempts)`` per job is unchanged. Quarantined raw
bodies are always kept; superseded valid ones are dropped with their rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from harvester import __version__
from harvester.store import schema as s
from harvester.store.files import publish, remove, write_parquet
from harvester.store.views import empty_select, new_connection, parquet_source

# Beyond this many files in one partition (or in the ledger) reads slow down noticeably: DuckDB
# opens every file's footer, ~1 ms each, and `status` must stay under 2 s. A 550,000-job backfill
# in 500-job flushes leaves ~1,100 ledger files; a daily sync adds one per month partition a day.
COMPACT_FILES_THRESHOLD = 64

# Rows are grouped by job (phone, window, fetch); no order inside a job is promised. Sorting on
# the item columns as well cost ~70% more per partition for no measurable size gain.
_SORT_DATA = "phone, window_start, fetch_id"
_SORT_RAW = "phone, window_start, fetched_at"


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
    con = new_connection()
    try:
        records_before = _load_kept(con, ledger_files)
        data_todo = _partitions_to_rewrite(con, data_parts, "data")
        raw_todo = _partitions_to_rewrite(con, raw_parts, "raw")
        kept_records = _count(con, "keep")
        idle = not data_todo and not raw_todo and len(ledger_files) <= 1
        if idle and kept_records == records_before:
            return CompactionResult(seconds=time.perf_counter() - started)
        meta = {"harvester.version": __version__, "harvester.batch_id": str(batch)}
        temps: list[Path] = []
        rows_kept = 0
        for month in sorted(data_todo):
            table = _visible_rows(con, data_parts[month], batch, month)
            rows_kept += table.num_rows
            if table.num_rows:
                final = layout.partition(layout.data, month) / s.part_name(batch)
                temps.append(write_parquet(final, table, s.DATA_DICTIONARY, meta))
        for month in sorted(raw_todo):
            table = _kept_bodies(con, raw_parts[month], batch, month)
            if table.num_rows:
                final = layout.partition(layout.raw, month) / s.part_name(batch)
                temps.append(write_parquet(final, table, s.RAW_DICTIONARY, meta))
        rows_before = sum(data_todo.values())
        publish(temps)
        ledger = _kept_ledger(con, batch, set(data_todo))
        publish(
            [write_parquet(layout.ledger / s.part_name(batch), ledger, s.LEDGER_DICTIONARY, meta)]
        )
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
        ledger_records=ledger.num_rows,
        ledger_records_dropped=records_before - ledger.num_rows,
        seconds=time.perf_counter() - started,
    )


def _load_kept(con: duckdb.DuckDBPyConnection, ledger_files: list[Path]) -> int:
    """Create temp table ``keep`` (kept ledger records) and ``cur`` (visible fetches).

    Returns the number of records before compaction.
    """
    if ledger_files:
        source = f"SELECT * FROM {parquet_source(ledger_files, partitioned=False)}"
    else:
        source = empty_select(s.LEDGER_SCHEMA)
    con.execute(f"CREATE TEMP TABLE led AS {source}")
    con.execute(
        """
        CREATE TEMP TABLE keep AS
        WITH ranked AS (
            SELECT *,
                   row_number() OVER (PARTITION BY phone, period ORDER BY seq DESC) AS r_all,
                   row_number() OVER (PARTITION BY phone, period, state = 'done'
                                      ORDER BY seq DESC) AS r_state,
                   CAST(sum(attempts + prior_attempts) OVER (PARTITION BY phone, period)
                        AS BIGINT) AS total
            FROM led
        ), kept AS (
            SELECT * FROM ranked WHERE r_all = 1 OR (state = 'done' AND r_state = 1)
        )
        SELECT * EXCLUDE (r_all, r_state, total) REPLACE (
                   CASE WHEN r_all = 1
                        THEN total - attempts
                             - coalesce(CAST(sum(attempts) FILTER (WHERE r_all <> 1)
                                             OVER (PARTITION BY phone, period) AS BIGINT), 0)
                        ELSE 0 END AS prior_attempts),
               r_all = 1 AS is_latest,
               strftime(window_start, '%Y-%m') AS month
        FROM kept
        """
    )
    con.execute(
        """
        CREATE TEMP TABLE cur AS
        SELECT fetch_id, batch_id, month FROM keep WHERE state = 'done'
        QUALIFY row_number() OVER (PARTITION BY phone, period ORDER BY seq DESC) = 1
        """
    )
    return _count(con, "led")


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


def _visible_rows(
    con: duckdb.DuckDBPyConnection, files: list[Path], batch: int, month: str
) -> pa.Table:
    """A partition's visible rows, sorted; the join sees only that month's current fetches."""
    columns = ", ".join(f"f.{name}" for name in s.DATA_SCHEMA.names if name != "batch_id")
    table = con.sql(
        f"""
        SELECT {columns}, CAST({batch} AS BIGINT) AS batch_id
        FROM {parquet_source(files, partitioned=False)} AS f
        JOIN (SELECT * FROM cur WHERE month = ?) AS c
            ON c.fetch_id = f.fetch_id AND c.batch_id = f.batch_id
        ORDER BY {", ".join(f"f.{c.strip()}" for c in _SORT_DATA.split(","))}
        """,
        params=[month],
    ).to_arrow_table()
    return table.cast(s.DATA_SCHEMA)


def _kept_bodies(
    con: duckdb.DuckDBPyConnection, files: list[Path], batch: int, month: str
) -> pa.Table:
    """A partition's bodies of kept fetches and every quarantined one, once per fetch."""
    columns = ", ".join(name for name in s.RAW_SCHEMA.names if name != "batch_id")
    table = con.sql(
        f"""
        SELECT {columns}, CAST({batch} AS BIGINT) AS batch_id
        FROM {parquet_source(files, partitioned=False)} AS f
        WHERE f.quarantined OR f.fetch_id IN (SELECT fetch_id FROM keep WHERE month = ?)
        QUALIFY row_number() OVER (PARTITION BY fetch_id ORDER BY f.batch_id DESC) = 1
        ORDER BY {_SORT_RAW}
        """,
        params=[month],
    ).to_arrow_table()
    return table.select(s.RAW_SCHEMA.names).cast(s.RAW_SCHEMA)


def _kept_ledger(con: duckdb.DuckDBPyConnection, batch: int, rewritten: set[str]) -> pa.Table:
    """The kept records, renumbered under ``batch``; those of rewritten partitions re-pointed."""
    months = ", ".join(f"'{m}'" for m in sorted(rewritten)) or "NULL"
    base = batch << s.SEQ_BITS
    columns = []
    for name in s.LEDGER_SCHEMA.names:
        if name == "seq":
            columns.append(f"{base} + row_number() OVER (ORDER BY seq) - 1 AS seq")
        elif name == "batch_id":
            columns.append(
                f"CASE WHEN strftime(window_start, '%Y-%m') IN ({months}) "
                f"THEN CAST({batch} AS BIGINT) ELSE batch_id END AS batch_id"
            )
        else:
            columns.append(name)
    table = con.sql(f"SELECT {', '.join(columns)} FROM keep ORDER BY seq").to_arrow_table()
    if table.num_rows >= s.MAX_RECORDS_PER_FILE:
        raise ValueError(f"a compacted ledger cannot hold {table.num_rows} records")
    return table.cast(s.LEDGER_SCHEMA)
