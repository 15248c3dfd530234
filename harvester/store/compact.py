"""Compaction: Delta's optimize on the data table, a rewrite of the ledger and raw archive that
drops what no longer counts, then vacuum; readers keep reading throughout.

When it is due: :func:`needs_compaction` (more than COMPACT_FILES_THRESHOLD files in a partition
or in the ledger).

What it does, each step one Delta commit (or one per raw partition), so a reader sees the
version before or the version after, and a crash anywhere leaves a consistent store:

1. data: every partition with several files is rewritten as one, sorted by phone and day (a
   replaceWhere on ``month``: the bin-packing of Delta's optimize plus an order). The table
   holds only visible rows, so nothing is dropped; the order keeps one phone's rows (ALL above
   all) in few row groups, so per-number queries skip the rest by statistics.
2. raw: every partition with several files or bodies no kept ledger record names (superseded
   valid bodies) is rewritten to the bodies kept, once per fetch; quarantined bodies are kept.
3. ledger: rewritten to the records that still count, the latest per job and its latest done
   one if older. Attempt counts survive: a dropped record's attempts move into
   ``prior_attempts`` of its job's latest record, so ``sum(attempts + prior_attempts)`` per job
   is unchanged.
4. vacuum: the files those commits removed are deleted. A query that listed one just before
   fails with IOException and is retried on the new version (``retry_read``). Then a checkpoint
   of each table, and the log entries before it are deleted.

Memory stays bounded by one raw partition: DuckDB streams each rewrite into delta-rs as Arrow
record batches.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

import duckdb

from harvester.store import schema as s
from harvester.store.schema import COMPACT_FILES_THRESHOLD
from harvester.store.tables import FileInfo, Tables, sql_string
from harvester.store.views import glob_escape, new_connection, parquet_source, sql_literal

# Arrow record batches streamed from DuckDB into a Delta write: large enough for full Parquet
# row groups, small enough that a rewrite holds a few MB at a time.
STREAM_BATCH_ROWS = 122_880
# DuckDB's memory during a compaction: a raw month's bodies (~40 MB) and a data month's rows
# (~210,000) sort well inside it; more spills to the temp folder.
MEMORY_LIMIT = "256MB"

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


def needs_compaction(infos: dict[str, list[FileInfo]]) -> bool:
    """More than COMPACT_FILES_THRESHOLD files in the ledger or in any partition."""
    if len(infos[s.LEDGER_DIR]) > COMPACT_FILES_THRESHOLD:
        return True
    for kind in s.PARTITIONED:
        if any(n > COMPACT_FILES_THRESHOLD for n in _per_month(infos[kind]).values()):
            return True
    return False


def _per_month(infos: list[FileInfo]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for info in infos:
        counts[info.month or ""] = counts.get(info.month or "", 0) + 1
    return counts


# Per job: its latest record and its latest done one; the records compaction keeps.
_KEPT_SQL = """
CREATE OR REPLACE TEMP TABLE jobs AS
SELECT phone, period, max(seq) AS latest,
       max(seq) FILTER (WHERE state = 'done') AS current,
       CAST(sum(attempts + prior_attempts) AS BIGINT) AS total,
       arg_max(attempts, seq) AS latest_attempts,
       arg_max(attempts, seq) FILTER (WHERE state = 'done') AS current_attempts
FROM {ledger}
GROUP BY phone, period
"""

_LEDGER_SQL = """
SELECT l.* REPLACE (
    CAST(CASE WHEN l.seq = j.latest
              THEN j.total - j.latest_attempts
                   - CASE WHEN j.current <> j.latest THEN j.current_attempts ELSE 0 END
              ELSE 0 END AS BIGINT) AS prior_attempts)
FROM {ledger} AS l
JOIN jobs AS j
    ON l.phone = j.phone AND l.period = j.period AND (l.seq = j.latest OR l.seq = j.current)
