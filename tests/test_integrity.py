"""Store integrity (issue 16): every damage a disk, a backup tool or a sync client does is named
in one line by the command that meets it, never answered wrong, and `verify --repair` followed by
`pull` brings the store back to the simulator's truth.

One pull over loopback makes a store of two months; each test damages its own copy of it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from harvester.simulator import SimulatorServer, SimulatorSettings
from tests.support import assert_store_matches_truth, cli_env, run_cli, write_config
from tests.test_integrity_checksums import silent_flip

D = dt.date
START, END, TODAY = D(2024, 2, 26), D(2024, 3, 4), "2024-03-10"
PHONES = ["6175550101", "ALL"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(
        SimulatorSettings(limit=1000, window_seconds=60, today=D(2024, 3, 10))
    ) as server:
        yield server


@pytest.fixture(scope="module")
def pulled(sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pulled")
    config = write_config(folder, sim, phones=PHONES, start=START, end=END)
    done = run_cli(["pull", "-c", str(config), "--today", TODAY], env=cli_env(sim))
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture
def work(pulled: Path, tmp_path: Path) -> Path:
    """A copy of the pulled folder (config.toml and store/)."""
    target = tmp_path / "w"
    shutil.copytree(pulled, target)
    return target


def cli(sim: SimulatorServer, work: Path, *args: str) -> tuple[int, str, str]:
    done = run_cli([args[0], "-c", str(work / "config.toml"), *args[1:]], env=cli_env(sim))
    return done.returncode, done.stdout, done.stderr


def data_files(store: Path) -> list[Path]:
    return sorted((store / "data").glob("month=*/*.parquet"))


def one_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def heal(sim: SimulatorServer, work: Path) -> None:
    """verify (damaged), verify --repair, pull: the simulator's truth again, verify clean."""
    code, out, _ = cli(sim, work, "verify")
    assert code == 1, out
    code, out, err = cli(sim, work, "verify", "--repair")
    assert code == 0, out + err
    code, _, err = cli(sim, work, "pull", "--today", TODAY)
    assert code == 0, err
    assert_store_matches_truth(work / "store", sim, PHONES, START, END)
    code, out, err = cli(sim, work, "verify")
    assert code == 0, out + err


def test_a_deleted_data_file_is_named_and_refetched(sim: SimulatorServer, work: Path) -> None:
    victim = data_files(work / "store")[-1]
    victim.unlink()
    code, out, _ = cli(sim, work, "status")
    assert code == 0 and "needs verifying: 1 files" in out, out
    code, _, err = cli(sim, work, "query", "calls")
    assert code == 1
    one_line(err, victim.name, "missing", "harvester verify --repair")
    code, _, err = cli(sim, work, "plan", "--today", TODAY)
    assert code == 1
    one_line(err, victim.name)
    heal(sim, work)


def test_a_deleted_month_folder_is_refetched(sim: SimulatorServer, work: Path) -> None:
    shutil.rmtree(work / "store" / "data" / "month=2024-02")
    code, _, err = cli(sim, work, "pull", "--today", TODAY)
    assert code == 1
    one_line(err, "month=2024-02", "missing", "harvester verify --repair")
    code, out, _ = cli(sim, work, "verify")
    assert code == 1 and "2024-02-26: 0 rows stored where the ledger recorded" in out, out
    heal(sim, work)


def test_a_copied_file_changes_no_result_and_is_listed(sim: SimulatorServer, work: Path) -> None:
    store = work / "store"
    original = data_files(store)[0]
    copy = original.with_name(original.name.replace(".parquet", " (copy).parquet"))
    shutil.copy(original, copy)
    (store / "data" / "stray.parquet").write_bytes(original.read_bytes())
    assert_store_matches_truth(store, sim, PHONES, START, END)
    exported = work / "x.duckdb"
    code, _, err = cli(sim, work, "export-duckdb", str(exported))
    assert code == 0, err
    with duckdb.connect(str(exported), read_only=True) as con:
        count = con.execute("SELECT count(*) FROM diagnostic_flow").fetchall()[0][0]
    code, out, _ = cli(
        sim, work, "query", "--format", "json", "SELECT count(*) AS n FROM diagnostic_flow"
    )
    assert json.loads(out)[0]["n"] == count
    code, out, _ = cli(sim, work, "verify")
    assert code == 0, out
    assert copy.name in out and "stray.parquet" in out, out
    code, out, _ = cli(sim, work, "verify", "--repair")
    assert code == 0 and not copy.exists(), out
    assert list((store / "quarantine").rglob(copy.name))
    assert_store_matches_truth(store, sim, PHONES, START, END)


