"""``harvester verify [--repair]``: is every file of the store there and sound, do the rows agree
with the ledger; with ``--repair``, heal what is not (:mod:`harvester.store.verify` does the
work; this module renders its report and picks the exit code: 0 clean or repaired, 1 damaged).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harvester.cli.options import CliState, command, store_option

if TYPE_CHECKING:
    from harvester.store.verify import JobProblem, VerifyReport

# Lines of per-job problems shown before "... and N more" (the JSON has them all).
SHOWN_JOBS = 20
EXIT_DAMAGED = 1
REPAIR_HINT = "run `harvester verify --repair`, then pull or sync"


@command("verify", read_only=True)
@store_option
@click.option(
    "--repair",
    is_flag=True,
    help="Move unreadable and stray files into the store's quarantine folder (never deleted) "
    "and set the affected jobs to be fetched again by the next pull or sync.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def verify_cmd(obj: CliState, store: Path | None, repair: bool, as_json: bool) -> None:
    """Check the store: every file its tables name exists and reads back (checksums), rows per
    job agree with the ledger, grain and format agree. Exit 0 clean, 1 damaged.

    \b
    Example:
      harvester verify
      harvester verify --repair && harvester pull
    """
    from harvester.analysis import check_store
    from harvester.store import Store

    root = obj.store_path(store)
    check_store(root, flag="--store" if store is not None else "store.path")
    report = Store(root).verify(repair=repair)
    click.echo(json.dumps(_jsonable(asdict(report)), indent=2) if as_json else render(report))
    if report.damaged:
        sys.exit(EXIT_DAMAGED)


def render(report: VerifyReport) -> str:
    """The report for people: a summary line, then one line per problem."""
    lines = [
        f"store: {report.path} ({report.grain or 'unknown'} windows) · "
        f"{report.files_checked:,} files checked"
    ]
    lines += [f"  {p.table} file {p.path}: {p.problem}" for p in report.files]
    lines += [f"  metadata: {m}" for m in report.metadata]
    lines += _jobs(report.jobs)
    lines += [f"  not part of any table (never read): {path}" for path in report.strays]
    if report.repaired is not None:
        done = report.repaired
        if done.moved:
            lines.append(f"repaired: {len(done.moved)} files moved into {done.folder}")
        lines.append(
            f"repaired: {done.refetch:,} jobs will be fetched again by the next pull or sync"
        )
    elif report.damaged:
        lines.append(f"damaged: {REPAIR_HINT}")
    else:
        lines.append("ok: every file reads and every job's rows agree with the ledger")
    return "\n".join(lines)


def _jobs(jobs: Sequence[JobProblem]) -> list[str]:
    lines = [f"  {j.phone} {j.period}: {j.problem}" for j in jobs[:SHOWN_JOBS]]
    if len(jobs) > SHOWN_JOBS:
        lines.append(f"  ... and {len(jobs) - SHOWN_JOBS:,} more jobs (--json lists all)")
    return lines


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat") or isinstance(value, Path):
        return str(value)
    return value
