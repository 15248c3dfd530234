"""The base relations every bundled view is written against, as DuckDB SQL over the store's tables.

``queries/*.sql`` never names a file: it reads these relations, defined first by
:func:`define_base_views` (or the SQL of :func:`base_views_sql`):

    flow_files      the data table's current version: exactly the visible rows
    raw_files       every archived reply body
    raw_replies     the same, once per fetch (a crashed flush may have archived a body twice); a
                    filter on it is pushed into the file scan, so bodies are read only where wanted
    ledger_files    every ledger record
    ledger_latest   the latest record per job (phone, period): the job's state, + total_attempts
    ledger_current  the latest *done* record per job: the fetch whose rows are visible

Each reads its table's *current version* offline: the explicit list of its active files, from
the Delta log through delta-rs, handed to ``read_parquet([...])`` (DuckDB's delta extension
cannot be downloaded everywhere). Never a glob: a store's path may hold ``[``, ``?`` or ``*``,
which DuckDB would take as a pattern even inside a list, so every path is escaped
(:func:`glob_escape`), and a file that is not part of the table (a copy, a stray Parquet file)
is never read at all.

The three file-reading relations are private views (``_harvester_data``, ...) under the public
names, so a connection can be brought to the table's newest version by redefining those alone
(:func:`refresh`) even after a caller has wrapped ``flow_files`` (harvester.views does). A query
that listed a file a vacuum then removed fails with ``IOException``: :func:`retry_read` refreshes
every live connection of the process and runs the query again.

On an empty table (no file yet) the relation is an empty SELECT of the right types.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import duckdb

from harvester.retrying import retry_sync
from harvester.store import schema as s
from harvester.store.location import CACHE_DIR, object_url

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")

# A vacuum deletes the files an earlier version needed within milliseconds of the commit that
# dropped them, so a read that lost that race succeeds on its next try with the new version's
# files; five tries over ~0.75 s cover a slow disk too.
READ_RETRY_ATTEMPTS = 5
READ_RETRY_DELAY_SECONDS = 0.05

_PRIVATE = {
    s.DATA_DIR: "_harvester_data",
    s.RAW_DIR: "_harvester_raw",
    s.LEDGER_DIR: "_harvester_ledger",
}
_LATEST = s.LATEST_RECORD_SQL
_GLOB_CHARS = {"[": "[[]", "*": "[*]", "?": "[?]"}

# Connections whose base relations read explicit file lists: retry_read refreshes them.
_LIVE: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, Path] = weakref.WeakKeyDictionary()


def sql_literal(text: str) -> str:
    """A SQL string literal (paths may hold quotes)."""
    return "'" + text.replace("'", "''") + "'"


def glob_escape(path: str) -> str:
    """``path`` with DuckDB's glob characters escaped, so it names exactly one file."""
    return "".join(_GLOB_CHARS.get(char, char) for char in path)


