"""The analysis surface, as data: DuckDB connections with every bundled view, queries that
return rows, and DuckDB exports. Rendering the rows (tables, CSV, JSON) is the CLI's job
(:mod:`harvester.cli.render_query`).

The SQL of every view lives in ``queries/*.sql`` (one view per file, a header comment saying
what it answers), written against the base relations of :func:`harvester.store.define_base_views`
plus two that :func:`connect` adds: ``flow_files_unfiltered`` (every data row, whatever the date
range; ``flow_files`` becomes the rows of the range) and ``query_range`` (the range's bounds).
Files are applied in dependency order by retrying: a view whose dependency is not defined yet
fails to bind and is tried again in the next pass, so nobody maintains an order list.

The merged number ``ALL`` and the single numbers are never mixed in one analysis view: ``calls``,
``hotspots``... hold the numbers (sum them freely), ``calls_all``, ``hotspots_all``... hold ALL,
and only the ``*_by_scope`` building blocks hold both, with a ``scope`` column.

A query runs in three steps, so a caller can report between them (the CLI warns about the
windows a date range leaves out before the query runs)::

    sql = prepare_sql(root, "hotspots")              # checked: reads only (unless unsafe)
    with connect(root, date_from=..., date_to=...) as con:
        left_out = partial_windows(con)
        result = run_query(con, root, sql)           # columns, then rows in batches
        for batch in result.batches: ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from harvester.errors import StoreError, UsageError
from harvester.outputs import OutputFile, check_folder, check_output, replacing, write_failed
from harvester.sql_guard import LIBRARY_NAMES, GuardNames, check_reading_sql, lock_down
from harvester.store import Store, define_base_views, retry_read, schema
from harvester.store.location import object_url, redacted_url, url_problem
from harvester.store.tables import Tables
from harvester.store.verify import check_files, reading
from harvester.store.views import dynamic_sql, snapshot, sql_literal

# Installed wheels carry the SQL inside the package; a source checkout has it at the top level.
_PACKAGED_QUERIES = Path(__file__).resolve().parent / "queries"
_REPO_QUERIES = Path(__file__).resolve().parent.parent / "queries"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What a local store folder holds at least one of (a new store holds them all at once).
_STORE_ENTRIES = {schema.STORE_FILE, schema.DATA_DIR, schema.LEDGER_DIR, schema.RAW_DIR}
# Rows fetched per step of a query: a few MB of Python objects at the widest view; streaming
# 2,000,000 rows as CSV then peaks at ~95 MB instead of ~515 MB (docs: issue 12 item 13).
STREAM_ROWS = 10_000

T = TypeVar("T")
Row = tuple[Any, ...]
# A held window (first day, last day) that a date range cuts.
Window = tuple[dt.date, dt.date]

# Every connection's DuckDB settings, unless the caller's config says otherwise (see connect).
_CONNECTION_CONFIG: dict[str, Any] = {"preserve_insertion_order": False}
# Exported files are written in the oldest storage format DuckDB still writes (readable by
# DuckDB 1.0 and later): the DuckDB inside a BI tool's driver often lags the Python package.
_EXPORT_CONFIG: dict[str, Any] = {"storage_compatibility_version": "v1.0.0"}


def queries_dir() -> Path:
    """Where the bundled ``*.sql`` files are."""
    return _PACKAGED_QUERIES if _PACKAGED_QUERIES.is_dir() else _REPO_QUERIES


def bundled_views() -> list[tuple[str, str]]:
    """``(view name, SQL)`` for every bundled file, by file name."""
    return [(p.stem, p.read_text()) for p in sorted(queries_dir().glob("*.sql"))]


def define_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create every bundled view on ``con`` (base relations already defined); returns names."""
    pending = bundled_views()
    defined: list[str] = []
    while pending:
        failed: list[tuple[str, str, duckdb.Error]] = []
        for name, sql in pending:
            try:
                # binding a view opens a Parquet file: it can lose a race with compaction too
                retry_read(partial(con.execute, sql))
                defined.append(name)
            except duckdb.CatalogException as exc:  # a dependency not defined yet
                failed.append((name, sql, exc))
        if len(failed) == len(pending):
            # Report a view that fails for a reason of its own, not one waiting for another.
            waiting = {name for name, _, _ in failed}
            name, _, error = next(
                (f for f in failed if not any(f"name {w} does" in str(f[2]) for w in waiting)),
                failed[0],
            )
            raise RuntimeError(f"queries/{name}.sql does not bind: {error}") from error
        pending = [(name, sql) for name, sql, _ in failed]
    return defined


