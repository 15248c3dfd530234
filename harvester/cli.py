"""The command line: a thin layer that builds library objects and calls one function per command.

Every error the library raises (:mod:`harvester.errors`) and every usage error click detects is
turned here, and only here, into one line on stderr and the contract's exit code. Heavy libraries
(pyarrow, duckdb, aiohttp, and asyncio itself) are imported inside the commands so that
``--help`` and ``plan`` stay fast (docs/benchmarks.md, "Start-up").
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from harvester import __version__
from harvester.config import (
    Config,
    HarvestConfig,
    default_config_path,
    load_config,
    parse_date,
    parse_phones,
    resolve_end,
)
from harvester.errors import ConfigError, HarvesterError, UsageError
from harvester.logs import redact, setup_logging

if TYPE_CHECKING:
    from harvester.plan import JobIndex, Plan
    from harvester.scheduler import RunSummary

log = logging.getLogger("harvester")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# Arrow's default allocator (mimalloc) keeps freed memory for reuse, so each phase of a run (the
# flushes, then the final compaction) adds to the resident set; the system allocator hands large
# blocks back. A 100,000-job pull peaked at 293 MB with mimalloc, 242 MB with this, for the same
# CPU (docs/benchmarks.md). Set before pyarrow is first imported; an explicit value in the
# environment wins.
ARROW_MEMORY_POOL = "system"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line and exit; the only way commands end in error."""
    click.echo(f"harvester: error: {redact(message)}", err=True)
    sys.exit(code)


# ---------------------------------------------------------------------------------------------
# shared options


class _Obj:
    """What the group passes to its commands."""

    def __init__(self, config_path: Path | None, verbose: int, quiet: bool) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self.quiet = quiet

    def config(self) -> Config:
        path = self.config_path or default_config_path()
        config = load_config(path, warn=lambda message: log.warning("%s", message))
        setup_logging(self.verbose, self.quiet, secrets=config.secrets())
        return config

    def store_path(self, store: Path | None) -> Path:
        """``--store DIR`` if given, else the config's ``store.path``."""
        if store is not None:
            return store
        config = self.config()
        path = config.store.path
        if not path.exists():
            raise UsageError(
                f"{config.source}: [store] path: {path} does not exist (nothing harvested yet?)"
            )
        return path


def _check_out_file(path: Path, flag: str) -> None:
    """An output file's folder must exist: say so in one line before any work is done."""
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{flag}: cannot write {path}: the folder {folder} {what}")


def _date_option(value: str | None, flag: str, *, relative: bool = False) -> dt.date | str | None:
    if value is None:
        return None
    if relative and value.strip().lower() in ("today", "yesterday"):
        return value.strip().lower()
    try:
        return parse_date(value, flag)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Config file (default: $HARVESTER_CONFIG or ./config.toml).",
)
store_option = click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Store folder to read instead of the config's store.path.",
)
range_options: list[Callable[[Any], Any]] = [
    click.option("--start", help="First day, YYYY-MM-DD (default: harvest.start)."),
    click.option(
        "--end", help="Last day, YYYY-MM-DD, 'yesterday' or 'today' (default: harvest.end)."
    ),
    click.option(
        "--phones", help="Comma-separated phone numbers and/or ALL (default: harvest.phones)."
    ),
    click.option(
        "--today", help="Treat this YYYY-MM-DD as today (reproducible runs, back-dated syncs)."
    ),
    click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary."),
]


def with_options(options: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@config_option
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.version_option(__version__, prog_name="harvester")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int, quiet: bool) -> None:
    """Harvest Plum VoiceTrends Diagnostic Flow data into a local Parquet store and query it.

    \b
    Example:
      harvester plan                    # what a pull would cost, sends nothing
      harvester pull --start 2024-01-01 # one-shot historical pull, resumable
      harvester sync                    # daily incremental run, for cron
      harvester query hotspots          # SQL over the store
    """
    setup_logging(verbose, quiet)
    ctx.obj = _Obj(config_path, verbose, quiet)


