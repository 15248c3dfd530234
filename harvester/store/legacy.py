"""Converting a store of the older layout (format version 1) into Delta Lake tables, in place.

Format 1 kept Parquet part files of its own (``data/month=*/part-<batch>.parquet``,
``raw/month=*/...``, ``ledger/part-<batch>.parquet``) and a ledger that decided which rows were
visible: a data row counted iff its ``(fetch_id, batch_id)`` was its job's latest done record.
The conversion:

1. takes the store's lock and copies the whole folder to a sibling backup
   (``<name>.format1-backup-<UTC time>``), which it never touches again;
2. reads the visible rows, every ledger record and every raw body from the backup;
3. replaces the three folders by Delta tables holding exactly those: the data table gets the
   visible rows only (plus ``job_key``), the ledger gets ``rejected`` (format 1 derived it from
   the HTTP status at read time: 400, 404 and 405 were failures a retry would not change);
4. checks that the data table holds the same rows as before (count and an order-free checksum),
   then writes ``store.json`` with the new format version: the commit point. A failure before it
   leaves the backup and a store that still says format 1, so the command can simply be re-run.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from harvester.errors import StoreError
from harvester.jobs import Grain
from harvester.store import schema as s
from harvester.store.compact import _cast, _stream
from harvester.store.format import store_info, table_properties
from harvester.store.lock import hold_lock
from harvester.store.tables import Tables
from harvester.store.views import glob_escape, new_connection, sql_literal

# Failures format 1 read as "rejected" (a retry gets the same answer): its rule, kept here only to
# carry old records over; the current store is told the failure kind by its caller.
LEGACY_REJECTED_STATUSES = (400, 404, 405)
BACKUP_SUFFIX = ".format1-backup-"


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What a migration converted, and where the untouched copy of the old store is."""

    backup: Path
    rows: int
    ledger_records: int
    raw_bodies: int

    def __str__(self) -> str:
        return (
            f"migrated to format {s.FORMAT_VERSION}: {self.rows:,} rows, "
            f"{self.ledger_records:,} ledger records, {self.raw_bodies:,} raw bodies; "
            f"the old store is kept in {self.backup}"
        )


def _files(folder: Path, partitioned: bool) -> list[str]:
    pattern = "month=*/part-*.parquet" if partitioned else "part-*.parquet"
    return sorted(str(p) for p in folder.glob(pattern) if not p.name.startswith("."))


def _source(files: list[str]) -> str:
    listed = ", ".join(sql_literal(glob_escape(f)) for f in files)
    return f"read_parquet([{listed}], hive_partitioning = false)"


_VISIBLE = f"""
SELECT phone, period, window_start, window_end, application, page, form, item,
       visits, filled, nomatch, noinput, transfer, disconnect, fetched_at,
       fetch_id, {s.JOB_KEY_SQL} AS job_key, {s.MONTH_SQL} AS month
FROM {{data}} AS f
SEMI JOIN (SELECT * FROM {{ledger}} WHERE state = 'done' {s.LATEST_RECORD_SQL}) AS l
    ON f.fetch_id = l.fetch_id AND f.batch_id = l.batch_id
    AND f.phone = l.phone AND f.period = l.period
"""

_LEDGER = """
SELECT phone, period, seq, state,
       state = 'failed' AND coalesce(http_status IN ({rejected}), false) AS rejected,
       reason, quarantined, attempts, prior_attempts, rows, http_status, fetched_at, as_of,
       fetch_id, batch_id, window_start, window_end, complete, run_id, request_path,
       harvester_version, recorded_at
FROM {ledger}
ORDER BY seq
"""

_RAW = """
SELECT phone, period, window_start, window_end, request_path, http_status, fetched_at, valid,
       quarantined, reason, body, fetch_id, batch_id, run_id, harvester_version,
       strftime(window_start, '%Y-%m') AS month
FROM {raw}
"""

# An order-free fingerprint of the rows the views show (the contract's columns).
_CHECKSUM = """
SELECT count(*), coalesce(sum(hash(phone, window_start, window_end, application, page, form,
                                   item, visits, filled, nomatch, noinput, transfer, disconnect,
                                   fetched_at)), 0)
FROM ({rows})
"""


def migrate_store(root: Path) -> MigrationResult:
    """Convert the format-1 store at ``root`` in place (see the module's docstring)."""
    layout = s.Layout(root)
    if layout.url is not None:
        # format 1 was only ever written to a local folder
        raise StoreError(
            f"migrate: {layout.name} is on object storage, where only the current format is "
            "written: nothing to convert (migrate a local store, then upload it)"
        )
    if not layout.root.is_dir():
        raise StoreError(f"migrate: {layout.root} is not a store folder")
    info = _legacy_info(layout)
    with hold_lock(layout.lock_file, f"migrate-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"):
        backup = _earlier_backup(layout)  # an attempt that stopped after replacing the tables
        if backup is None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            backup = layout.root.with_name(f"{layout.root.name}{BACKUP_SUFFIX}{stamp}")
            if backup.exists():
                raise StoreError(f"migrate: the backup folder {backup} exists already")
            try:
                shutil.copytree(layout.root, backup, ignore=shutil.ignore_patterns(s.LOCK_FILE))
            except OSError as exc:
                raise StoreError(
                    f"migrate: cannot back up {layout.root} to {backup}: {exc}"
                ) from None
        return _convert(layout, s.Layout(backup), backup, info)


def _earlier_backup(layout: s.Layout) -> Path | None:
    """The newest backup of an attempt that already replaced some table (then the store's own
    folders are no longer the old layout and the backup is the source), else None."""
    folders = (layout.data, layout.raw, layout.ledger)
    if not any((folder / "_delta_log").is_dir() for folder in folders):
        return None
    backups = sorted(layout.root.parent.glob(f"{glob.escape(layout.root.name)}{BACKUP_SUFFIX}*"))
    if not backups:
        raise StoreError(
            f"migrate: {layout.root} is half converted and no backup of it was found next to it"
        )
    return backups[-1]