def connect(
    root: Path,
    *,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    database: str = ":memory:",
    config: dict[str, Any] | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the base relations and every bundled view over ``root``.

    ``date_from``/``date_to`` restrict every view to the windows that lie wholly inside that
    range: the filter is applied to the base rows (``flow_files``), so aggregates and SQL of
    your own see only that range. A week or month window that straddles a bound is left out,
    never counted in part (its counts cannot be split by day) and never counted whole (they
    would include days outside the range); :func:`partial_windows` names them (the query
    and report commands warn about them). ``query_range`` holds the two bounds (NULL when not
    given) for views that need them (``coverage``); ``flow_files_unfiltered`` keeps every row.

    Rows come in the order a query's ``ORDER BY`` gives, and in no promised order without one:
    the connection does not preserve the files' insertion order (``preserve_insertion_order``
    false; a ``config`` of your own can set it back). Keeping that order made DuckDB read the
    table's files with less parallelism: ``SELECT * FROM diagnostic_flow`` of 7.6 M rows took
    1.53x the time the same rows take from native DuckDB tables, against 1.25x without it
    (in-process, interleaved; ``benchmarks/store.py``: 1.11x, see docs/benchmarks.md). Every
    bundled view that has an order says so in its SQL.
    """
    if date_from is not None and date_to is not None and date_from > date_to:
        raise UsageError(f"date_from {date_from} is after date_to {date_to}")
    tables = _tables(root)
    check_files(tables)  # a missing or truncated file: one line naming it, never a wrong answer
    con = duckdb.connect(database, config={**_CONNECTION_CONFIG, **(config or {})})
    try:
        con.execute("SET TimeZone = 'UTC'")
        with reading(tables):
            define_base_views(con, root)
            con.execute(_date_scope_sql(date_from, date_to))
            define_views(con)
    except BaseException:
        con.close()
        raise
    return con


def _tables(root: Path) -> Tables:
    return Tables(schema.Layout(Path(root)))


def reading_store(root: Path) -> contextlib.AbstractContextManager[None]:
    """A read failing on a damaged file of ``root`` raises StoreDamagedError naming the file."""
    return reading(_tables(root))


def _date_scope_sql(date_from: dt.date | None, date_to: dt.date | None) -> str:
    def literal(day: dt.date | None) -> str:
        return "CAST(NULL AS DATE)" if day is None else f"DATE {sql_literal(day.isoformat())}"

    conditions = ["true"]
    if date_from is not None:
        conditions.append(f"window_start >= {literal(date_from)}")
    if date_to is not None:
        conditions.append(f"window_end <= {literal(date_to)}")
    return f"""