def test_a_truncated_file_stops_compact_in_one_line(sim: SimulatorServer, work: Path) -> None:
    victim = data_files(work / "store")[0]
    with open(victim, "r+b") as handle:
        handle.truncate(victim.stat().st_size // 2)
    code, out, _ = cli(sim, work, "status")
    assert "needs verifying" in out
    code, _, err = cli(sim, work, "compact")
    assert code == 1
    one_line(err, victim.name, "truncated", "harvester verify --repair")
    assert not list((work / "store").rglob("*.tmp"))
    heal(sim, work)
    assert list((work / "store" / "quarantine").rglob(victim.name))  # moved aside, kept


def _flip(path: Path, at: float) -> None:
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_data_file_never_answer_wrong(sim: SimulatorServer, work: Path) -> None:
    victim = max(data_files(work / "store"), key=lambda p: p.stat().st_size)
    _flip(victim, 0.4)
    code, _, err = cli(sim, work, "query", "calls")
    assert code == 1
    one_line(err, victim.name, "harvester verify --repair")
    heal(sim, work)


def test_a_flipped_byte_in_a_data_page_is_caught_by_its_checksum(
    sim: SimulatorServer, work: Path
) -> None:
    """One byte of a data page flipped so that the file still decodes, to other counts: the row
    count and the column's bounds are unchanged, so only the page checksum tells (DuckDB does
    not check it: ``verify`` does, and names the file); repair and pull heal it."""
    victim = max(data_files(work / "store"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    offset = silent_flip(bytes(data), "visits")
    assert offset is not None, "no byte of the visits pages decodes silently to other counts"
    data[offset] ^= 0x01
    victim.write_bytes(bytes(data))
    code, out, _ = cli(sim, work, "verify")
    assert code == 1 and victim.name in out and "CRC checksum verification failed" in out, out
    heal(sim, work)
    assert list((work / "store" / "quarantine").rglob(victim.name))


def test_flipped_bytes_in_a_ledger_file_are_named(sim: SimulatorServer, work: Path) -> None:
    victim = sorted((work / "store" / "ledger").glob("*.parquet"))[0]
    _flip(victim, 0.5)
    for command in (["status"], ["plan", "--today", TODAY], ["compact"]):
        code, _, err = cli(sim, work, *command)
        assert code == 1, (command, err)
        one_line(err, victim.name, "harvester verify --repair")
    heal(sim, work)


def test_a_lost_store_json_is_rebuilt_from_the_tables(sim: SimulatorServer, work: Path) -> None:
    store_file = work / "store" / "store.json"
    store_file.unlink()
    week = write_config(
        work, sim, phones=PHONES, start=START, end=END, window="week", name="w.toml"
    )
    done = run_cli(["pull", "-c", str(week), "--today", TODAY], env=cli_env(sim))
    assert done.returncode == 2
    one_line(done.stderr, "holds day windows")
    assert json.loads(store_file.read_text())["grain"] == "day"
    code, out, _ = cli(sim, work, "verify")
    assert code == 0, out
    assert_store_matches_truth(work / "store", sim, PHONES, START, END)


def test_compact_refuses_an_unknown_format(sim: SimulatorServer, work: Path) -> None:
    store_file = work / "store" / "store.json"
    info = json.loads(store_file.read_text())
    store_file.write_text(json.dumps({**info, "format_version": 9}))
    code, _, err = cli(sim, work, "compact")
    assert code == 2
    one_line(err, "format version 9")
