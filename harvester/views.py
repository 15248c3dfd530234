"""The analysis surface: DuckDB connections with every bundled view, queries, and DuckDB exports.

The SQL of every view lives in ``queries/*.sql`` (one view per file, a header comment saying
what it answers), written against the base relations of :func:`harvester.store.base_views_sql`.
Files are applied in dependency order by retrying: a view whose dependency is not defined yet
fails to bind and is tried again in the next pass, so nobody maintains an order list.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from harvester.errors import StoreError, UsageError
from harvester.store import base_views_sql, retry_read
from harvester.store.views import sql_literal

# Installed wheels carry the SQL inside the package; a source checkout has it at the top level.
_PACKAGED_QUERIES = Path(__file__).resolve().parent / "queries"
_REPO_QUERIES = Path(__file__).resolve().parent.parent / "queries"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Wide enough for the widest bundled view in a terminal or a cron mail.
TABLE_WIDTH = 200


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
                con.execute(sql)
                defined.append(name)
            except duckdb.CatalogException as exc:  # a dependency not defined yet
                failed.append((name, sql, exc))
        if len(failed) == len(pending):
            name, _, exc = failed[0]
            raise RuntimeError(f"queries/{name}.sql does not bind: {exc}") from exc
        pending = [(name, sql) for name, sql, _ in failed]
    return defined


def connect(
    root: Path,
    *,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    database: str = ":memory:",
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the base relations and every bundled view over ``root``.

    ``date_from``/``date_to`` restrict every view to windows inside that range (the filter is
    applied to the base rows, so aggregates and SQL of your own see only that range).
    """
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    retry_read(lambda: con.execute(base_views_sql(root)))
    if date_from is not None or date_to is not None:
        conditions = []
        if date_from is not None:
            conditions.append(f"window_start >= DATE {sql_literal(date_from.isoformat())}")
        if date_to is not None:
            conditions.append(f"window_end <= DATE {sql_literal(date_to.isoformat())}")
        con.execute("ALTER VIEW flow_files RENAME TO flow_files_unfiltered")
        con.execute(
            "CREATE VIEW flow_files AS SELECT * FROM flow_files_unfiltered WHERE "
            + " AND ".join(conditions)
        )
    define_views(con)
    return con


@dataclass(frozen=True)
class QueryOptions:
    """How ``harvester query`` renders its result."""

    fmt: str = "table"
    out: Path | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    limit: int | None = None


def _check_store(root: Path) -> None:
    if not root.exists():
        raise StoreError(f"--store: {root} does not exist (nothing harvested yet?)")
    if not root.is_dir():
        raise StoreError(f"--store: {root} is not a folder")


def run_query(root: Path, sql_or_view: str, options: QueryOptions) -> str:
    """Run SQL (or ``SELECT * FROM`` a bare view name) and render it; errors are UsageErrors."""
    _check_store(root)
    con = connect(root, date_from=options.date_from, date_to=options.date_to)
    try:
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


def render(columns: Sequence[str], rows: Sequence[tuple[Any, ...]], fmt: str, limit: int | None) -> str:
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
        table.add_column(name, overflow="fold")
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

    The views read the Parquet files by absolute path when queried, so the file stays current
    as pulls add data and can be opened while a pull runs. It is written next to its final
    name and renamed into place, so a BI tool never sees half a file.
    """
    _check_store(root)
    root = root.resolve()
    if file.exists() and file.is_dir():
        raise UsageError(f"export-duckdb: {file} is a folder")
    temp = file.with_name(f".{file.name}.tmp")
    temp.unlink(missing_ok=True)
    con = connect(root, database=str(temp))
    try:
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(temp, file)
