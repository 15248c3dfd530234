"""The commands over a store already harvested: ``status``, ``query``, ``compact``,
``export-duckdb`` and ``report``.

Each takes ``--store DIR`` (or the config's ``store.path``), checks its flags, hands the
folder to the library and prints what it returns (``status`` and ``query`` through
:mod:`~harvester.cli.render_status` and :mod:`~harvester.cli.render_query`); none of them talks
to the API. They share no more than that, and live apart from the run commands so that reading
the store never depends on how it is filled.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from harvester.cli.options import CliState, command, date_option, store_option
from harvester.errors import UsageError


@command("status", read_only=True)
@store_option
@click.option("--gaps", is_flag=True, help="List missing and failed jobs per phone as date ranges.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status_cmd(obj: CliState, store: Path | None, gaps: bool, as_json: bool) -> None:
    """What the store holds: jobs done/failed, coverage and gaps per phone, rows, files, last run.

    \b
    Example:
      harvester status
      harvester status --store ./voicetrends-data --gaps
    """
    from harvester.cli.render_status import render_status

    click.echo(render_status(obj.store_path(store), gaps=gaps, as_json=as_json))


@command("query", read_only=True)
@store_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="Output format (parquet needs --out).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to FILE (outside the store; replaced whole, never left half-written). A device "
    "or pipe such as /dev/stdout is written through (not parquet).",
)
@click.option("--from", "date_from", help="Only rows with window_start on or after this day.")
@click.option("--to", "date_to", help="Only rows with window_end on or before this day.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows (table output).")
@click.option(
    "--unsafe-sql",
    "unsafe",
    is_flag=True,
    help="Run any SQL with full file access. By default the SQL may only read (SELECT...), "
    "only files under the store, and writes only through --out.",
)
@click.argument("sql_or_view")
@click.pass_obj
def query_cmd(
    obj: CliState,
    store: Path | None,
    fmt: str,
    out: Path | None,
    date_from: str | None,
    date_to: str | None,
    limit: int | None,
    unsafe: bool,
    sql_or_view: str,
) -> None:
    """Run SQL against the store with every bundled view defined; a bare view name means
    SELECT * FROM that view.

    \b
    Example:
      harvester query hotspots
      harvester query --format csv "SELECT phone, sum(visits) FROM diagnostic_flow GROUP BY 1"
      harvester query calls --from 2024-03-01 --to 2024-03-31 --format json --out march.json
    """
    from harvester.cli.render_query import QueryOptions, query_output
    from harvester.outputs import check_output

    start = date_option(date_from, "--from")
    end = date_option(date_to, "--to")
    assert start is None or isinstance(start, dt.date)
    assert end is None or isinstance(end, dt.date)
    if fmt == "parquet" and out is None:
        raise UsageError("--format parquet needs --out FILE")
    root = obj.store_path(store)
    target = None
    if out is not None:
        target = check_output(out, "--out", store=root, streams_ok=fmt != "parquet")
    options = QueryOptions(
        fmt=fmt, out=target, date_from=start, date_to=end, limit=limit, unsafe=unsafe
    )
    last = [""]

    def echo(chunk: str) -> None:
        if chunk:
            click.echo(chunk, nl=False)
            last[0] = chunk

    text = query_output(root, sql_or_view, options, echo=echo)
    if text:
        click.echo(text, nl=not text.endswith("\n"))
    elif last[0] and not last[0].endswith("\n"):
        click.echo("")


@command("compact")
@store_option
@click.pass_obj
def compact_cmd(obj: CliState, store: Path | None) -> None:
    """Merge small Parquet files (one per partition); query results are unchanged.

    \b
    Example:
      harvester compact --store ./voicetrends-data
    """
    from harvester.store import Store

    result = Store(obj.store_path(store)).compact()
    click.echo(str(result))


@command("export-duckdb", read_only=True)
@store_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def export_duckdb_cmd(obj: CliState, store: Path | None, file: Path) -> None:
    """Write a DuckDB database file with every bundled view over the store's Parquet files,
    for the duckdb CLI, DBeaver, Metabase or Superset. FILE must be a regular file or a new
    name outside the store; it is replaced whole, never left half-written.

    \b
    Example:
      harvester export-duckdb voicetrends.duckdb && duckdb voicetrends.duckdb -c "FROM hotspots"
    """
    from harvester.analysis import export_duckdb

    export_duckdb(obj.store_path(store), file, flag="FILE", store_flag="--store")
    click.echo(f"wrote {file}")


@command("report", read_only=True)
@store_option
@click.option("--from", "date_from", help="First day of the report.")
@click.option("--to", "date_to", help="Last day of the report.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("report.html"),
    show_default=True,
    help="HTML file to write (outside the store; replaced whole). A device or pipe such as "
    "/dev/stdout is written through.",
)
@click.pass_obj
def report_cmd(
    obj: CliState, store: Path | None, date_from: str | None, date_to: str | None, out: Path
) -> None:
    """Write one self-contained HTML report with charts (opens offline).

    \b
    Example:
      harvester report --from 2024-01-01 --to 2024-03-31 --out q1.html
    """
    start = date_option(date_from, "--from")
    end = date_option(date_to, "--to")
    assert start is None or isinstance(start, dt.date)
    assert end is None or isinstance(end, dt.date)
    if start and end and start > end:
        raise UsageError(f"--from {start} is after --to {end}")
    from harvester.cli.render_query import warn_partial_windows
    from harvester.report import write_report

    write_report(
        obj.store_path(store),
        out,
        date_from=start,
        date_to=end,
        flag="--out",
        store_flag="--store",
        on_partial_windows=warn_partial_windows,
    )
    click.echo(f"wrote {out}")