ORDER BY l.seq
"""

_KEPT_FETCHES_SQL = """
CREATE OR REPLACE TEMP TABLE kept_fetches AS
SELECT DISTINCT l.fetch_id
FROM {ledger} AS l
JOIN jobs AS j
    ON l.phone = j.phone AND l.period = j.period AND (l.seq = j.latest OR l.seq = j.current);
-- the fetches a later record of their job replaced: only their bodies are superseded. A body no
-- ledger record names is kept: request economy's range replies, the proofs of empty and derived
-- days (their ledger records name the ranges, not a fetch)
CREATE OR REPLACE TEMP TABLE superseded_fetches AS
SELECT DISTINCT fetch_id FROM {ledger}
WHERE fetch_id IS NOT NULL
  AND fetch_id NOT IN (SELECT fetch_id FROM kept_fetches WHERE fetch_id IS NOT NULL);
"""

# Raw files holding a body to drop: superseded (valid, its job's record replaced) or a second copy.
_RAW_TO_DROP_SQL = """
SELECT DISTINCT filename FROM (
    SELECT filename, fetch_id, quarantined,
           count(*) OVER (PARTITION BY fetch_id) AS copies
    FROM read_parquet({files}, filename = true, hive_partitioning = false)
)
WHERE copies > 1 OR (NOT quarantined AND fetch_id IN (SELECT fetch_id FROM superseded_fetches))
"""

# A data partition rewritten in the views' order: by phone, then day (their filters and joins),
# then item, so consecutive jobs list their items alike. A sort, not Delta's z-order: measured on
# 7.6 M rows, z-ordering took 3.3 GB of memory (all partitions at once) and left the data at
# 56.8 MB; sorted by phone and day 53.0 MB, and with the items in order 42.4 MB (a month: 1.54 ->
# 1.18 MB): the text columns' dictionary indices repeat job after job.
_DATA_SORTED_SQL = """
SELECT {columns}, {month} AS month FROM {source}
ORDER BY phone, window_start, application, page, form, item
"""

_RAW_KEPT_SQL = """
SELECT * FROM (
    SELECT {columns}, {month} AS month FROM {source}
    WHERE quarantined OR fetch_id NOT IN (SELECT fetch_id FROM superseded_fetches)
    QUALIFY row_number() OVER (PARTITION BY fetch_id ORDER BY batch_id DESC) = 1
)
ORDER BY phone, window_start, fetched_at
"""


def compact_store(tables: Tables, batch: int) -> CompactionResult:
    """Compact the store's tables; hold the lock (and the write mutex)."""
    from harvester.store.views import table_columns

    started = time.perf_counter()
    before = {kind: tables.file_infos(kind) for kind in s.KINDS}
    data_months = _crowded(before[s.DATA_DIR])
    ledger_files = [i.uri for i in before[s.LEDGER_DIR]]
    con = new_connection(ordered=False)
    # DuckDB spills its sorts to disk past this instead of growing (a nightly sync on a small VM
    # may compact a store of ten million rows)
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = {sql_string(tempfile.gettempdir())}")
    try:
        ledger = f"(SELECT * FROM {parquet_source(ledger_files)})" if ledger_files else None
        records = kept = 0
        if ledger is not None:
            con.execute(_KEPT_SQL.format(ledger=ledger))
            con.execute(_KEPT_FETCHES_SQL.format(ledger=ledger))
            records = _count(con, ledger)
            kept = _count(con, "jobs") + _count(
                con, "(SELECT 1 FROM jobs WHERE current IS NOT NULL AND current <> latest)"
            )
        raw_months = _raw_months(con, tables, before[s.RAW_DIR], ledger is not None)
        ledger_due = ledger is not None and (len(ledger_files) > 1 or kept < records)
        if not data_months and not raw_months and not ledger_due:
            return CompactionResult(ledger_records=kept, seconds=time.perf_counter() - started)
        data_columns = ", ".join(table_columns(s.DATA_DIR))
        for month in sorted(data_months):
            files = [i.uri for i in before[s.DATA_DIR] if i.month == month]
            query = _DATA_SORTED_SQL.format(
                columns=data_columns, month=sql_string(month), source=parquet_source(files)
            )
            predicate = f"{s.PARTITION_KEY} = {sql_string(month)}"
            tables.replace(
                s.DATA_DIR, _cast(_stream(con, query), s.data_schema()), predicate, batch, "compact"
            )
        raw_columns = ", ".join(table_columns(s.RAW_DIR))
        for month in sorted(raw_months):
            files = [i.uri for i in before[s.RAW_DIR] if i.month == month]
            query = _RAW_KEPT_SQL.format(
                columns=raw_columns, month=sql_string(month), source=parquet_source(files)
            )
            reader = _stream(con, query)
            predicate = f"{s.PARTITION_KEY} = {sql_string(month)}"
            tables.replace(s.RAW_DIR, _cast(reader, s.raw_schema()), predicate, batch, "compact")
        if ledger_due:
            assert ledger is not None
            reader = _stream(con, _LEDGER_SQL.format(ledger=ledger))
            tables.overwrite(s.LEDGER_DIR, _cast(reader, s.ledger_schema()), batch, "compact")
    finally:
        con.close()
    for kind in s.KINDS:
        tables.vacuum(kind)
        tables.tidy_log(kind)
    after = {kind: tables.file_infos(kind) for kind in s.KINDS}
    return CompactionResult(
        batch_id=batch,
        partitions=len(data_months | raw_months),
        files_before=sum(len(v) for v in before.values()),
        files_after=sum(len(v) for v in after.values()),
        rows_kept=sum(i.rows for i in after[s.DATA_DIR]),
        rows_dropped=0,  # the data table holds only visible rows: nothing superseded to drop
        ledger_records=kept,
        ledger_records_dropped=records - kept,
        seconds=time.perf_counter() - started,
    )


