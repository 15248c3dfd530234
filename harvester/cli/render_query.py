"""``harvester query``'s output: the rows :func:`harvester.analysis.run_query` returns, rendered as
an aligned table, CSV or JSON, streamed to stdout or to ``--out``.

CSV and JSON are streamed (``STREAM_ROWS`` rows at a time, the library's batches), so a result of
millions of rows never sits in memory; the bytes are exactly those :func:`render` makes of the
whole result. A table needs every row's width first, so it is rendered whole. Files named by
``--out`` are written by :mod:`harvester.outputs` (never half-written, never inside the store).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harvester.analysis import (
    QueryResult,
    Window,
    connect,
    copy_parquet,
    partial_windows,
    prepare_sql,
    run_query,
)
from harvester.errors import UsageError
from harvester.outputs import OutputFile, write_text
from harvester.sql_guard import GuardNames

# Tables are as wide as their content (never folded: a folded header or URL is unreadable and
# breaks grep); this only caps a runaway cell, such as a raw reply body selected by hand.
TABLE_WIDTH = 2000
# json.dumps puts this between a list's items; streamed JSON must be the same bytes.
_JSON_SEPARATOR = ", "

log = logging.getLogger("harvester")

# How the query guard's messages name its ways out: the flags of ``harvester query``.
QUERY_FLAGS = GuardNames(out="--out", unsafe="--unsafe-sql")


@dataclass(frozen=True)
class QueryOptions:
    """How ``harvester query`` runs and renders its result.

    ``out`` is checked by :func:`harvester.outputs.check_output` first; ``unsafe`` lifts the
    file-access restriction of :mod:`harvester.sql_guard`.
    """

    fmt: str = "table"
    out: OutputFile | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    limit: int | None = None
    unsafe: bool = False


def query_output(
    root: Path,
    sql_or_view: str,
    options: QueryOptions,
    *,
    echo: Callable[[str], None] | None = None,
) -> str:
    """Run SQL (or ``SELECT * FROM`` a bare view name) and render it; errors are UsageErrors.

    CSV and JSON are streamed to ``options.out``, or to ``echo`` when given; without either the
    text is returned. A table is always returned whole. With ``--out`` the returned text is the
    line saying what was written.
    """
    sql = prepare_sql(root, sql_or_view, unsafe=options.unsafe, flag="--store", names=QUERY_FLAGS)
    start, end = options.date_from, options.date_to
    if start is not None and end is not None and start > end:
        raise UsageError(f"--from {start} is after --to {end}")
    con = connect(root, date_from=start, date_to=end)
    try:
        warn_partial_windows(partial_windows(con))
        if options.fmt == "parquet":
            assert options.out is not None
            copy_parquet(con, root, sql, options.out, unsafe=options.unsafe, names=QUERY_FLAGS)
            return f"wrote {options.out.path}"
        counter = [0]
        # The query starts when the first chunk is asked for, once --out is open: an output
        # that cannot be written is reported before any SQL error, and nothing runs for it.
        run = partial(run_query, con, root, sql, unsafe=options.unsafe, names=QUERY_FLAGS)
        chunks = _rendered(run, options, counter)
        if options.out is not None:
            write_text(options.out, chunks)
            return f"wrote {counter[0]} rows to {options.out.path}"
        if echo is not None and options.fmt != "table":
            for chunk in chunks:
                echo(chunk)
            return ""
        return "".join(chunks)
    finally:
        con.close()


def warn_partial_windows(windows: Sequence[Window]) -> None:
    """Log a warning naming the windows that --from/--to leaves out for straddling a bound."""
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


def _rendered(
    run: Callable[[], QueryResult], options: QueryOptions, counter: list[int]
) -> Iterator[str]:
    """The result of ``run()`` as text chunks, one per batch; counts rows into ``counter[0]``."""
    result = run()
    columns = result.columns
    if options.fmt == "table":
        rows = [row for batch in result.batches for row in batch]
        counter[0] = len(rows)
        yield render(columns, rows, "table", options.limit)
        return
    first = True
    if options.fmt == "json":
        yield "["
    else:
        yield _csv_lines([columns])
    for batch in result.batches:
        counter[0] += len(batch)
        if options.fmt == "json":
            items = [dict(zip(columns, map(_plain, row), strict=True)) for row in batch]
            text = json.dumps(items)[1:-1]  # the batch's items, as json.dumps joins them
            yield text if first else _JSON_SEPARATOR + text
        else:
            yield _csv_lines(_csv_rows(batch))
        first = False
    if options.fmt == "json":
        yield "]"


def render(
    columns: Sequence[str], rows: Sequence[tuple[Any, ...]], fmt: str, limit: int | None
) -> str:
    """Rows as an aligned table, CSV or a JSON array of objects."""
    if fmt == "csv":
        return _csv_lines([columns, *_csv_rows(rows)])
    if fmt == "json":
        return json.dumps([dict(zip(columns, map(_plain, row), strict=True)) for row in rows])
    return _table(columns, rows if limit is None else rows[:limit], len(rows))


def _csv_rows(rows: Iterable[Sequence[Any]]) -> Iterator[list[Any]]:
    return ([_plain(v) for v in row] for row in rows)


def _csv_lines(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


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