def _legacy_info(layout: s.Layout) -> dict[str, object]:
    try:
        info = json.loads(layout.store_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"migrate: {layout.root} holds no {s.STORE_FILE}: not a store") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"migrate: {layout.store_file} is unreadable: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != s.FORMAT_NAME:
        raise StoreError(f"migrate: {layout.store_file} is not a harvester store file")
    version = info.get("format_version")
    if version == s.FORMAT_VERSION:
        raise StoreError(
            f"migrate: {layout.root} is already in format {s.FORMAT_VERSION}: nothing to do"
        )
    if version != s.LEGACY_FORMAT_VERSION:
        raise StoreError(
            f"migrate: {layout.store_file} has format version {json.dumps(version)}; this "
            f"harvester converts version {s.LEGACY_FORMAT_VERSION} only"
        )
    if info.get("grain") not in {g.value for g in Grain}:
        raise StoreError(f"migrate: {layout.store_file} names no valid grain")
    return info


def _convert(
    layout: s.Layout, old: s.Layout, backup: Path, info: dict[str, object]
) -> MigrationResult:
    data, raw, ledger = _files(old.data, True), _files(old.raw, True), _files(old.ledger, False)
    con = new_connection(ordered=False)
    try:
        tables = _tables_sql(con, data, raw, ledger)
        before = _checksum(con, "SELECT * FROM old_visible")
        for folder in (layout.data, layout.raw, layout.ledger):
            shutil.rmtree(folder, ignore_errors=True)
        store = Tables(layout)
        # the grain and format in each table, as a new store's tables hold them (verify checks)
        grain = Grain(str(info["grain"]))
        store.create_missing(table_properties(grain), json.dumps(store_info(grain)))
        batch = _highest_batch(con)
        counts = {}
        for kind, relation in tables.items():
            counts[kind] = int(con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0])
            rows = _cast(_stream(con, f"SELECT * FROM {relation}"), s.SCHEMAS[kind]())
            store.append(kind, rows, batch)
        after = _checksum(con, _read_back(store))
    finally:
        con.close()
    if after != before:
        raise StoreError(
            f"migrate: the converted data of {layout.root} differs from the old store "
            f"({before[0]} rows before, {after[0]} after); the old store is in {backup}, "
            "untouched, and this store still says format 1: re-run `harvester migrate`"
        )
    _write_format(layout, info)
    return MigrationResult(backup, counts[s.DATA_DIR], counts[s.LEDGER_DIR], counts[s.RAW_DIR])


def _tables_sql(
    con: duckdb.DuckDBPyConnection, data: list[str], raw: list[str], ledger: list[str]
) -> dict[str, str]:
    """Temp tables ``old_visible``, ``old_ledger``, ``old_raw`` read from the backup."""
    from harvester.store.views import empty_select

    def source(files: list[str], kind: str, extra: str = "") -> str:
        if files:
            return _source(files)
        return f"({empty_select(kind)}{extra})"

    old_ledger = source(ledger, s.LEDGER_DIR)
    old_data = (
        _source(data)
        if data
        else f"(SELECT *, CAST(NULL AS BIGINT) AS batch_id FROM ({empty_select(s.DATA_DIR)}))"
    )
    con.execute(f"CREATE TEMP TABLE old_ledger_files AS SELECT * FROM {old_ledger}")
    con.execute(
        "CREATE TEMP TABLE old_visible AS "
        + _VISIBLE.format(data=old_data, ledger="old_ledger_files")
    )
    rejected = ", ".join(map(str, LEGACY_REJECTED_STATUSES))
    has_rejected = "rejected" in [
        row[0] for row in con.execute("DESCRIBE old_ledger_files").fetchall()
    ]
    ledger_sql = (
        "SELECT * FROM old_ledger_files ORDER BY seq"
        if has_rejected
        else _LEDGER.format(rejected=rejected, ledger="old_ledger_files")
    )
    con.execute(f"CREATE TEMP TABLE old_ledger AS {ledger_sql}")
    raw_source = _source(raw) if raw else f"({empty_select(s.RAW_DIR)})"
    con.execute("CREATE TEMP TABLE old_raw AS " + _RAW.format(raw=raw_source))
    return {s.DATA_DIR: "old_visible", s.RAW_DIR: "old_raw", s.LEDGER_DIR: "old_ledger"}


def _highest_batch(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute(
        "SELECT greatest((SELECT coalesce(max(batch_id), 0) FROM old_ledger), "
        "(SELECT coalesce(max(batch_id), 0) FROM old_raw))"
    ).fetchall()
    return int(rows[0][0]) + 1


def _read_back(tables: Tables) -> str:
    files = tables.files(s.DATA_DIR)
    if not files:
        return "SELECT * FROM old_visible WHERE false"
    return f"SELECT * FROM {_source(files)}"


def _checksum(con: duckdb.DuckDBPyConnection, rows: str) -> tuple[int, int]:
    count, total = con.execute(_CHECKSUM.format(rows=rows)).fetchall()[0]
    return int(count), int(total)


def _write_format(layout: s.Layout, info: dict[str, object]) -> None:
    from harvester.store.files import fsync_dir, temp_path

    updated = {
        **info,
        "format_version": s.FORMAT_VERSION,
        "migrated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    tmp = temp_path(layout.store_file)
    tmp.write_text(json.dumps(updated, indent=2) + "\n")
    tmp.replace(layout.store_file)
    fsync_dir(layout.root)
