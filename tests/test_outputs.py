"""Files the user names: the demo's store, ``--out`` and ``export-duckdb FILE`` never destroy what
they point at; ``query`` SQL reads only the store; CSV/JSON output is streamed (issue 12, items
1, 2, 3, 9's full/read-only ``--out``, 12 and 13)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvester import analysis
from harvester.analysis import bundled_views, connect
from harvester.cli.render_query import QueryOptions, query_output, render
from harvester.demo import DEMO_MARKER
from harvester.errors import UsageError
from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.store.lock import hold_lock
from harvester.store.schema import LOCK_FILE
from tests.support import cli_env, run_cli, write_config

TODAY = dt.date(2024, 3, 20)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 4)
# Far smaller than a report (plotly.js alone is ~5 MB), larger than tmpfs's own bookkeeping.
FULL_DISK_BYTES = 64 * 1024
# A result of a few MB in any format, so it cannot fit in FULL_DISK_BYTES.
BIG_SQL = "SELECT range AS n, 'row ' || range AS label FROM range(300000)"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real store: ALL and one number, four days, pulled by ``harvester pull``."""
    tmp = tmp_path_factory.mktemp("outputs")
    settings = SimulatorSettings(limit=1000, window_seconds=60, today=TODAY)
    with SimulatorServer(settings) as sim:
        config = write_config(
            tmp, sim, phones=[sim.settings.phones[0], "ALL"], start=START, end=END
        )
        pull = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=cli_env(sim))
        assert pull.returncode == 0, pull.stderr
    yield tmp / "store"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (dot-files too) with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- item 1: the demo replaces only a store it made, and respects the lock ------------------------


def test_demo_refuses_a_store_it_did_not_create(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    before = snapshot(copy)
    result = run_cli(["demo", "--store", str(copy)], timeout=60)
    assert result.returncode == 2
    one_line(result, "--store", str(copy), "did not create")
    assert snapshot(copy) == before


def test_demo_refuses_its_own_store_while_a_pull_holds_the_lock_then_replaces_it(
    store: Path, tmp_path: Path
) -> None:
    demo_store = tmp_path / "demo-data"
    shutil.copytree(store, demo_store)
    (demo_store / DEMO_MARKER).write_text("made by the demo\n")
    before = snapshot(demo_store)
    with hold_lock(demo_store / LOCK_FILE, "a-pull"):
        locked = run_cli(["demo", "--store", str(demo_store)], timeout=60)
        assert locked.returncode == 2
        one_line(locked, "--store", str(demo_store), "locked")
        assert {k: v for k, v in snapshot(demo_store).items() if k != LOCK_FILE} == before
    again = run_cli(["demo", "--store", str(demo_store), "-q"], timeout=90)
    assert again.returncode == 0, again.stderr
    assert (demo_store / DEMO_MARKER).is_file()
    assert snapshot(demo_store) != before  # replaced by the demo's own pull


# -- item 2: nothing is written inside the store ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["query", "--format", "parquet", "--out", "{part}", "diagnostic_flow"], "--out"),
        (["query", "--format", "csv", "--out", "{store}/x.csv", "calls"], "--out"),
        (["query", "--format", "parquet", "--out", "{link}", "calls"], "--out"),
        (["export-duckdb", "{store}/x.duckdb"], "FILE"),
        (["report", "--out", "{store}/data/r.html"], "--out"),
    ],
    ids=["parquet-over-a-data-part", "csv-into-store", "symlink-into-store", "export", "report"],
)
def test_output_inside_the_store_is_refused(
    store: Path, tmp_path: Path, args: list[str], flag: str
) -> None:
    part = next((store / "data").rglob("*.parquet"))
    link = tmp_path / "innocent.parquet"
    link.symlink_to(part)
    before = snapshot(store)
    filled = [a.format(part=part, store=store, link=link) for a in args]
    result = run_cli([filled[0], "--store", str(store), *filled[1:]])
    assert result.returncode == 2
    one_line(result, flag, "inside the store")
    assert snapshot(store) == before


# -- item 3: only regular files are replaced; failures leave nothing behind ---------------------


