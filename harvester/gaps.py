"""What a store is missing: each phone's failed jobs as day ranges, beside the store's status.

The numbers of :meth:`harvester.store.Store.status` (ledger only, fast on big stores) say how
many jobs failed; ``status --gaps`` and ``status --json`` also say *which*, per phone, merged
into date ranges, so a user sees at a glance what ``pull --retry-failed`` would re-run. The
missing days inside each phone's covered span are already in the status (``PhoneStatus.gaps``).
Rendering is the CLI's (:mod:`harvester.cli.render_status`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvester.analysis import check_store
from harvester.jobs import period_end
from harvester.store import JobIndex, Store, StoreStatus, open_index

DateRange = tuple[dt.date, dt.date]


@dataclass(frozen=True)
class StatusWithGaps:
    """A store's status and, when asked for, each phone's failed jobs as merged day ranges."""

    status: StoreStatus
    failed: dict[str, list[DateRange]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the status's fields plus ``failed_ranges`` (ISO days)."""
        data = self.status.to_dict()
        data["failed_ranges"] = {
            phone: [[a.isoformat(), b.isoformat()] for a, b in ranges]
            for phone, ranges in self.failed.items()
        }
        return data


def status_with_gaps(root: Path, *, with_failed: bool, flag: str = "store") -> StatusWithGaps:
    """The status of the store at ``root``; ``with_failed`` also reads each failed job's window
    (a pass over the job index). A StoreError naming ``root`` as ``flag`` if it is no store."""
    check_store(root, flag=flag)
    status = Store(root).status()
    failed = failed_ranges(open_index(root)) if with_failed else {}
    return StatusWithGaps(status, failed)


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
