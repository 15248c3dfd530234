"""The commands that need no real server: ``simulate`` serves the built-in VoiceTrends simulator,
``demo`` runs it in-process and pulls from it.

They exist for trying the harvester (and testing against it) without an account or network, so
they take no config and are kept apart from the commands that do.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from harvester.cli.options import CliState, command


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
    help="Folder to pull into: new, empty, or made by an earlier demo (replaced on each run; "
    "any other folder is refused).",
)
@click.pass_obj
def demo_cmd(obj: CliState, store: Path) -> None:
    """Run the simulator in-process, pull a month of data for a few numbers, show some views.

    Needs no config and no network.

    \b
    Example:
      harvester demo && harvester query --store demo-data hotspots
    """
    sys.exit(run_demo(store, quiet=obj.quiet))


def run_demo(store: Path, *, quiet: bool = False) -> int:
    """Run the demo into ``store`` (replaced), print what it pulled and shows; the exit code."""
    import asyncio

    from rich.console import Console

    from harvester import demo
    from harvester.cli.progress import make_progress
    from harvester.cli.render_query import render

    demo.replace_store(store, flag="--store")
    console = Console(soft_wrap=True)  # tables are as wide as they are; the terminal wraps
    progress = make_progress(demo.DEMO_WINDOW_SECONDS, interactive=sys.stderr.isatty(), quiet=quiet)
    summary = asyncio.run(demo.pull(store, progress))
    console.print(
        f"\n[bold]pulled[/] {summary.done} jobs, {summary.rows} rows, "
        f"{summary.requests} requests, {summary.rate_limited} rate-limited, "
        f"in {summary.elapsed_seconds:.1f}s into {store}/"
    )
    for title, columns, rows in demo.showcase(store):
        console.print(f"\n[bold]{title}[/]")
        console.print(render(columns, rows, "table", None), markup=False, highlight=False)
    console.print("\n[bold]Explore further:[/]")
    for line in (
        f"harvester status --store {store}",
        f"harvester query --store {store} hotspots",
        f'harvester query --store {store} "SELECT * FROM calls_all ORDER BY day LIMIT 10"',
        f"harvester report --store {store} --out demo-report.html",
        f"harvester export-duckdb --store {store} demo.duckdb",
    ):
        console.print(f"  {line}", markup=False, highlight=False)
    return summary.exit_code
