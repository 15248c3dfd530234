"""The command line: a thin layer that builds library objects and calls one function per command.

This module is its public face: the click group (:data:`cli`), every command added to it, and
:func:`main`, the console script (``harvester.cli:main``) and ``python -m harvester``. Every error
the library raises (:mod:`harvester.errors`) and every usage error click detects is turned here,
and only here, into one line on stderr and the contract's exit code.

The commands live in the modules beside it, one job each: :mod:`~harvester.cli.run` (plan, pull,
sync), :mod:`~harvester.cli.store` (status, query, compact, export-duckdb, report),
:mod:`~harvester.cli.sandbox` (simulate, demo), :mod:`~harvester.cli.verify` (verify), and
:mod:`~harvester.cli.options` for what they share. Heavy libraries (pyarrow, duckdb, aiohttp,
rich, and asyncio itself) are imported inside the commands so that ``--help`` and ``plan`` stay
fast (docs/benchmarks.md, "Start-up").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from harvester import __version__
from harvester.cli.migrate import migrate_cmd
from harvester.cli.options import CliState, config_option
from harvester.cli.run import plan_cmd, pull_cmd, sync_cmd
from harvester.cli.sandbox import demo_cmd, simulate_cmd
from harvester.cli.store import compact_cmd, export_duckdb_cmd, query_cmd, report_cmd, status_cmd
from harvester.cli.verify import REPAIR_HINT, verify_cmd
from harvester.errors import HarvesterError, StoreDamagedError
from harvester.logs import redact, setup_logging

__all__ = ["cli", "fail", "main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# Arrow's default allocator (mimalloc) keeps freed memory for reuse, so each phase of a run (the
# flushes, then the final compaction) adds to the resident set; the system allocator hands large
# blocks back. A 100,000-job pull peaked at 293 MB with mimalloc, 242 MB with this, for the same
# CPU (docs/benchmarks.md). Set before pyarrow is first imported; an explicit value in the
# environment wins.
ARROW_MEMORY_POOL = "system"
# The Rust log level for delta-rs (env_logger's syntax): nothing, see main().
RUST_LOG_LEVEL = "off"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line and exit; the only way commands end in error."""
    click.echo(f"harvester: error: {redact(message)}", err=True)
    sys.exit(code)


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
    ctx.obj = CliState(config_path, verbose, quiet)


for _command in (
    plan_cmd,
    pull_cmd,
    sync_cmd,
    status_cmd,
    query_cmd,
    compact_cmd,
    export_duckdb_cmd,
    report_cmd,
    simulate_cmd,
    demo_cmd,
    migrate_cmd,
    verify_cmd,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: every error becomes one line and the contract's exit code."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", ARROW_MEMORY_POOL)
    # delta-rs's Rust logger writes its own WARN lines to stderr (an object store's credential
    # chain trying the instance metadata service); its errors reach us as exceptions anyway,
    # which become the one error line. A user's own RUST_LOG still wins.
    os.environ.setdefault("RUST_LOG", RUST_LOG_LEVEL)
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
    except StoreDamagedError as exc:
        fail(f"{exc}: {REPAIR_HINT}", exc.exit_code)
    except HarvesterError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