def _duckdb_type(kind: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ"
    return {
        pa.string(): "VARCHAR",
        pa.date32(): "DATE",
        pa.int64(): "BIGINT",
        pa.int32(): "INTEGER",
        pa.bool_(): "BOOLEAN",
        pa.binary(): "BLOB",
    }[kind]


def table_columns(kind: str) -> list[str]:
    """The columns the relation of ``kind`` exposes: its schema without the partition key."""
    return [f.name for f in s.SCHEMAS[kind]() if f.name != s.PARTITION_KEY]


def empty_select(kind: str) -> str:
    """A zero-row SELECT with the DuckDB types of table ``kind`` (partition key left out)."""
    columns = [
        f"CAST(NULL AS {_duckdb_type(f.type)}) AS {f.name}"
        for f in s.SCHEMAS[kind]()
        if f.name != s.PARTITION_KEY
    ]
    return f"SELECT {', '.join(columns)} WHERE false"


def parquet_source(files: list[str], *, partitioned: bool = False) -> str:
    """``read_parquet([...])`` over an explicit, escaped file list (never a user's pattern).

    The partition key lives in folder names only; it is not read back (no view needs it, and
    hive parsing would also take any ``key=value`` folder above the store for a column).
    """
    del partitioned  # kept for callers' clarity: partitioned tables are read the same way
    target = "[" + ", ".join(sql_literal(glob_escape(str(p))) for p in files) + "]"
    return f"read_parquet({target}, hive_partitioning = false, union_by_name = false)"


class _HasPath(Protocol):
    @property
    def path(self) -> Path: ...


def _root(root: Path | str | _HasPath) -> Path:
    path = Path(root.path if not isinstance(root, Path | str) else root)
    # an object-storage URL (``s3:/bucket/prefix`` once a Path) stays as it is
    return path if object_url(path) else path.absolute()


def snapshot(root: Path | str | _HasPath) -> dict[str, list[str]]:
    """Each table's current version as its list of files (delta-rs reads the Delta log).

    StoreError (one line) if the folder holds a store of another format."""
    from harvester.store.format import read_store_file
    from harvester.store.tables import Tables

    layout = s.Layout(_root(root))
    read_store_file(layout)
    tables = Tables(layout)
    return {kind: tables.files(kind) for kind in s.KINDS}


def _private_sql(files: dict[str, list[str]]) -> str:
    statements = []
    for kind, name in _PRIVATE.items():
        columns = ", ".join(table_columns(kind))
        source = (
            f"SELECT {columns} FROM {parquet_source(files[kind])}"
            if files[kind]
            else empty_select(kind)
        )
        statements.append(f"CREATE OR REPLACE VIEW {name} AS {source};")
    return "\n".join(statements)


def dynamic_sql(root: Path | str | _HasPath) -> str:
    """The private relations as globs over each table's folder, for a DuckDB file that must show
    later pulls by itself (``export-duckdb``): exact whenever no pull is writing, since every
    run ends by vacuuming the files its commits removed. Only delta-rs's own file names match
    (``part-NNNNN-<uuid>...parquet``), and the store's path is escaped, never a pattern."""
    layout = s.Layout(_root(root))
    # on object storage: the local read cache that every harvester read brings up to date
    base = glob_escape(str(layout.root / CACHE_DIR if layout.url else layout.root))
    statements = []
    for kind, name in _PRIVATE.items():
        folder = f"{base}/{kind}/{s.PARTITION_KEY}=*" if kind in s.PARTITIONED else f"{base}/{kind}"
        pattern = sql_literal(f"{folder}/{_PART_FILE}")
        columns = ", ".join(table_columns(kind))
        statements.append(
            f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} FROM read_parquet({pattern}, "
            "hive_partitioning = false);"
        )
    return "\n".join(statements)


# delta-rs's part file names, exactly (``part-00000-<uuid>-c000.zstd.parquet``): a copy a sync
# client or a restore leaves (``... (copy).parquet``, ``...parquet~``) never matches.
_HEX = "[0-9a-f]"
_PART_FILE = (
    "part-"
    + "[0-9]" * 5
    + "-"
    + "-".join(_HEX * n for n in (8, 4, 4, 4, 12))
    + "-c[0-9][0-9][0-9].zstd"
    + s.PARQUET_SUFFIX
)


def base_views_sql(root: Path | str | _HasPath) -> str:
    """SQL that (re)defines the base relations over the store's current version; run it per
    connection (:func:`define_base_views` also keeps the connection current on a retry).

    ``root`` may also be a :class:`~harvester.store.Store` (anything with a ``path``).
    """
    return f"""
{_private_sql(snapshot(root))}
CREATE OR REPLACE VIEW flow_files AS SELECT * FROM {_PRIVATE[s.DATA_DIR]};
CREATE OR REPLACE VIEW raw_files AS SELECT * FROM {_PRIVATE[s.RAW_DIR]};
CREATE OR REPLACE VIEW raw_replies AS
    SELECT * FROM raw_files
    WHERE (fetch_id, batch_id) IN
          (SELECT (fetch_id, max(batch_id)) FROM raw_files GROUP BY fetch_id);
CREATE OR REPLACE VIEW ledger_files AS SELECT * FROM {_PRIVATE[s.LEDGER_DIR]};
CREATE OR REPLACE VIEW ledger_latest AS
    SELECT *, CAST(sum(attempts + prior_attempts) OVER (PARTITION BY phone, period) AS BIGINT)
        AS total_attempts
    FROM ledger_files
    {_LATEST};
CREATE OR REPLACE VIEW ledger_current AS
    SELECT * FROM ledger_files WHERE state = 'done'
    {_LATEST};
"""


def define_base_views(con: duckdb.DuckDBPyConnection, root: Path | str | _HasPath) -> None:
    """Define the base relations on ``con`` and keep it current: :func:`retry_read` refreshes it
    after a vacuum removed a file it listed."""
    path = _root(root)
    retry_read(lambda: con.execute(base_views_sql(path)))
    _LIVE[con] = path


def refresh(con: duckdb.DuckDBPyConnection, root: Path | str | _HasPath) -> None:
    """Point ``con``'s base relations at the tables' newest versions."""
    con.execute(_private_sql(snapshot(root)))


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
    define_base_views(con, root)
    return con


def _refresh_live() -> None:
    from harvester.store.opening import drop_cached_reads

    drop_cached_reads()  # the version a read-only command cached lost a file: read the newest
    for con, root in list(_LIVE.items()):
        try:
            refresh(con, root)
        except duckdb.ConnectionException:  # closed since
            _LIVE.pop(con, None)
        except duckdb.Error:  # lost the race again: the next attempt refreshes again
            continue


def retry_read(query: Callable[[], T], attempts: int = READ_RETRY_ATTEMPTS) -> T:
    """Run ``query`` (a DuckDB read), again if a file vanished under it (a vacuum's delete),
    after bringing every live connection to the tables' newest versions.

    Example: ``rows = retry_read(lambda: con.execute(sql).fetchall())``. Other errors, and the
    last ``IOException``, propagate unchanged.
    """
    return retry_sync(
        query,
        attempts=attempts,
        wait_for=_vanished_file_wait,
        on_retry=lambda _exc, _wait: _refresh_live(),
    )


def _vanished_file_wait(exc: Exception, attempt: int) -> float | None:
    """A file a vacuum removed under a read (DuckDB's IOException), or a log entry a checkpoint's
    clean-up removed while delta-rs listed the table (its DeltaError "File not found"), is worth
    a fresh file list after a short pause; anything else is not retried."""
    vanished = isinstance(exc, duckdb.IOException | FileNotFoundError) or (
        type(exc).__name__ == "DeltaError" and "not found" in str(exc).lower()
    )
    return READ_RETRY_DELAY_SECONDS * attempt if vanished else None
