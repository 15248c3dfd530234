"""The base relations every bundled view is written against, as DuckDB SQL over the store's files.

``queries/*.sql`` never names a file: it reads these relations, defined first by
:func:`base_views_sql` with absolute paths (so a view also works in an exported DuckDB file).

    flow_files      every data row in every data file, visible or not, plus ``month``
    raw_files       every archived reply body in every raw file, plus ``month``
    raw_replies     the same, once per fetch (a compaction briefly holds two copies); a filter
                    on it is pushed into the file scan, so bodies are read only where wanted
    ledger_files    every ledger record
    ledger_latest   the latest record per job (phone, period): the job's state, + total_attempts
    ledger_current  the latest *done* record per job: the fetch whose rows are visible

Visibility: a data row is visible iff its ``(fetch_id, batch_id)`` is that of its job's
``ledger_current`` record. ``ledger_current`` skips failed records on purpose: a re-fetch that
fails (a 500 storm during a lookback) marks the job failed for the scheduler but must not hide
the rows an earlier fetch stored.

On an empty store (no file of a kind yet) the relation is defined as an empty SELECT of the
right types, since ``read_parquet`` refuses a glob that matches nothing. Such a definition does
not notice files that appear later: connections are cheap, define the views per connection.

Concurrent compaction deletes files, and a query whose glob listed a file just before it went
away fails with ``IOException``; :func:`retry_read` re-runs such a query.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import duckdb
import pyarrow as pa

from harvester.store import schema as s

T = TypeVar("T")

# A compaction deletes its old files within milliseconds of publishing the new ones, so a read
# that lost that race succeeds on its next try; five tries over ~0.75 s cover a slow disk too.
READ_RETRY_ATTEMPTS = 5
READ_RETRY_DELAY_SECONDS = 0.05

_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.date32(): "DATE",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.bool_(): "BOOLEAN",
    pa.binary(): "BLOB",
    s.UTC_MICROS: "TIMESTAMPTZ",
}

_LATEST = "QUALIFY row_number() OVER (PARTITION BY phone, period ORDER BY seq DESC) = 1"


def sql_literal(text: str) -> str:
    """A SQL string literal (paths may hold quotes)."""
    return "'" + text.replace("'", "''") + "'"


def empty_select(schema: pa.Schema, extra: dict[str, str] | None = None) -> str:
    """A zero-row SELECT with the DuckDB types of ``schema`` (plus ``extra`` name -> type)."""
    columns = [f"CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS {f.name}" for f in schema]
    columns += [f"CAST(NULL AS {kind}) AS {name}" for name, kind in (extra or {}).items()]
    return f"SELECT {', '.join(columns)} WHERE false"


def parquet_source(files: list[Path] | str, *, partitioned: bool) -> str:
    """``read_parquet(...)`` over a glob or an explicit file list."""
    if isinstance(files, str):
        target = sql_literal(files)
    else:
        target = "[" + ", ".join(sql_literal(str(p)) for p in files) + "]"
    if partitioned:
        hive = f"hive_partitioning = true, hive_types = {{'{s.PARTITION_KEY}': VARCHAR}}"
        return f"read_parquet({target}, {hive})"
    return f"read_parquet({target}, hive_partitioning = false)"


class _HasPath(Protocol):
    @property
    def path(self) -> Path: ...


def base_views_sql(root: Path | str | _HasPath) -> str:
    """SQL that (re)defines the base relations over the store at ``root``; run it per connection.

    ``root`` may also be a :class:`~harvester.store.Store` (anything with a ``path``).
    """
    layout = s.Layout(root.path if not isinstance(root, Path | str) else Path(root))
    month = {s.PARTITION_KEY: "VARCHAR"}

    def source(base: Path, schema: pa.Schema, partitioned: bool) -> str:
        if not layout.part_files(base):
            return empty_select(schema, month if partitioned else None)
        pattern = (
            f"{base}/{s.PARTITION_KEY}=*/*{s.PARQUET_SUFFIX}"
            if partitioned
            else f"{base}/*{s.PARQUET_SUFFIX}"
        )
        return f"SELECT * FROM {parquet_source(pattern, partitioned=partitioned)}"

    return f"""
CREATE OR REPLACE VIEW flow_files AS {source(layout.data, s.DATA_SCHEMA, True)};
CREATE OR REPLACE VIEW raw_files AS {source(layout.raw, s.RAW_SCHEMA, True)};
CREATE OR REPLACE VIEW raw_replies AS
    SELECT * FROM raw_files
    WHERE (fetch_id, batch_id) IN
          (SELECT (fetch_id, max(batch_id)) FROM raw_files GROUP BY fetch_id);
CREATE OR REPLACE VIEW ledger_files AS {source(layout.ledger, s.LEDGER_SCHEMA, False)};
CREATE OR REPLACE VIEW ledger_latest AS
    SELECT *, CAST(sum(attempts + prior_attempts) OVER (PARTITION BY phone, period) AS BIGINT)
        AS total_attempts
    FROM ledger_files
    {_LATEST};
CREATE OR REPLACE VIEW ledger_current AS
    SELECT * FROM ledger_files WHERE state = 'done'
    {_LATEST};
"""


def new_connection(*, ordered: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection in UTC, without the terminal progress bar.

    ``ordered=False`` lets DuckDB drop insertion order, which halves loading the ledger's
    many small files when only aggregates are wanted.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'; SET enable_progress_bar = false")
    if not ordered:
        con.execute("SET preserve_insertion_order = false")
    return con


def connect_base(root: Path | str | _HasPath) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection (UTC session) with the base relations defined."""
    con = new_connection()
    sql = base_views_sql(root)
    # CREATE VIEW binds read_parquet, which opens a file for its schema: it can lose the race too.
    retry_read(lambda: con.execute(sql))
    return con


def retry_read(query: Callable[[], T], attempts: int = READ_RETRY_ATTEMPTS) -> T:
    """Run ``query`` (a DuckDB read), again if a file vanished under it (a compaction's delete).

    Example: ``rows = retry_read(lambda: con.execute(sql).fetchall())``. Other errors, and the
    last ``IOException``, propagate unchanged.
    """
    for attempt in range(1, attempts + 1):
        try:
            return query()
        except duckdb.IOException:
            if attempt == attempts:
                raise
            time.sleep(READ_RETRY_DELAY_SECONDS * attempt)
    raise AssertionError("unreachable")