def _crowded(infos: list[FileInfo]) -> set[str]:
    return {month for month, n in _per_month(infos).items() if n > 1}


def _raw_months(
    con: duckdb.DuckDBPyConnection, tables: Tables, infos: list[FileInfo], have_ledger: bool
) -> set[str]:
    """Raw partitions worth rewriting: several files, or a body to drop."""
    todo = _crowded(infos)
    single = [i for i in infos if i.month not in todo]
    if not single or not have_ledger:
        return todo
    month_of = {i.uri: i.month or "" for i in single}
    files = "[" + ", ".join(sql_literal(glob_escape(p)) for p in month_of) + "]"
    rows = con.execute(_RAW_TO_DROP_SQL.format(files=files)).fetchall()
    found = {str(name) for (name,) in rows}
    return todo | {month for path, month in month_of.items() if path in found}


def _count(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    # fetchall, not fetchone: DuckDB 2 refuses new work while a result is only partly fetched.
    return int(con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0])


def _stream(con: duckdb.DuckDBPyConnection, query: str) -> Any:
    """The query's result as an Arrow record batch reader (DuckDB 2 renamed the method)."""
    relation = con.sql(query)
    to_reader = getattr(relation, "to_arrow_reader", None)
    if to_reader is not None:
        return to_reader(STREAM_BATCH_ROWS)
    return relation.fetch_record_batch(STREAM_BATCH_ROWS)


def _cast(reader: Any, schema: Any) -> Any:
    """The stream with the table's exact schema (DuckDB names types its own way), columns taken
    by name; a column the source lacks (a ledger written before the provenance columns, a store
    of the older layout) is all nulls."""
    import pyarrow as pa

    def batches() -> Any:
        for batch in reader:
            names = set(batch.schema.names)
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column(f.name).cast(f.type)
                    if f.name in names
                    else pa.nulls(batch.num_rows, f.type)
                    for f in schema
                ],
                schema=schema,
            )

    return pa.RecordBatchReader.from_batches(schema, batches())
