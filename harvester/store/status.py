"""What a store holds, from its ledger alone: ``harvester status`` and ``Store.status()``.

Why only the ledger: a ledger record carries the row count of its fetch, so rows, coverage and
gaps never need the data files (10 M rows), only ~550,000 small records read once into a DuckDB
temp table; files and bytes come from each table's current version (its Delta log). That keeps
status well under 2 s on a store of that size while a pull writes.

Counting rules: a job counts as done or failed by its *latest* record; rows, coverage and gaps
count the *visible* fetch (latest done record), so a job whose re-fetch failed still covers its
days. Gaps are the day ranges inside a phone's covered span that no visible fetch covers; gaps
against a plan (days never planned or not yet fetched) are the plan's business:
:meth:`Store.job_index` answers per job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from harvester.store import schema as s
from harvester.store.lock import LockHolder, read_lock
from harvester.store.tables import FileInfo, Tables
from harvester.store.views import empty_select, new_connection, parquet_source, retry_read

_LATEST = s.LATEST_RECORD_SQL


@dataclass(frozen=True, slots=True)
class PhoneStatus:
    """One phone's (or ``ALL``'s) share of the store."""

    phone: str
    jobs_done: int
    jobs_failed: int
    rows: int
    first_day: dt.date | None
    last_day: dt.date | None
    gaps: tuple[tuple[dt.date, dt.date], ...]
    last_fetched_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The last run that recorded jobs (by when its records were written)."""

    run_id: str
    first_fetched_at: dt.datetime
    last_fetched_at: dt.datetime
    jobs: int


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """A store's content in numbers; ``files``/``bytes`` are keyed data, raw, ledger.

    ``path`` names the store as the user gave it: its folder, or the URL of a store on object
    storage (redacted), never that store's local companion folder."""

    path: str
    grain: str | None
    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_quarantined: int = 0
    rows: int = 0
    phones: tuple[PhoneStatus, ...] = ()
    files: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    last_run: RunInfo | None = None
    locked_by: LockHolder | None = None
    needs_compaction: bool = False
    # files the tables name that are missing or truncated: `harvester verify` says more
    unreadable: int = 0
    # done jobs per provenance kind (request economy: fetched, empty, derived, unchanged)
    provenance: dict[str, int] = field(default_factory=dict)

    @property
    def gap_days(self) -> int:
        return sum((end - start).days + 1 for p in self.phones for start, end in p.gaps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (dates and datetimes as ISO strings, paths as strings)."""
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


_PER_PHONE = """
WITH latest AS (
    SELECT phone, count(*) FILTER (WHERE state = 'done') AS done,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'failed' AND quarantined) AS quarantined
    FROM latest_records
    GROUP BY phone
), visible AS (
    SELECT phone, CAST(sum(rows) AS BIGINT) AS rows, min(window_start) AS first_day,
           max(window_end) AS last_day, max(fetched_at) AS last_fetched_at,
           CAST(sum(window_end - window_start + 1) AS BIGINT) AS covered_days
    FROM visible_records GROUP BY phone
)
SELECT latest.phone, done, failed, quarantined, coalesce(rows, 0), first_day, last_day,
       last_fetched_at, coalesce(covered_days < last_day - first_day + 1, false) AS has_gaps
