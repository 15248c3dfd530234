"""The analysis surface: DuckDB connections with every bundled view, queries, and DuckDB exports.

The SQL of every view lives in ``queries/*.sql`` (one view per file, a header comment saying
what it answers), written against the base relations of :func:`harvester.store.base_views_sql`
plus two that :func:`connect` adds: ``flow_files_unfiltered`` (every data row, whatever the date
range; ``flow_files`` becomes the rows of the range) and ``query_range`` (the range's bounds).
Files are applied in dependency order by retrying: a view whose dependency is not defined yet
fails to bind and is tried again in the next pass, so nobody maintains an order list.

The merged number ``ALL`` and the single numbers are never mixed in one analysis view: ``calls``,
``hotspots``... hold the numbers (sum them freely), ``calls_all``, ``hotspots_all``... hold ALL,
and only the ``*_by_scope`` building blocks hold both, with a ``scope`` column.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

from harvester.errors import StoreError, UsageError
from harvester.store import define_base_views, retry_read
from harvester.store.views import dynamic_sql, snapshot, sql_literal

# Installed wheels carry the SQL inside the package; a source checkout has it at the top level.
_PACKAGED_QUERIES = Path(__file__).resolve().parent / "queries"
_REPO_QUERIES = Path(__file__).resolve().parent.parent / "queries"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Tables are as wide as their content (never folded: a folded header or URL is unreadable and
# breaks grep); this only caps a runaway cell, such as a raw reply body selected by hand.
TABLE_WIDTH = 2000

# Exported files are written in the oldest storage format DuckDB still writes (readable by
# DuckDB 1.0 and later): the DuckDB inside a BI tool's driver often lags the Python package.
_EXPORT_CONFIG: dict[str, Any] = {"storage_compatibility_version": "v1.0.0"}

log = logging.getLogger("harvester")


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
    would include days outside the range); :func:`partial_windows` names them, and the query
    and report commands warn about them. ``query_range`` holds the two bounds (NULL when not
    given) for views that need them (``coverage``); ``flow_files_unfiltered`` keeps every row.
    """
    if date_from is not None and date_to is not None and date_from > date_to:
        raise UsageError(f"--from {date_from} is after --to {date_to}")
    con = duckdb.connect(database, config=config or {})
    try:
        con.execute("SET TimeZone = 'UTC'")
        define_base_views(con, root)
        con.execute(_date_scope_sql(date_from, date_to))
        define_views(con)
    except BaseException:
        con.close()
        raise
    return con


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


def partial_windows(con: duckdb.DuckDBPyConnection) -> list[tuple[dt.date, dt.date]]:
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


def warn_partial_windows(con: duckdb.DuckDBPyConnection) -> None:
    """Log a warning naming the windows that --from/--to leaves out for straddling a bound."""
    windows = partial_windows(con)
    if windows:
        start, end = min(w[0] for w in windows), max(w[1] for w in windows)
        shown = ", ".join(f"{a}..{b}" for a, b in windows[:3])
        more = f" and {len(windows) - 3} more" if len(windows) > 3 else ""
        log.warning(
            "--from/--to: %d window(s) (%s%s) straddle the range and are left out: a window's "
            "counts cannot be split by day. To include them, widen the range to cover %s..%s.",
            len(windows),
            shown,
            more,
            start,
            end,
        )


@dataclass(frozen=True)
class QueryOptions:
    """How ``harvester query`` renders its result."""

    fmt: str = "table"
    out: Path | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    limit: int | None = None


def check_store(root: Path) -> None:
    """A StoreError unless ``root`` is an existing folder (the read commands' first check)."""
    if not root.exists():
        raise StoreError(f"--store: {root} does not exist (nothing harvested yet?)")
    if not root.is_dir():
        raise StoreError(f"--store: {root} is not a folder")


def run_query(root: Path, sql_or_view: str, options: QueryOptions) -> str:
    """Run SQL (or ``SELECT * FROM`` a bare view name) and render it; errors are UsageErrors."""
    check_store(root)
    con = connect(root, date_from=options.date_from, date_to=options.date_to)
    try:
        warn_partial_windows(con)
        sql = sql_or_view.strip().rstrip(";")
        if not sql:
            raise UsageError("query: empty SQL")
        if _IDENTIFIER.match(sql):
            sql = f"SELECT * FROM {sql}"
        if options.fmt == "parquet":
            assert options.out is not None
            target = sql_literal(str(options.out))
            _sql_error_as_usage(lambda: con.execute(f"COPY ({sql}) TO {target} (FORMAT parquet)"))
            return f"wrote {options.out}"
        relation = _sql_error_as_usage(lambda: con.execute(sql))
        columns = [d[0] for d in relation.description or []]
        rows = retry_read(relation.fetchall)
    finally:
        con.close()
    text = render(columns, rows, options.fmt, options.limit)
    if options.out is not None:
        options.out.write_text(text)
        return f"wrote {len(rows)} rows to {options.out}"
    return text


def _sql_error_as_usage(run: Any) -> Any:
    try:
        return retry_read(run)
    except duckdb.IOException:
        raise
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"query: {first}") from None


def render(
    columns: Sequence[str], rows: Sequence[tuple[Any, ...]], fmt: str, limit: int | None
) -> str:
    """Rows as an aligned table, CSV or a JSON array of objects."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_plain(v) for v in row] for row in rows])
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(columns, map(_plain, row), strict=True)) for row in rows])
    return _table(columns, rows if limit is None else rows[:limit], len(rows))


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _table(columns: Sequence[str], rows: Sequence[tuple[Any, ...]], total: int) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False)
    for name in columns:
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*("" if v is None else _cell(v) for v in row))
    buffer = io.StringIO()
    Console(file=buffer, width=TABLE_WIDTH, no_color=True, highlight=False).print(table)
    shown = len(rows)
    footer = f"({total} rows)" if shown == total else f"({shown} of {total} rows)"
    return buffer.getvalue() + footer


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(_plain(value))


def export_duckdb(root: Path, file: Path) -> None:
    """Write a DuckDB database file with every bundled view over ``root``'s Parquet files.

    The views read the Parquet files by absolute path and glob when queried, so the file stays
    current as pulls add data and can be opened while a pull runs. It is written next to its
    final name and renamed into place, so a BI tool never sees half a file.

    A store with no file of a kind yet is refused: DuckDB cannot define a view over a glob that
    matches nothing, and the stand-in empty relation a live connection uses would be frozen into
    the file, which would then never show the data pulled after it.
    """
    check_store(root)
    root = root.resolve()
    if file.exists() and file.is_dir():
        raise UsageError(f"export-duckdb: {file} is a folder")
    files = snapshot(root)
    kinds = (("data", "data"), ("ledger", "ledger"), ("raw reply", "raw"))
    empty = [name for name, kind in kinds if not files[kind]]
    if empty:
        raise StoreError(
            f"export-duckdb: {root} holds no {' or '.join(empty)} files yet, and the exported "
            "views must read the store's files by glob: pull at least one day with calls, "
            "then export (once made, the file shows every later pull by itself)"
        )
    temp = file.with_name(f".{file.name}.tmp")
    for leftover in (temp, temp.with_name(temp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        con = connect(root, database=str(temp), config=_EXPORT_CONFIG)
    except duckdb.InvalidInputException:  # a DuckDB too old to know the setting writes v1.0
        temp.unlink(missing_ok=True)
        con = connect(root, database=str(temp))
    try:
        con.execute(dynamic_sql(root))  # the file reads what the tables hold when it is queried
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(temp, file)
