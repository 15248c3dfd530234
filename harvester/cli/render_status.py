"""``harvester status``'s output: the store's content for people (a table) and for scripts
(``--json``).

The data comes from :func:`harvester.gaps.status_with_gaps`: the numbers of
:meth:`harvester.store.Store.status` (ledger only, fast on big stores) and, for ``--gaps`` and
``--json``, each phone's failed jobs as date ranges; ``--gaps`` lists them beside the missing
days inside each phone's covered span.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harvester.gaps import DateRange, status_with_gaps
from harvester.store import StoreStatus
from harvester.store.provenance import load_economy

# Wide enough for the table's eight columns without wrapping in a cron mail.
RENDER_WIDTH = 120


def render_status(root: Path, *, gaps: bool, as_json: bool) -> str:
    """The status of the store at ``root`` as text or JSON."""
    found = status_with_gaps(root, with_failed=gaps or as_json, flag="--store")
    if as_json:
        return json.dumps(found.to_dict(), indent=2)
    return _text(found.status, found.failed if gaps else None, load_economy(root))


def _fmt_ranges(ranges: Iterable[DateRange]) -> str:
    parts = [f"{a}" if a == b else f"{a}..{b}" for a, b in ranges]
    return ", ".join(parts) if parts else "none"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


def _text(
    status: StoreStatus, failed: dict[str, list[DateRange]] | None, economy: dict[str, Any]
) -> str:
    out = io.StringIO()
    console = Console(file=out, width=RENDER_WIDTH, no_color=True, highlight=False)
    grain = status.grain or "unknown"
    console.print(
        f"store: {status.path} ({grain} windows) · {status.jobs_done:,} jobs done, "
        f"{status.jobs_failed:,} failed, {status.jobs_quarantined:,} quarantined replies · "
        f"{status.rows:,} rows"
    )
    files = ", ".join(
        f"{kind} {status.files.get(kind, 0)} ({_size(status.bytes.get(kind, 0))})"
        for kind in ("data", "raw", "ledger")
    )
    advice = " · compaction advised (harvester compact)" if status.needs_compaction else ""
    console.print(f"files: {files}{advice}")
    if status.unreadable:
        console.print(
            f"needs verifying: {status.unreadable:,} files the tables name are missing or "
            "damaged: run `harvester verify --repair`"
        )
    if status.provenance:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in status.provenance.items())
        console.print(f"days by provenance: {kinds}")
    if economy.get("derive") is False:
        console.print(f"request economy: derivation off ({economy.get('mismatch', 'mismatch')})")
    if status.last_run is not None:
        run = status.last_run
        console.print(
            f"last run: {run.run_id}, {run.jobs:,} jobs recorded, "
            f"last at {run.last_fetched_at:%Y-%m-%d %H:%M:%S %Z}"
        )
    if status.locked_by is not None:
        console.print(f"in use: {status.locked_by} (a pull or sync is running)")
    if not status.phones:
        console.print("no jobs recorded yet")
        return out.getvalue()
    table = Table(box=None, pad_edge=False)
    for name in ("phone", "done", "failed", "rows", "first day", "last day", "gap days"):
        table.add_column(name, justify="right" if name in ("done", "failed", "rows") else "left")
    for p in status.phones:
        gap_days = sum((b - a).days + 1 for a, b in p.gaps)
        table.add_row(
            p.phone,
            f"{p.jobs_done:,}",
            f"{p.jobs_failed:,}",
            f"{p.rows:,}",
            str(p.first_day or "-"),
            str(p.last_day or "-"),
            str(gap_days),
        )
    console.print(table)
    if failed is not None:
        console.print("gaps (missing days inside each phone's span) and failed jobs:")
        for p in status.phones:
            console.print(
                f"  {p.phone}: missing {_fmt_ranges(p.gaps)}; "
                f"failed {_fmt_ranges(failed.get(p.phone, []))}"
            )
    return out.getvalue()
