"""Store integrity: find what a disk, a backup tool or a sync client broke, and heal it.

Why: the Delta log names every file a table's current version holds, and the ledger says how
many rows each job's visible fetch stored. A file deleted, truncated or garbled under the store
would otherwise go unnoticed (the ledger still says "done", so no pull fetches the job again), or
surface as an engine error naming no file. Three levels of checking, by cost:

* :func:`quick_problems` (every command): each file the tables name exists and has the size the
  log recorded (one ``stat`` per file, ~10 ms on 1,100 files). On object storage the same of
  the read cache's copies, made when an object is first read (a lost object gets none).
* :func:`find_damage` (after a read failed): the quick check, then every file read whole, so the
  one-line error names the file instead of the engine's message.
* :func:`verify_store` (``harvester verify``): every file read whole with Parquet page checksums
  verified (every file the harvester writes has them: :mod:`harvester.store.parquet_files`), its
  row count and column bounds against the log, rows per job against the ledger, the grain of
  every job, and the files in the tables' folders that are no part of any table (copies, stray
  Parquet, editor leftovers: never read, only listed). On object storage the read cache is
  dropped first, so the objects themselves are read, not copies made before a damage.

Repairing (``repair=True``, under the store's lock) never deletes a file: unreadable files and
strays are moved into ``<store>/quarantine/<UTC time>/`` (on object storage the same prefix below
the store's URL: :mod:`harvester.store.store_files`); the moved files' actions are removed from
their tables (Delta's FSCK, one commit); then every job whose rows disagree with its ledger
record loses both (one delete commit per table), so the next pull or sync fetches it again.
Problems name a file by its local path, or on object storage by its object's URL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import duckdb

from harvester.errors import StoreDamagedError
from harvester.jobs import Grain
from harvester.store import schema as s
from harvester.store.location import CACHE_DIR
from harvester.store.opening import drop_cached_reads
from harvester.store.store_files import key_of, move_aside, strays
from harvester.store.tables import FileInfo, Tables, in_list, sql_string

QUARANTINE_DIR = "quarantine"
# DuckDB's errors that a damaged or missing Parquet file raises; a bare duckdb.Error is its
# "don't know what type" on a garbled page. Others (a user's SQL error) are not about files.
_DAMAGE_ERRORS = (
    duckdb.IOException,
    duckdb.InvalidInputException,
    duckdb.InternalException,
    duckdb.SerializationException,
)
# Columns whose bounds the Delta log records and a flipped byte would move (strings and
# timestamps are left out: the log may truncate them).
_BOUNDED_TYPES = ("int32", "int64", "date32[day]")
# Jobs named per predicate in a repair's delete commits (delta-rs parses the predicate text).
_JOBS_PER_DELETE = 2_000


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A file a table's current version names that is missing or does not read back."""

    table: str
    path: str  # where it is: a local file, or an object's URL
    problem: str
    key: str = ""  # its place below the store, ``<table>/<path in the table>`` (what moves)


@dataclass(frozen=True, slots=True)
class JobProblem:
    """A job (number and period) whose stored rows disagree with its ledger record."""

    phone: str
    period: dt.date
    problem: str


