"""``harvester status``: the store's content for people (a table) and for scripts (``--json``).

The numbers come from :meth:`harvester.store.Store.status` (ledger only, fast on big stores);
``--gaps`` adds, per phone, the missing days inside its covered span and its failed jobs, both
as date ranges, so a user sees at a glance what ``pull --retry-failed`` would re-run.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harvester.errors import StoreError
from harvester.jobs import period_end
from harvester.store import JobIndex, Store, StoreStatus, open_index

DateRange = tuple[dt.date, dt.date]
# Wide enough for the table's eight columns without wrapping in a cron mail.
RENDER_WIDTH = 120


def render_status(root: Path, *, gaps: bool, as_json: bool) -> str:
    """The status of the store at ``root`` as text or JSON."""
    if not root.exists():
        raise StoreError(f"--store: {root} does not exist (nothing harvested yet?)")
    if not root.is_dir():
        raise StoreError(f"--store: {root} is not a folder")
    status = Store(root).status()
    failed = failed_ranges(open_index(root)) if gaps or as_json else {}
    if as_json:
        data = status.to_dict()
        data["failed_ranges"] = {
            phone: [[a.isoformat(), b.isoformat()] for a, b in ranges]
            for phone, ranges in failed.items()
        }
        return json.dumps(data, indent=2)
    return _text(status, failed if gaps else None)


def failed_ranges(index: JobIndex) -> dict[str, list[DateRange]]:
    """Each phone's failed jobs, merged into day ranges by their windows."""
    per_phone: dict[str, list[DateRange]] = defaultdict(list)
    for phone, period in index:
        if index.state((phone, period)) == "failed":
            per_phone[phone].append((period, period_end(period, index.grain)))
    return {phone: merge_ranges(ranges) for phone, ranges in sorted(per_phone.items())}


def merge_ranges(ranges: Iterable[DateRange]) -> list[DateRange]:
    """Merge overlapping or adjacent day ranges."""
    merged: list[DateRange] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + dt.timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


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


def _text(status: StoreStatus, failed: dict[str, list[DateRange]] | None) -> str:
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
