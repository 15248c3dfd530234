"""`harvester migrate`: a store written by the format-1 harvester becomes Delta tables, equal data.

The fixture ``tests/data/format1_store`` was written by the format-1 harvester itself
(``tests/data/make_format1_store.py``, run against that version's code): two runs, re-fetches
whose superseded rows stay in old files, a failed re-fetch, a rejected job (404) and a quarantined
reply. ``format1_expected.json`` holds what that version's views showed.

Format 1 was only ever written to a local folder, so the old-store tests are local only; a wrong
format version is refused alike in ``store.json`` and in an ``s3://`` store's table description.
"""

from __future__ import annotations

import datetime as dt
import filecmp
import json
import shutil
from pathlib import Path

import pytest

from harvester.analysis import connect
from harvester.store import Store
from tests.support import run_cli
from tests.test_delta import store_env

FIXTURE = Path(__file__).resolve().parent / "data" / "format1_store"
EXPECTED = json.loads((FIXTURE.parent / "format1_expected.json").read_text())


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    return root


def view_rows(root: Path) -> tuple[list[list[str]], list[list[object]]]:
    con = connect(root)
    try:
        rows = con.execute("SELECT * FROM diagnostic_flow ORDER BY ALL").fetchall()
        states = con.execute(
            "SELECT phone, CAST(period AS VARCHAR), state, total_attempts "
            "FROM ledger_latest ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()
    return [[str(v) for v in r] for r in rows], [list(r) for r in states]


# Local only: format 1 was never written to object storage.
@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("query", "diagnostic_flow"),
        ("compact",),
        ("export-duckdb", "{tmp}/x.duckdb"),
        ("report", "--out", "{tmp}/r.html"),
    ],
)
def test_an_old_store_is_refused_in_one_line_naming_migrate(
    old_store: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    argv = [a.format(tmp=tmp_path) for a in args]
    result = run_cli([argv[0], "--store", str(old_store), *argv[1:]])
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "harvester migrate" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.duckdb")) and not list(tmp_path.glob("*.html"))
    assert _same_tree(old_store, FIXTURE)  # nothing written


@pytest.mark.parametrize(
    "where",
    [
        "local",
        pytest.param(
            "s3",
            marks=pytest.mark.skip(
                reason="migrate converts local folders only: format 1 was never written to "
                "object storage, and migrate refuses an s3:// store (tests/test_s3.py)"
            ),
        ),
    ],
)
def test_migrate_converts_in_place_after_a_backup_with_equal_data(
    old_store: Path, where: str
) -> None:
    result = run_cli(["migrate", "--store", str(old_store)])
    assert result.returncode == 0, result.stderr
    backups = list(old_store.parent.glob("store.format1-backup-*"))
    assert len(backups) == 1 and str(backups[0]) in result.stdout
    assert _same_tree(backups[0], FIXTURE)  # the backup is the old store, byte for byte
    assert json.loads((old_store / "store.json").read_text())["format_version"] == 2
    rows, states = view_rows(old_store)
    assert rows == EXPECTED["diagnostic_flow"] and len(rows) == 42
    assert states == EXPECTED["ledger_latest"]
    # at rest, a plain Parquet reader of data/ sees exactly the visible rows (the superseded
    # ones of the old files are gone)
    import duckdb

    plain = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{old_store}/data/month=*/*.parquet')"
    ).fetchall()
    assert plain == [(42,)]
    store = Store(old_store)
    index = store.job_index()
    rejected = ("6175550101", dt.date(2024, 2, 10))
    assert index.state(rejected) == "failed" and index.rejected(rejected)
    failed_refetch = ("6175550101", dt.date(2024, 1, 29))
    assert index.state(failed_refetch) == "failed" and not index.rejected(failed_refetch)
    assert [q.body for q in store.quarantine()] == [b"<html>"]
    # the converted store keeps working: status, compact, and again
    assert run_cli(["status", "--store", str(old_store)]).returncode == 0
    assert run_cli(["compact", "--store", str(old_store)]).returncode == 0
    assert view_rows(old_store) == (rows, states)
    again = run_cli(["migrate", "--store", str(old_store)])
    assert again.returncode == 2 and "already in format 2" in again.stderr, again.stderr


def test_a_store_file_with_a_wrong_format_version_is_named_in_one_line(
    tmp_path: Path, backend: str | None
) -> None:
    """In ``store.json``, or in the data table's description on object storage."""
    store = Store(backend or tmp_path / "store")
    store.ensure_writable("day")
    if backend is None:
        info = (store.path / "store.json").read_text()
    else:
        from deltalake import DeltaTable

        data = DeltaTable(f"{backend}/data")
        info = data.metadata().description
    for bad, expected in (('"2"', 'found "2"'), ("3", "format version 3"), ("true", "found true")):
        wrong = json.dumps(json.loads(info)).replace(
            '"format_version": 2', f'"format_version": {bad}'
        )
        if backend is None:
            (store.path / "store.json").write_text(wrong)
        else:
            data.alter.set_table_description(wrong)
        result = run_cli(["status", "--store", backend or str(store.path)], env=store_env())
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert expected in result.stderr and "writes version 1" not in result.stderr


def _same_tree(a: Path, b: Path) -> bool:
    names_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if names_a != names_b:
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names_a)