FROM latest LEFT JOIN visible USING (phone)
ORDER BY latest.phone
"""

# Gaps and islands, only for phones whose covered days fall short of their span (usually none:
# the sort this needs is the most expensive step of status). A job's window lies inside its
# period and periods do not overlap, so consecutive windows in start order are enough: a gap
# opens wherever a window starts more than a day after the previous one ended.
_GAPS = """
SELECT phone, prev_end + 1 AS gap_start, window_start - 1 AS gap_end
FROM (
    SELECT phone, window_start,
           lag(window_end) OVER (PARTITION BY phone ORDER BY window_start) AS prev_end
    FROM visible_records
    WHERE phone IN (SELECT unnest(?))
)
WHERE window_start > prev_end + 1
ORDER BY phone, gap_start
"""

_LAST_RUN = """
SELECT run_id, min(fetched_at), max(fetched_at), count(*)
FROM l GROUP BY run_id ORDER BY max(recorded_at) DESC, max(seq) DESC LIMIT 1
"""


def store_status(
    tables: Tables,
    grain: str | None,
    infos: dict[str, list[FileInfo]],
    *,
    needs_compaction: bool,
    unreadable: int = 0,
) -> StoreStatus:
    """Read the ledger once into a temp table and answer everything from it."""
    layout = tables.layout
    files = {kind: len(infos[kind]) for kind in s.KINDS}
    sizes = {kind: sum(info.size for info in infos[kind]) for kind in s.KINDS}
    con = new_connection(ordered=False)
    try:
        retry_read(lambda: _materialise(con, tables.files(s.LEDGER_DIR)))
        phones_raw = con.execute(_PER_PHONE).fetchall()
        gaps: dict[str, list[tuple[dt.date, dt.date]]] = {}
        short = [row[0] for row in phones_raw if row[8]]
        if short:
            for phone, start, end in con.execute(_GAPS, [short]).fetchall():
                gaps.setdefault(phone, []).append((start, end))
        runs = con.execute(_LAST_RUN).fetchall()
        kinds = con.execute(_PROVENANCE).fetchall()
    finally:
        con.close()
    phones = tuple(
        PhoneStatus(
            phone=phone,
            jobs_done=int(done),
            jobs_failed=int(failed),
            rows=int(rows),
            first_day=first,
            last_day=last_day,
            gaps=tuple(gaps.get(phone, ())),
            last_fetched_at=fetched,
        )
        for phone, done, failed, _, rows, first, last_day, fetched, _ in phones_raw
    )
    return StoreStatus(
        path=layout.name,
        grain=grain,
        jobs_done=sum(p.jobs_done for p in phones),
        jobs_failed=sum(p.jobs_failed for p in phones),
        jobs_quarantined=sum(int(row[3]) for row in phones_raw),
        rows=sum(p.rows for p in phones),
        phones=phones,
        files=files,
        bytes=sizes,
        last_run=RunInfo(runs[0][0], runs[0][1], runs[0][2], int(runs[0][3])) if runs else None,
        locked_by=read_lock(layout.lock_file),
        needs_compaction=needs_compaction,
        unreadable=unreadable,
        provenance={str(kind): int(n) for kind, n in kinds},
    )


_PROVENANCE = "SELECT provenance, count(*) FROM visible_records GROUP BY 1 ORDER BY 2 DESC"


def _materialise(con: duckdb.DuckDBPyConnection, ledger: list[str]) -> None:
    """Temp table ``l`` (the columns status needs of every record) and two views over it.

    ``latest_records`` (one per job) and ``visible_records`` (latest done per job) need a
    per-job sort only when some job has several records; a freshly compacted store, or a pull
    that re-fetched nothing, has one per job and skips it.
    """
    source = f"SELECT * FROM {parquet_source(ledger)}" if ledger else empty_select(s.LEDGER_DIR)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE l AS
        SELECT phone, period, seq, state, quarantined, rows, fetched_at, window_start,
               window_end, run_id, recorded_at, coalesce(provenance, 'fetched') AS provenance
        FROM ({source})
        """
    )
    records, jobs = con.execute(
        "SELECT count(*), count(DISTINCT (phone, period)) FROM l"
    ).fetchall()[0]
    if records == jobs:
        con.execute("CREATE OR REPLACE TEMP VIEW latest_records AS SELECT * FROM l")
        con.execute(
            "CREATE OR REPLACE TEMP VIEW visible_records AS SELECT * FROM l WHERE state = 'done'"
        )
        return
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE latest_records AS SELECT * FROM l {_LATEST};
        CREATE OR REPLACE TEMP TABLE visible_records AS
            SELECT * FROM l WHERE state = 'done' {_LATEST};
        """
    )