def _subcommand_config_option(func: Any) -> Any:
    """Let ``-c`` also be given after the command name (``harvester pull -c x.toml``)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
        if value is not None:
            ctx.find_object(_Obj).config_path = value  # type: ignore[union-attr]

    return click.option(
        "-c",
        "--config",
        "_config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        expose_value=False,
        callback=callback,
        is_eager=True,
        help="Config file (default: $HARVESTER_CONFIG or ./config.toml).",
    )(func)


def _verbosity_options(func: Any) -> Any:
    def verbose_cb(ctx: click.Context, _param: click.Parameter, value: int) -> None:
        obj = ctx.find_object(_Obj)
        if obj is not None and value:
            obj.verbose = max(obj.verbose, value)
            setup_logging(obj.verbose, obj.quiet)

    def quiet_cb(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        obj = ctx.find_object(_Obj)
        if obj is not None and value:
            obj.quiet = True
            setup_logging(obj.verbose, obj.quiet)

    func = click.option(
        "-v",
        "--verbose",
        "_v",
        count=True,
        expose_value=False,
        callback=verbose_cb,
        help="More log output.",
    )(func)
    return click.option(
        "-q",
        "--quiet",
        "_q",
        is_flag=True,
        expose_value=False,
        callback=quiet_cb,
        help="Only errors.",
    )(func)


def command(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """A subcommand that also accepts -c/-v/-q after its name."""

    def decorate(func: Any) -> Any:
        return cli.command(*args, **kwargs)(_verbosity_options(_subcommand_config_option(func)))

    return decorate


# ---------------------------------------------------------------------------------------------
# plan / pull / sync


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """The resolved range of a plan, pull or sync."""

    config: Config
    phones: tuple[str, ...]
    start: dt.date
    end: dt.date
    today: dt.date


def resolve_run_args(
    obj: _Obj,
    start: str | None,
    end: str | None,
    phones: str | None,
    today: str | None,
) -> RunArgs:
    """Merge flags over the config and check the range, before anything is sent or written."""
    config = obj.config()
    h: HarvestConfig = config.harvest
    today_date = _date_option(today, "--today")
    if today_date is None:
        today_date = dt.datetime.now(h.zone()).date()
    assert isinstance(today_date, dt.date)
    phone_list = parse_phones(phones, "--phones") if phones is not None else h.phones
    if not phone_list:
        raise UsageError("no phones: set [harvest] phones in the config or pass --phones")
    start_value = _date_option(start, "--start") or h.start
    if start_value is None:
        raise UsageError("no start date: set [harvest] start in the config or pass --start")
    assert isinstance(start_value, dt.date)
    end_spec = _date_option(end, "--end", relative=True) or h.end
    end_date = resolve_end(end_spec, today_date)
    end_name = "--end" if end is not None else "[harvest] end"
    start_name = "--start" if start is not None else "[harvest] start"
    if end_date > today_date:
        raise UsageError(f"{end_name}: {end_date} is in the future (today is {today_date})")
    if start_value > end_date:
        raise UsageError(f"{start_name}: {start_value} is after the end date {end_date}")
    return RunArgs(config, phone_list, start_value, end_date, today_date)


def _plan_builder(
    command_name: str,
    args: RunArgs,
    *,
    newest_first: bool,
    only_failed: bool = False,
    refetch: bool = False,
) -> Callable[[JobIndex], Plan]:
    from harvester.plan import pull_plan, sync_plan

    grain = args.config.harvest.window

    def build(index: JobIndex) -> Plan:
        if command_name == "sync":
            return sync_plan(
                args.phones,
                args.start,
                args.today,
                grain,
                args.config.harvest.lookback_days,
                newest_first=newest_first,
            )
        return pull_plan(
            args.phones,
            args.start,
            args.end,
            grain,
            newest_first=newest_first,
            only_failed=only_failed,
            refetch=refetch,
            today=args.today,
        )

    return build


@command("plan")
@with_options(range_options)
@click.option("--sync", "as_sync", is_flag=True, help="Plan what `harvester sync` would fetch.")
@click.pass_obj
def plan_cmd(
    obj: _Obj,
    start: str | None,
    end: str | None,
    phones: str | None,
    today: str | None,
    as_json: bool,
    as_sync: bool,
) -> None:
    """Print the jobs a pull would run, what the store holds, and the cost at the quota.

    Sends no request and writes nothing.

    \b
    Example:
      harvester plan --start 2024-01-01 --end 2024-12-31 --phones 6175550101,ALL
      harvester plan --json
    """
    from harvester.planning import describe_plan

    args = resolve_run_args(obj, start, end, phones, today)
    builder = _plan_builder("sync" if as_sync else "pull", args, newest_first=as_sync)
    click.echo(describe_plan(args.config, builder, args.today, as_json=as_json))


def _run(
    command_name: str,
    args: RunArgs,
    obj: _Obj,
    build: Callable[[JobIndex], Plan],
    as_json: bool,
) -> None:
    import asyncio

    from harvester.progress import make_progress
    from harvester.scheduler import harvest

    api = args.config.api
    if api.login is None and api.account_login is None:
        # without this, the run would create the store and stop with a 401 it never received
        raise ConfigError(
            f"{args.config.source or 'config'}: [api] login: {command_name} needs credentials: "
            "set login and password_env, or tool, account_login and account_password_env"
        )
    progress = make_progress(
        args.config.quota.window_seconds,
        interactive=sys.stderr.isatty() and not as_json,
        quiet=obj.quiet,
    )

    async def main() -> RunSummary:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await harvest(args.config, build, progress=progress, stop=stop)

    summary = asyncio.run(main())
    _report(summary, as_json)
    sys.exit(summary.exit_code)


def _report(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        click.echo(summary.to_json())
    else:
        click.echo(
            f"{summary.command}: {summary.done} done, {len(summary.failed)} failed, "
            f"{summary.pending} left · {summary.already_done} already held · "
            f"{summary.requests} requests, {summary.rate_limited} rate-limited, "
            f"{summary.retries} retries · {summary.rows} rows in {summary.elapsed_seconds:.1f}s"
        )
        for job, reason in summary.failed[:20]:
            click.echo(f"  failed: {job.phone} {job.window_start}..{job.window_end}: {reason}")
        if len(summary.failed) > 20:
            click.echo(f"  ... and {len(summary.failed) - 20} more (harvester status --gaps)")
        if summary.failed_before:
            click.echo(
                f"  {len(summary.failed_before)} jobs rejected by the server in earlier runs "
                "(harvester status --gaps; harvester pull --retry-failed tries them again)"
            )
    if summary.stopped == "credentials":
        click.echo(f"harvester: error: {redact(summary.message or '')}", err=True)
    elif summary.stopped == "interrupted":
        click.echo(
            "harvester: interrupted; everything fetched is stored, re-run to resume", err=True
        )


@command("pull")
@with_options(range_options)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Re-run only the jobs that failed before, those the server rejected (400/404/405) "
    "included; a plain run retries the others.",
)
@click.option("--refetch", is_flag=True, help="Fetch every job again, even finished ones.")
@click.option(
    "--newest-first/--oldest-first", default=False, help="Job order (default: oldest first)."
)
@click.pass_obj
def pull_cmd(
    obj: _Obj,
    start: str | None,
    end: str | None,
    phones: str | None,
    today: str | None,
    as_json: bool,
    retry_failed: bool,
    refetch: bool,
    newest_first: bool,
) -> None:
    """One-shot historical pull; re-running it resumes and never fetches a finished job again.

    \b
    Example:
      harvester pull --start 2024-01-01 --end 2024-06-30
      harvester pull --retry-failed
    """
    if retry_failed and refetch:
        raise UsageError("--retry-failed and --refetch cannot be combined")
    args = resolve_run_args(obj, start, end, phones, today)
    build = _plan_builder(
        "pull", args, newest_first=newest_first, only_failed=retry_failed, refetch=refetch
    )
    _run("pull", args, obj, build, as_json)


@command("sync")
@with_options([o for o in range_options if o is not range_options[1]])
@click.option(
    "--newest-first/--oldest-first", default=True, help="Job order (default: newest first)."
)
@click.pass_obj
def sync_cmd(
    obj: _Obj,
    start: str | None,
    phones: str | None,
    today: str | None,
    as_json: bool,
    newest_first: bool,
) -> None:
    """Incremental: from where each phone's data ends through yesterday, re-fetching the
    last lookback_days. Safe to run from cron.

    \b
    Example:
      harvester sync
      harvester sync --json    # for schedulers: exit code and a JSON summary
    """
    args = resolve_run_args(obj, start, "yesterday", phones, today)
    build = _plan_builder("sync", args, newest_first=newest_first)
    _run("sync", args, obj, build, as_json)


# ---------------------------------------------------------------------------------------------
# store commands


@command("status")
@store_option
@click.option("--gaps", is_flag=True, help="List missing and failed jobs per phone as date ranges.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status_cmd(obj: _Obj, store: Path | None, gaps: bool, as_json: bool) -> None:
    """What the store holds: jobs done/failed, coverage and gaps per phone, rows, files, last run.

    \b
    Example:
      harvester status
      harvester status --store ./voicetrends-data --gaps
    """
    from harvester.status_view import render_status

    click.echo(render_status(obj.store_path(store), gaps=gaps, as_json=as_json))


@command("query")
@store_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="Output format (parquet needs --out).",
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write to FILE.")
@click.option("--from", "date_from", help="Only rows with window_start on or after this day.")
@click.option("--to", "date_to", help="Only rows with window_end on or before this day.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows (table output).")
@click.argument("sql_or_view")
@click.pass_obj
def query_cmd(
    obj: _Obj,
    store: Path | None,
    fmt: str,
    out: Path | None,
    date_from: str | None,
    date_to: str | None,
    limit: int | None,
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
    from harvester.views import QueryOptions, run_query

    start = _date_option(date_from, "--from")
    end = _date_option(date_to, "--to")
    assert start is None or isinstance(start, dt.date)
    assert end is None or isinstance(end, dt.date)
    if fmt == "parquet" and out is None:
        raise UsageError("--format parquet needs --out FILE")
    if out is not None:
        _check_out_file(out, "--out")
    text = run_query(
        obj.store_path(store),
        sql_or_view,
        QueryOptions(fmt=fmt, out=out, date_from=start, date_to=end, limit=limit),
    )
    if text:
        click.echo(text, nl=not text.endswith("\n"))


@command("compact")
@store_option
@click.pass_obj
def compact_cmd(obj: _Obj, store: Path | None) -> None:
    """Merge small Parquet files (one per partition); query results are unchanged.

    \b
    Example:
      harvester compact --store ./voicetrends-data
    """
    from harvester.store import Store

    result = Store(obj.store_path(store)).compact()
    click.echo(str(result))


@command("export-duckdb")
@store_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def export_duckdb_cmd(obj: _Obj, store: Path | None, file: Path) -> None:
    """Write a DuckDB database file with every bundled view over the store's Parquet files,
    for the duckdb CLI, DBeaver, Metabase or Superset.

    \b
    Example:
      harvester export-duckdb voicetrends.duckdb && duckdb voicetrends.duckdb -c "FROM hotspots"
    """
    from harvester.views import export_duckdb

    _check_out_file(file, "FILE")
    export_duckdb(obj.store_path(store), file)
    click.echo(f"wrote {file}")


@command("report")
@store_option
@click.option("--from", "date_from", help="First day of the report.")
@click.option("--to", "date_to", help="Last day of the report.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("report.html"),
    show_default=True,
)
@click.pass_obj
def report_cmd(
    obj: _Obj, store: Path | None, date_from: str | None, date_to: str | None, out: Path
) -> None:
    """Write one self-contained HTML report with charts (opens offline).

    \b
    Example:
      harvester report --from 2024-01-01 --to 2024-03-31 --out q1.html
    """
    start = _date_option(date_from, "--from")
    end = _date_option(date_to, "--to")
    assert start is None or isinstance(start, dt.date)
    assert end is None or isinstance(end, dt.date)
    if start and end and start > end:
        raise UsageError(f"--from {start} is after --to {end}")
    _check_out_file(out, "--out")
    from harvester.report import write_report

    write_report(obj.store_path(store), out, date_from=start, date_to=end)
    click.echo(f"wrote {out}")


# ---------------------------------------------------------------------------------------------
# simulator and demo


@command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--window-seconds", type=click.FloatRange(min=0.1), default=900.0, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--latency", type=click.FloatRange(min=0), default=0.0, help="Seconds per reply.")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of 500s.")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of drops.")
@click.option("--malformed-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--clock-skew", type=float, default=0.0, help="Server clock minus real time (s).")
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_cmd(
    host: str,
    port: int,
    window_seconds: float,
    limit: int,
    latency: float,
    error_rate: float,
    drop_rate: float,
    malformed_rate: float,
    clock_skew: float,
    seed: int,
) -> None:
    """Serve the built-in VoiceTrends simulator (loopback by default) until Ctrl-C.

    \b
    Example:
      harvester simulate --port 8080 --window-seconds 10 --limit 20
    """
    import asyncio

    from harvester.simulator import SimulatorSettings, run_simulator

    settings = SimulatorSettings(
        limit=limit,
        window_seconds=window_seconds,
        latency=latency,
        error_rate=error_rate,
        drop_rate=drop_rate,
        malformed_rate=malformed_rate,
        clock_skew=clock_skew,
        seed=seed,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulator(settings, host, port))


@command("demo")
@click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo-data"),
    show_default=True,
    help="Folder to pull into (replaced on each run).",
)
@click.pass_obj
def demo_cmd(obj: _Obj, store: Path) -> None:
    """Run the simulator in-process, pull a month of data for a few numbers, show some views.

    Needs no config and no network.

    \b
    Example:
      harvester demo && harvester query --store demo-data hotspots
    """
    from harvester.demo import run_demo

    sys.exit(run_demo(store, quiet=obj.quiet))


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: every error becomes one line and the contract's exit code."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", ARROW_MEMORY_POOL)
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see 'harvester {exc.ctx.info_name} --help')" if exc.ctx else ""
        if exc.ctx is not None and exc.ctx.parent is None:
            hint = " (see 'harvester --help')"
        fail(f"{exc.format_message()}{hint}")
    except click.Abort:
        fail("interrupted", EXIT_INTERRUPTED)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except HarvesterError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
