"""What a store knows for request economy (issue 14): its state in ``store.json`` and the
provenance of its days in the ledger.

Why it exists: the run that plans by range arithmetic needs, per store, whether derivation is
still trusted and the longest range the server accepted (kept in ``store.json`` under
``economy``, on object storage in the companion folder's ``economy.json``, so a mismatch or a
refused range is remembered by every later run), and, from the
ledger, each number's share of non-empty days (its density), the days proven by additivity
(fetched again once derivation is off) and the stored rows of a sync's lookback days. The store
stays ignorant of HTTP and of the planner: all of this is plain values.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvester.errors import StoreError
from harvester.store import schema as s
from harvester.store.views import connect_base, retry_read

ECONOMY_KEY = "economy"  # the key of store.json that holds the economy state
# A store on object storage keeps it in its local companion folder, beside its quota state
# (harvester.store.location): per machine, and a mismatch found on another machine is found
# again here by the same check.
ECONOMY_FILE = "economy.json"
# Provenance kinds as the ledger spells them (harvester.economy.Kind's values; NULL: fetched).
KINDS = ("fetched", "empty", "derived", "unchanged")
BY_ADDITIVITY = ("derived", "unchanged")
_ROW_COLUMNS = (
    "application, page, form, item, visits, filled, nomatch, noinput, transfer, disconnect"
)


def _economy_file(root: Path) -> tuple[Path, bool]:
    """The file holding the economy state, and whether it is the companion folder's own."""
    layout = s.Layout(root)
    if layout.url is None:
        return layout.store_file, False
    return layout.root / ECONOMY_FILE, True


def load_economy(root: Path) -> dict[str, Any]:
    """The ``economy`` object of ``store.json`` (empty: nothing learnt yet)."""
    path, _ = _economy_file(root)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    state = info.get(ECONOMY_KEY) if isinstance(info, dict) else None
    return dict(state) if isinstance(state, dict) else {}


def save_economy(root: Path, state: Mapping[str, object]) -> None:
    """Merge ``state`` into ``store.json``'s ``economy`` object, atomically (under the lock)."""
    from harvester.store.files import fsync_dir, temp_path

    path, companion = _economy_file(root)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        if not companion:
            raise StoreError(f"{path} is unreadable: {exc}") from None
        info = {}  # nothing learnt yet on this machine
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is unreadable: {exc}") from None
    info[ECONOMY_KEY] = {**info.get(ECONOMY_KEY, {}), **state}
    tmp = temp_path(path)
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True)
class History:
    """Per phone: the share of its done days that held rows, and the days whose visible rows
    were proven by additivity (derived, or confirmed unchanged by a range)."""

    density: dict[str, float] = field(default_factory=dict)
    by_additivity: dict[str, set[dt.date]] = field(default_factory=dict)


def history(root: Path) -> History:
    """What the ledger says of every phone's days (empty for a store without records)."""
    query = f"""
        SELECT phone, period, rows, coalesce(provenance, 'fetched') IN {BY_ADDITIVITY}
        FROM ledger_current
    """
    rows = _read(root, query)
    days: dict[str, int] = defaultdict(int)
    busy: dict[str, int] = defaultdict(int)
    derived: dict[str, set[dt.date]] = defaultdict(set)
    for phone, period, count, additive in rows:
        days[phone] += 1
        busy[phone] += count > 0
        if additive:
            derived[phone].add(period)
    return History({p: busy[p] / n for p, n in days.items()}, dict(derived))


def provenance_counts(root: Path) -> dict[str, int]:
    """Done jobs per provenance kind (a record without one was fetched)."""
    query = """
        SELECT coalesce(provenance, 'fetched'), count(*) FROM ledger_current GROUP BY 1
    """
    return {kind: int(n) for kind, n in _read(root, query)}


def stored_day_rows(
    root: Path, keys: Iterable[tuple[str, dt.date]]
) -> dict[tuple[str, dt.date], list[tuple[Any, ...]]]:
    """The visible rows of the given (phone, day) jobs, in item column order."""
    wanted = set(keys)
    out: dict[tuple[str, dt.date], list[tuple[Any, ...]]] = {k: [] for k in wanted}
    if not wanted:
        return out
    first, last = min(d for _, d in wanted), max(d for _, d in wanted)
    query = f"""
        SELECT phone, period, {_ROW_COLUMNS} FROM flow_files
        WHERE period BETWEEN DATE '{first.isoformat()}' AND DATE '{last.isoformat()}'
    """
    for row in _read(root, query):
        key = (row[0], row[1])
        if key in out:
            out[key].append(tuple(row[2:]))
    return out


def _read(root: Path, query: str) -> list[tuple[Any, ...]]:
    if not (Path(root) / s.LEDGER_DIR).is_dir():
        return []
    con = connect_base(root)
    try:
        return retry_read(lambda: con.execute(query).fetchall())
    finally:
        con.close()