@dataclass(frozen=True, slots=True)
class RepairResult:
    """What ``repair`` changed: files moved aside (where to: a folder, or a URL on object
    storage), jobs set to be fetched again."""

    folder: str | None
    moved: tuple[str, ...]
    refetch: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Everything :func:`verify_store` found; ``damaged`` decides the exit code."""

    path: str  # the store's folder, or its URL (redacted) on object storage
    grain: str | None
    files_checked: int = 0
    files: tuple[FileProblem, ...] = ()
    jobs: tuple[JobProblem, ...] = ()
    metadata: tuple[str, ...] = ()
    strays: tuple[str, ...] = ()
    repaired: RepairResult | None = field(default=None)

    @property
    def damaged(self) -> bool:
        """Something is wrong and not repaired (strays never change a result: not damage)."""
        if self.repaired is not None:
            return False
        return bool(self.files or self.jobs or self.metadata)


# -- the cheap check every command makes -----------------------------------------------------


def _local(info: FileInfo) -> bool:
    return "://" not in info.uri


def quick_problems(tables: Tables) -> list[FileProblem]:
    """Files the tables name that are missing or not of the size the log recorded (on object
    storage: their copies in the read cache, made when first read; a lost object has none)."""
    problems = []
    for kind in s.KINDS:
        for info in tables.file_infos(kind):
            problem = _stat_problem(info)
            if problem:
                problems.append(_problem(tables, kind, info, problem))
    return problems


def _problem(tables: Tables, kind: str, info: FileInfo, problem: str) -> FileProblem:
    """The problem named by the file's place: the local file, or on object storage the object
    (never the read cache's copy)."""
    key = f"{kind}/{unquote(info.path)}"
    url = tables.layout.url
    return FileProblem(kind, f"{url}/{key}" if url else info.uri, problem, key)


def _stat_problem(info: FileInfo) -> str | None:
    if not _local(info):
        return None
    try:
        size = os.stat(info.uri).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size != info.size:
        return f"{size:,} bytes where the table recorded {info.size:,} (truncated or replaced)"
    return None


def check_files(tables: Tables) -> None:
    """StoreDamagedError naming the first missing or truncated file (and how many there are)."""
    problems = lasting_problems(tables)
    if problems:
        raise _damaged(problems)


def lasting_problems(tables: Tables) -> list[FileProblem]:
    """:func:`quick_problems` of the tables' newest versions: a file a vacuum removed just after
    the listing (or after a read-only command cached the version) is not damage, so the tables
    are listed again once before anything is reported."""
    problems = quick_problems(tables)
    if problems:
        tables.forget()
        problems = quick_problems(tables)
    return problems


def _damaged(problems: list[FileProblem]) -> StoreDamagedError:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return StoreDamagedError(f"{first.path} is {first.problem}{more}", path=first.path)


# -- after a read failed -----------------------------------------------------------------------


def find_damage(tables: Tables) -> list[FileProblem]:
    """The files that are missing or do not read back, cheapest check first."""
    problems = quick_problems(tables)
    if problems:
        return problems
    for kind in (s.LEDGER_DIR, s.DATA_DIR, s.RAW_DIR):
        for info in tables.file_infos(kind):
            problem = read_problem(info)
            if problem:
                problems.append(_problem(tables, kind, info, problem))
        if problems:
            return problems
    return problems


@contextlib.contextmanager
def reading(tables: Tables) -> Iterator[None]:
    """Turn a read that failed on a damaged or missing file into StoreDamagedError naming it.

    Errors that are not about files (a user's SQL) and failures no file explains propagate.
    """
    try:
        yield
    except StoreDamagedError:
        raise
    except duckdb.Error as exc:
        if not (type(exc) is duckdb.Error or isinstance(exc, _DAMAGE_ERRORS)):
            raise
        drop_cached_reads()  # judge the newest version: a vacuum may have removed the file
        problems = find_damage(tables)
        if not problems:
            raise
        raise _damaged(problems) from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        drop_cached_reads()
        problems = find_damage(tables)
        if not problems:
            raise
        raise _damaged(problems) from exc


def read_problem(info: FileInfo, stats: dict[str, Any] | None = None) -> str | None:
    """Why the file does not read back as the log recorded it, or None.

    Every page is read (page checksums verified where the writer wrote them), the row count
    compared with the log's, and, given the log's ``stats`` (``min.<col>``/``max.<col>``), the
    bounds of integer and date columns.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(info.uri, page_checksum_verification=True)
        table = parquet.read()
    except (OSError, pa.ArrowException, ValueError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"unreadable ({text})"
    if table.num_rows != info.rows:
        return f"holding {table.num_rows:,} rows where the table recorded {info.rows:,}"
    for name in table.column_names if stats else ():
        low, high = (stats or {}).get(f"min.{name}"), (stats or {}).get(f"max.{name}")
        column = table.column(name)
        if low is None or high is None or str(column.type) not in _BOUNDED_TYPES:
            continue
        bounds = pc.min_max(column)
        if (bounds["min"].as_py(), bounds["max"].as_py()) != (low, high):
            return f"damaged (column {name} no longer holds the values the table recorded)"
    return None


# -- harvester verify ------------------------------------------------------------------------


def verify_store(
    tables: Tables,
    grain: Grain | None,
    *,
    repair: bool = False,
    lock: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
) -> VerifyReport:
    """Check the store of ``tables`` (see the module docstring); with ``repair``, heal it inside
    ``lock()`` (the store's lock: :meth:`harvester.store.Store.verify`) and say what was done."""
    from harvester.store.format import check_table_metadata, record_table_metadata

    layout = tables.layout
    if layout.url is not None:  # check the objects, not copies read before a damage
        shutil.rmtree(layout.root / CACHE_DIR, ignore_errors=True)
    if not repair or lock is None:
        return _check(layout, tables, grain, check_table_metadata(tables, grain))
    with lock():
        for kind in s.KINDS:  # files of removed versions a crashed run left: not strays
            if tables.exists(kind):
                tables.vacuum(kind)
        tables.forget()
        report = _check(layout, tables, grain, check_table_metadata(tables, grain))
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = f"{layout.url or layout.root}/{QUARANTINE_DIR}/{stamp}"
        moved = _move_aside(layout, tables, report, f"{QUARANTINE_DIR}/{stamp}")
        tables.forget()
        refetch = _forget_jobs(tables, grain)
        if grain is not None:
            record_table_metadata(tables, grain)
        for kind in s.KINDS:
            if tables.exists(kind):
                tables.vacuum(kind)
        tables.forget()
    result = RepairResult(folder if moved else None, tuple(moved), refetch)
    return _replace_repaired(report, result)


def _replace_repaired(report: VerifyReport, result: RepairResult) -> VerifyReport:
    return VerifyReport(
        report.path,
        report.grain,
        report.files_checked,
        report.files,
        report.jobs,
        report.metadata,
        report.strays,
        result,
    )


def _check(layout: s.Layout, tables: Tables, grain: Grain | None, meta: list[str]) -> VerifyReport:
    files: list[FileProblem] = []
    good: dict[str, list[str]] = {}
    checked = 0
    for kind in s.KINDS:
        good[kind] = []
        for info, stats in _infos_with_stats(tables, kind):
            checked += 1
            problem = _stat_problem(info) or read_problem(info, stats)
            if problem:
                files.append(_problem(tables, kind, info, problem))
            else:
                good[kind].append(info.uri)
    jobs = [JobProblem(*row) for row in _job_problems(good, grain)]
    return VerifyReport(
        path=layout.name,
        grain=grain.value if grain else None,
        files_checked=checked,
        files=tuple(files),
        jobs=tuple(jobs),
        metadata=tuple(meta),
        strays=tuple(strays(layout, {kind: tables.active_paths(kind) for kind in s.KINDS})),
    )


def _infos_with_stats(tables: Tables, kind: str) -> list[tuple[FileInfo, dict[str, Any]]]:
    """The table's files with the column bounds its log recorded for each."""
    import pyarrow as pa

    infos = tables.file_infos(kind)
    table = tables.open(kind)
    if table is None or not infos:
        return [(info, {}) for info in infos]
    actions = pa.table(table.get_add_actions(flatten=True))
    bounds = [c for c in actions.column_names if c.startswith(("min.", "max."))]
    by_path = {
        path: {c: actions.column(c)[i].as_py() for c in bounds}
        for i, path in enumerate(actions.column("path").to_pylist())
    }
    return [(info, by_path.get(info.path, {})) for info in infos]


# Per job: rows stored (readable files only) against the latest done ledger record; the grain.
_JOBS_SQL = (
    """
WITH d AS (
    SELECT phone, period, count(*) AS n, min(fetch_id) AS f1, max(fetch_id) AS f2
    FROM {data} GROUP BY phone, period
), l AS (
    SELECT phone, period, rows, fetch_id FROM {ledger} WHERE state = 'done'
    """
    + s.LATEST_RECORD_SQL
    + """
)
SELECT phone, period,
       CASE WHEN l.rows IS NULL THEN format('{{}} rows stored but no done fetch in the ledger', d.n)
            WHEN coalesce(d.n, 0) <> l.rows
                THEN format('{{}} rows stored where the ledger recorded {{}}', coalesce(d.n, 0),
                            l.rows)
            ELSE 'rows of another fetch than the ledger''s' END
FROM d FULL JOIN l USING (phone, period)
WHERE l.rows IS NULL OR coalesce(d.n, 0) <> l.rows
   OR (d.n > 0 AND (d.f1 <> d.f2 OR d.f1 <> l.fetch_id))
UNION ALL
SELECT DISTINCT phone, period, 'a period that is not a {grain} of this store'
FROM {ledger} WHERE {off_grain}
ORDER BY phone, period
"""
)

_OFF_GRAIN = {
    Grain.DAY: "false",
    Grain.WEEK: "period <> date_trunc('week', period)",
    Grain.MONTH: "period <> date_trunc('month', period)",
}


def _job_problems(good: dict[str, list[str]], grain: Grain | None) -> list[tuple[Any, ...]]:
    from harvester.store.views import empty_select, new_connection, parquet_source

    def source(kind: str) -> str:
        files = good[kind]
        return f"({'SELECT * FROM ' + parquet_source(files) if files else empty_select(kind)})"

    sql = _JOBS_SQL.format(
        data=source(s.DATA_DIR),
        ledger=source(s.LEDGER_DIR),
        grain=(grain or Grain.DAY).value,
        off_grain=_OFF_GRAIN[grain or Grain.DAY],
    )
    con = new_connection(ordered=False)
    try:
        return [tuple(row) for row in con.execute(sql).fetchall()]
    finally:
        con.close()


# -- repairing ---------------------------------------------------------------------------------


def _move_aside(layout: s.Layout, tables: Tables, report: VerifyReport, aside: str) -> list[str]:
    """Move unreadable files and strays to ``aside`` below the store (keeping their place below
    it: ``quarantine/<time>/data/month=.../part-...``) and remove the moved or missing files'
    actions from their tables. Returns where each went."""
    keys = [p.key for p in report.files] + [key_of(layout, path) for path in report.strays]
    moved = move_aside(layout, keys, aside)
    from harvester.store.tables import _commit

    for kind in sorted({p.table for p in report.files}):
        table = tables.open(kind)
        if table is not None:
            table.repair(dry_run=False, commit_properties=_commit(None, "verify-repair"))
    return moved


def _forget_jobs(tables: Tables, grain: Grain | None) -> int:
    """Delete the rows and ledger records of every job whose rows disagree with its ledger
    record (the files are all readable now): those jobs are fetched again by the next run."""
    good = {kind: tables.files(kind) for kind in s.KINDS}
    jobs = sorted({(phone, period) for phone, period, _ in _job_problems(good, grain)})
    if not jobs:
        return 0
    batch = tables.highest_batch() + 1
    for start in range(0, len(jobs), _JOBS_PER_DELETE):
        chunk = jobs[start : start + _JOBS_PER_DELETE]
        keys = [s.job_key(phone, period) for phone, period in chunk]
        tables.delete(s.DATA_DIR, in_list("job_key", keys), batch, "verify-repair")
        per_phone: dict[str, list[str]] = {}
        for phone, period in chunk:
            per_phone.setdefault(phone, []).append(period.isoformat())
        predicate = " OR ".join(
            f"(phone = {sql_string(phone)} AND {in_list('period', periods)})"
            for phone, periods in per_phone.items()
        )
        tables.delete(s.LEDGER_DIR, predicate, batch, "verify-repair")
    return len(jobs)