ALTER VIEW flow_files RENAME TO flow_files_unfiltered;
CREATE VIEW flow_files AS SELECT * FROM flow_files_unfiltered WHERE {" AND ".join(conditions)};
CREATE VIEW query_range AS SELECT {literal(date_from)} AS date_from, {literal(date_to)} AS date_to;
"""


def partial_windows(con: duckdb.DuckDBPyConnection) -> list[Window]:
    """Held windows that overlap ``query_range`` only in part, so the date filter leaves them out.

    Read from the ledger (one record per job, not the data rows); empty without a range and in
    a daily store.
    """
    rows = retry_read(
        lambda: con.execute(
            """
            SELECT DISTINCT l.window_start, l.window_end
            FROM ledger_current AS l, query_range AS q
            WHERE (q.date_from IS NOT NULL OR q.date_to IS NOT NULL)
              AND l.window_end >= coalesce(q.date_from, l.window_end)
              AND l.window_start <= coalesce(q.date_to, l.window_start)
              AND (l.window_start < coalesce(q.date_from, l.window_start)
                   OR l.window_end > coalesce(q.date_to, l.window_end))
            ORDER BY 1, 2
            """
        ).fetchall()
    )
    return [(start, end) for start, end in rows]


def check_store(root: Path, *, flag: str = "store") -> None:
    """A StoreError unless ``root`` is an existing folder (the read commands' first check);
    the message names ``root`` as ``flag`` (the CLI passes ``--store``)."""
    url = object_url(root)
    if url is not None:
        problem = url_problem(url)
        if problem is not None:
            raise StoreError(f"{flag}: {redacted_url(url)}: {problem}")
        if not Store(root).exists():
            raise StoreError(f"{flag}: {redacted_url(url)} holds no store (nothing harvested yet?)")
        return
    if not root.exists():
        raise StoreError(f"{flag}: {root} does not exist (nothing harvested yet?)")
    if not root.is_dir():
        raise StoreError(f"{flag}: {root} is not a folder")
    entries = {entry.name for entry in root.iterdir()}
    if entries and not entries & _STORE_ENTRIES:  # the wrong folder: not shown as an empty store
        raise StoreError(
            f"{flag}: {root} holds no store (no {schema.STORE_FILE}, {schema.DATA_DIR}/ or "
            f"{schema.LEDGER_DIR}/): is it the right folder?"
        )


def prepare_sql(
    root: Path,
    sql_or_view: str,
    *,
    unsafe: bool = False,
    flag: str = "store",
    names: GuardNames = LIBRARY_NAMES,
) -> str:
    """The SQL to run for ``sql_or_view`` (a bare view name means ``SELECT * FROM`` it), checked
    before any connection is made: the store exists, and the SQL only reads unless ``unsafe``
    (:mod:`harvester.sql_guard`). Problems are UsageErrors (StoreError for the store), naming
    ``root`` as ``flag`` and the guard's ways out as ``names`` (the CLI passes its flags)."""
    check_store(root, flag=flag)
    sql = sql_or_view.strip().rstrip(";")
    if not sql:
        raise UsageError("query: empty SQL")
    if _IDENTIFIER.match(sql):
        sql = f"SELECT * FROM {sql}"
    if not unsafe:
        check_reading_sql(sql, names)
    return sql


@dataclass(frozen=True)
class QueryResult:
    """A running query: its column names, and its rows in batches of up to ``STREAM_ROWS``
    (fetched as they are consumed, so a caller can stream a result of any size)."""

    columns: list[str]
    batches: Iterator[list[Row]]


def run_query(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    sql: str,
    *,
    unsafe: bool = False,
    names: GuardNames = LIBRARY_NAMES,
) -> QueryResult:
    """Run ``sql`` (from :func:`prepare_sql`) on ``con`` (from :func:`connect` over ``root``).

    Unless ``unsafe``, the connection is first locked down to the store's files for good
    (:func:`harvester.sql_guard.lock_down`). SQL errors are UsageErrors. A file that vanished
    under the query (compaction) is retried; a retry after rows were handed out would repeat
    them, so only the start and each batch's fetch are retried, never a batch already given.
    """
    if not unsafe:
        lock_down(con, root)
    batch_rows = STREAM_ROWS

    def start() -> tuple[list[str], list[Row]]:
        relation = con.execute(sql)
        return [d[0] for d in relation.description or []], relation.fetchmany(batch_rows)

    columns, first = _sql_error_as_usage(start, names, root)

    def batches() -> Iterator[list[Row]]:
        batch = first
        while batch:
            yield batch
            batch = _sql_error_as_usage(lambda: con.fetchmany(batch_rows), names, root)

    return QueryResult(columns, batches())


def copy_parquet(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    sql: str,
    out: OutputFile,
    *,
    unsafe: bool = False,
    names: GuardNames = LIBRARY_NAMES,
) -> None:
    """Write the result of ``sql`` to ``out`` as Parquet: DuckDB writes the file itself, through
    the one temp path it is allowed (renamed over ``out`` when done)."""
    with replacing(out) as temp:
        if not unsafe:
            lock_down(con, root, writable=[temp])
        target = sql_literal(str(temp))
        try:
            _sql_error_as_usage(
                lambda: con.execute(f"COPY ({sql}) TO {target} (FORMAT parquet)"), names, root
            )
        except duckdb.IOException as exc:
            raise write_failed(out, _first_line(exc)) from None


def _sql_error_as_usage(run: Callable[[], T], names: GuardNames, root: Path) -> T:
    """``run``'s SQL errors as UsageErrors; an error a damaged store file explains names it."""
    try:
        with reading(_tables(root)):
            return retry_read(run)
    except duckdb.IOException:
        raise
    except duckdb.PermissionException as exc:
        raise UsageError(
            f"query: {_first_line(exc)} (query reads only files under the store; pass "
            f"{names.unsafe} for full file access)"
        ) from None
    except duckdb.Error as exc:
        raise UsageError(f"query: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    # DuckDB's messages run on with context lines; an error here is one line.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def export_duckdb(root: Path, file: Path, *, flag: str = "file", store_flag: str = "store") -> None:
    """Write a DuckDB database file with every bundled view over ``root``'s Parquet files.

    The views read the Parquet files by absolute path and glob when queried, so the file stays
    current as pulls add data and can be opened while a pull runs. It is written next to its
    final name and renamed into place, so a BI tool never sees half a file; ``file`` must be a
    regular file (or a new name) outside the store (:func:`harvester.outputs.check_output`).

    A store with no file of a kind yet is refused: DuckDB cannot define a view over a glob that
    matches nothing, and the stand-in empty relation a live connection uses would be frozen into
    the file, which would then never show the data pulled after it.
    """
    check_store(root, flag=store_flag)
    check_folder(file, flag)
    resolved = root if object_url(root) else root.resolve()
    files = snapshot(resolved)
    kinds = (("data", "data"), ("ledger", "ledger"), ("raw reply", "raw"))
    empty = [name for name, kind in kinds if not files[kind]]
    if empty:
        raise StoreError(
            f"export-duckdb: {resolved} holds no {' or '.join(empty)} files yet, and the exported "
            "views must read the store's files by glob: pull at least one day with calls, "
            "then export (once made, the file shows every later pull by itself)"
        )
    target = check_output(file, flag, store=root, streams_ok=False)
    with replacing(target) as temp:
        try:
            try:
                con = connect(resolved, database=str(temp), config=_EXPORT_CONFIG)
            except duckdb.InvalidInputException:  # a DuckDB too old to know the setting
                temp.unlink(missing_ok=True)
                con = connect(resolved, database=str(temp))
            try:
                # the file reads what the tables hold when it is queried
                con.execute(dynamic_sql(resolved))
                con.execute("CHECKPOINT")
            finally:
                con.close()
        except (duckdb.IOException, duckdb.TransactionException) as exc:  # disk full, I/O
            raise write_failed(target, _first_line(exc)) from None
