"""The run commands, ``plan``, ``pull`` and ``sync``: the range flags merged over the config and
checked once, the plan each command runs, and the summary a run prints.

They live together because they share that resolution (:func:`resolve_run_args`) and the
plan (:func:`_plan`): ``plan`` must describe exactly the jobs a ``pull`` or ``sync`` would run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import sys
from typing import TYPE_CHECKING

import click

from harvester.cli.options import CliState, command, date_option, range_options, with_options
from harvester.config import Config, HarvestConfig
from harvester.config_values import parse_phones, resolve_end
from harvester.errors import ConfigError, UsageError
from harvester.logs import redact

if TYPE_CHECKING:
    from harvester.gate import GateSnapshot, QuotaGate
    from harvester.jobs import Job
    from harvester.plan import Plan, PlanCount
    from harvester.progress import ProgressSink
    from harvester.scheduler import RunSummary

# The signals that stop a run cleanly (requests on the wire finish, everything fetched is flushed,
# exit 130): Ctrl-C, a service manager's stop, and SIGHUP, which a closed terminal or a dropped
# ssh session sends and which would otherwise kill the run with its last batch unflushed.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """The resolved range of a plan, pull or sync."""

    config: Config
    phones: tuple[str, ...]
    start: dt.date
    end: dt.date
    today: dt.date


def resolve_run_args(
    obj: CliState,
    start: str | None,
    end: str | None,
    phones: str | None,
    today: str | None,
    *,
    sends: bool = True,
) -> RunArgs:
    """Merge flags over the config and check the range, before anything is sent or written.
    ``sends=False`` (plan) does not ask for the secrets."""
    config = obj.config(need_secrets=sends)
    h: HarvestConfig = config.harvest
    today_date = date_option(today, "--today")
    if today_date is None:
        today_date = dt.datetime.now(h.zone()).date()
    assert isinstance(today_date, dt.date)
    phone_list = parse_phones(phones, "--phones") if phones is not None else h.phones
    if not phone_list:
        raise UsageError("no phones: set [harvest] phones in the config or pass --phones")
    start_value = date_option(start, "--start") or h.start
    if start_value is None:
        raise UsageError("no start date: set [harvest] start in the config or pass --start")
    assert isinstance(start_value, dt.date)
    end_spec = date_option(end, "--end", relative=True) or h.end
    end_date = resolve_end(end_spec, today_date)
    end_name = "--end" if end is not None else "[harvest] end"
    start_name = "--start" if start is not None else "[harvest] start"
    if end_date > today_date:
        raise UsageError(f"{end_name}: {end_date} is in the future (today is {today_date})")
    if start_value > end_date:
        raise UsageError(f"{start_name}: {start_value} is after the end date {end_date}")
    return RunArgs(config, phone_list, start_value, end_date, today_date)


def _plan(
    command_name: str,
    args: RunArgs,
    *,
    newest_first: bool,
    only_failed: bool = False,
    refetch: bool = False,
) -> Plan:
    from harvester.plan import pull_plan, sync_plan

    grain = args.config.harvest.window
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


@command("plan", read_only=True)
@with_options(range_options)
@click.option("--sync", "as_sync", is_flag=True, help="Plan what `harvester sync` would fetch.")
@click.pass_obj
def plan_cmd(
    obj: CliState,
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
    from harvester.cli.render_plan import render_plan
    from harvester.forecast import forecast

    args = resolve_run_args(obj, start, end, phones, today, sends=False)
    plan = _plan("sync" if as_sync else "pull", args, newest_first=as_sync)
    click.echo(render_plan(forecast(args.config, plan, args.today), as_json=as_json))


def _run(
    command_name: str,
    args: RunArgs,
    obj: CliState,
    plan: Plan,
    as_json: bool,
) -> None:
    import asyncio

    from harvester import runtime
    from harvester.cli.progress import make_progress
    from harvester.scheduler import harvest

    api = args.config.api
    if api.login is None and api.account_login is None:
        # without this, the run would create the store and stop with a 401 it never received
        raise ConfigError(
            f"{args.config.source or 'config'}: [api] login: {command_name} needs credentials: "
            "set login and password_env, or tool, account_login and account_password_env"
        )
    progress = _TerminalMayHangUp(
        make_progress(
            args.config.quota.window_seconds,
            interactive=sys.stderr.isatty() and not as_json,
            quiet=obj.quiet,
        )
    )

    async def main() -> RunSummary:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        return await harvest(args.config, plan, progress=progress, stop=stop)

    summary = runtime.run(main())
    try:
        _report(summary, as_json)
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        # the terminal hung up (EIO) or the reader went away: the work is stored and the exit
        # code still tells; /dev/null takes what is buffered, or Python's own flush at exit
        # would fail and turn the exit code into 120
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.dup2(devnull, sys.stderr.fileno())
    sys.exit(summary.exit_code)


class _TerminalMayHangUp:
    """A progress display that outlives its terminal.

    After a hang-up (SIGHUP: a closed terminal, a dropped ssh session) every write to the
    terminal fails with EIO; the progress bar's must not turn the clean stop that follows (flush
    everything fetched, exit 130) into a crash, so its errors are dropped.
    """

    def __init__(self, inner: ProgressSink) -> None:
        self._inner = inner

    def started(self, command: str, counts: PlanCount, gate: QuotaGate) -> None:
        with contextlib.suppress(OSError):
            self._inner.started(command, counts, gate)

    def job_finished(self, job: Job, state: str, rows: int) -> None:
        with contextlib.suppress(OSError):
            self._inner.job_finished(job, state, rows)

    def tick(self, summary: RunSummary, gate: GateSnapshot) -> None:
        with contextlib.suppress(OSError):
            self._inner.tick(summary, gate)

    def finished(self, summary: RunSummary) -> None:
        with contextlib.suppress(OSError):
            self._inner.finished(summary)


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
    if summary.stopped in ("credentials", "unreachable", "quota"):
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
    obj: CliState,
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
    plan = _plan("pull", args, newest_first=newest_first, only_failed=retry_failed, refetch=refetch)
    _run("pull", args, obj, plan, as_json)


@command("sync")
@with_options([o for o in range_options if o is not range_options[1]])
@click.option(
    "--newest-first/--oldest-first", default=True, help="Job order (default: newest first)."
)
@click.pass_obj
def sync_cmd(
    obj: CliState,
    start: str | None,
    phones: str | None,
    today: str | None,
    as_json: bool,
    newest_first: bool,
) -> None:
    """Incremental: every job through yesterday not yet done, and late data: a job fetched
    while at most lookback_days old is fetched again (once a day). Safe to run from cron.

    \b
    Example:
      harvester sync
      harvester sync --json    # for schedulers: exit code and a JSON summary
    """
    args = resolve_run_args(obj, start, "yesterday", phones, today)
    plan = _plan("sync", args, newest_first=newest_first)
    _run("sync", args, obj, plan, as_json)