@pytest.mark.parametrize(
    "args",
    [
        ["report", "--out", "{out}"],
        ["query", "--format", "csv", "--out", "{out}", "calls"],
        ["export-duckdb", "{out}"],
    ],
    ids=["report", "query", "export"],
)
def test_a_symlink_is_refused_not_replaced(store: Path, tmp_path: Path, args: list[str]) -> None:
    target = tmp_path / "real.txt"
    target.write_text("keep me")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    result = run_cli([args[0], "--store", str(store), *(a.format(out=link) for a in args[1:])])
    assert result.returncode == 2
    one_line(result, "symbolic link")
    assert link.is_symlink() and target.read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_report_writes_through_a_fifo_and_export_refuses_it(store: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = run_cli(["report", "--store", str(store), "--out", str(fifo)])
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert received and received[0].startswith(b"<!DOCTYPE html>")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    refused = run_cli(["export-duckdb", "--store", str(store), str(fifo)])
    assert refused.returncode == 2
    one_line(refused, "FILE", "needs a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


# Linux's memory devices: /dev/full (every write fails with ENOSPC) and /dev/null.
DEVICES = {"full": os.makedev(1, 7), "null": os.makedev(1, 3)}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["report", "--out", "{full}"], 1, "No space left on device"),
        (["query", "--format", "json", "--out", "{full}", "calls"], 1, "No space left"),
        (["query", "--format", "parquet", "--out", "{full}", "calls"], 2, "regular file"),
        (["export-duckdb", "{full}"], 2, "regular file"),
        (["query", "--format", "csv", "--out", "{null}", "calls"], 0, ""),
    ],
    ids=["report-full", "query-full", "parquet-full", "export-full", "query-null"],
)
def test_a_device_is_written_through_never_replaced(
    store: Path, tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    # Private copies of /dev/full and /dev/null: a regression must not replace the system's.
    nodes = {name: tmp_path / name for name in DEVICES}
    try:
        for name, device in DEVICES.items():
            os.mknod(nodes[name], stat.S_IFCHR | 0o666, device)
    except OSError:
        pytest.skip("cannot make device nodes here (needs root)")
    result = run_cli([args[0], "--store", str(store), *(a.format(**nodes) for a in args[1:])])
    assert result.returncode == code, result.stderr
    if code:
        one_line(result, "--out" if "--out" in args else "FILE", needle)
    for name, device in DEVICES.items():
        assert stat.S_ISCHR(nodes[name].lstat().st_mode)
        assert nodes[name].lstat().st_rdev == device
    assert leftovers(tmp_path) == []


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two real small file systems: one full after FULL_DISK_BYTES, one read-only."""
    full, read_only = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    read_only.mkdir()
    mounted: list[Path] = []
    try:
        for folder, options in ((full, f"size={FULL_DISK_BYTES}"), (read_only, "ro,size=64k")):
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                capture_output=True,
                check=False,
            )
            if done.returncode != 0:
                pytest.skip("cannot mount a tmpfs here (needs root)")
            mounted.append(folder)
        yield full, read_only
    finally:
        for folder in mounted:
            subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize(
    "args",
    [
        ["report", "--out", "{folder}/r.html"],
        ["query", "--format", "csv", "--out", "{folder}/q.csv", BIG_SQL],
        ["query", "--format", "parquet", "--out", "{folder}/q.parquet", BIG_SQL],
        ["export-duckdb", "{folder}/x.duckdb"],
    ],
    ids=["report", "query-csv", "query-parquet", "export"],
)
def test_full_or_read_only_filesystem_gives_one_line_and_leaves_nothing(
    store: Path, tmpfs: tuple[Path, Path], args: list[str]
) -> None:
    full, read_only = tmpfs
    flag = "--out" if "--out" in args else "FILE"
    ro = run_cli([args[0], "--store", str(store), *(a.format(folder=read_only) for a in args[1:])])
    assert ro.returncode == 2
    one_line(ro, flag, "Read-only file system")
    # The file already there survives a failed replacement; no temp file is left beside it.
    name = Path(args[args.index("--out") + 1] if "--out" in args else args[-1]).name
    (full / name).write_text("old")
    filled = [a.format(folder=full) for a in args[1:]]
    result = run_cli([args[0], "--store", str(store), *filled])
    assert result.returncode == 1, result.stderr
    one_line(result, flag, "failed")
    assert (full / name).read_text() == "old"
    assert sorted(p.name for p in full.iterdir()) == [name]


# -- item 12: query SQL reads only the store and writes only through --out ------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('{secret}')",
        "SELECT * FROM read_text('{secret}')",
        "COPY (SELECT 1) TO '{tmp}/copied.csv'",
        "COPY (SELECT 1) TO '{store}/data/copied.csv'",
        "ATTACH '{tmp}/other.duckdb' AS other",
        "SELECT 1; COPY (SELECT 1) TO '{tmp}/second.csv'",
        "SET enable_external_access = true",
        "INSTALL httpfs",
    ],
)
def test_query_sql_cannot_leave_the_store(store: Path, tmp_path: Path, sql: str) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    before = snapshot(store)
    result = run_cli(
        ["query", "--store", str(store), sql.format(secret=secret, tmp=tmp_path, store=store)]
    )
    assert result.returncode == 2
    one_line(result, "--unsafe-sql")
    assert "hunter2" not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.csv"]
    assert snapshot(store) == before


def test_the_librarys_guard_names_its_arguments_and_the_cli_its_flags(
    store: Path, tmp_path: Path
) -> None:
    """The same refusals from Python name ``unsafe=True``, never a flag the caller has not got;
    through the CLI they name ``--out`` and ``--unsafe-sql`` (issue 13 item 3)."""
    with pytest.raises(UsageError) as copy:
        analysis.prepare_sql(store, f"COPY (SELECT 1) TO '{tmp_path}/x.csv'")
    assert "writes only through an output file (pass unsafe=True" in str(copy.value)
    sql = analysis.prepare_sql(store, f"SELECT * FROM read_text('{tmp_path}/x.csv')")
    with connect(store) as con, pytest.raises(UsageError) as read:
        analysis.run_query(con, store, sql)
    assert "pass unsafe=True for full file access" in str(read.value)
    assert "--" not in str(copy.value) + str(read.value)
    cli = run_cli(["query", "--store", str(store), f"COPY (SELECT 1) TO '{tmp_path}/x.csv'"])
    assert "writes only through --out (pass --unsafe-sql to run any SQL" in cli.stderr


def test_unsafe_sql_lifts_the_restriction(store: Path, tmp_path: Path) -> None:
    secret = tmp_path / "notes.csv"
    secret.write_text("word\nhello\n")
    sql = f"SELECT word FROM read_csv('{secret}')"
    result = run_cli(["query", "--store", str(store), "--unsafe-sql", "--format", "csv", sql])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "word\nhello\n"


def test_every_bundled_view_works_with_the_restriction_on(store: Path, tmp_path: Path) -> None:
    # one restricted query over every view (one connection, not one per view: ~0.5 s each)
    names = [name for name, _ in bundled_views()]
    every_view = " UNION ALL ".join(
        f"SELECT '{name}' AS view, count(*) AS n FROM {name}" for name in names
    )
    counted = query_output(store, every_view, QueryOptions(fmt="csv"))
    assert sorted(line.split(",")[0] for line in counted.splitlines()[1:]) == sorted(names)
    through_cli = run_cli(["query", "--store", str(store), "--format", "csv", "hotspots"])
    assert through_cli.returncode == 0, through_cli.stderr
    out = tmp_path / "calls.parquet"
    parquet = run_cli(
        ["query", "--store", str(store), "--format", "parquet", "--out", str(out), "calls"]
    )
    assert parquet.returncode == 0, parquet.stderr
    assert out.stat().st_size > 0 and leftovers(tmp_path) == []


# -- item 13: CSV and JSON are streamed, byte for byte what the whole result renders to --------


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_streamed_output_equals_the_materialised_one(
    store: Path, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(analysis, "STREAM_ROWS", 7)  # many batches, a partial last one
    sql = "SELECT * FROM diagnostic_flow ORDER BY ALL"
    con = connect(store)
    try:
        result = con.execute(sql)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchall()
    finally:
        con.close()
    assert len(rows) > 7 * 3 and len(rows) % 7
    expected = render(columns, rows, fmt, None)
    chunks: list[str] = []
    assert query_output(store, sql, QueryOptions(fmt=fmt), echo=chunks.append) == ""
    assert len(chunks) > 3 and "".join(chunks) == expected
    from harvester.outputs import check_output

    out = check_output(tmp_path / f"q.{fmt}", "--out", store=store, streams_ok=True)
    message = query_output(store, sql, QueryOptions(fmt=fmt, out=out))
    assert message == f"wrote {len(rows)} rows to {out.path}"
    assert out.path.read_text() == expected
    stdout = run_cli(["query", "--store", str(store), "--format", fmt, sql])
    assert stdout.stdout == expected + ("" if expected.endswith("\n") else "\n")
