"""A pull's closing compaction runs in a child process that shares the pull's lock.

Judged by what matters: the child's compaction leaves the same answers and files as one in
process; it acts only under the lock handed to it; a child killed at any moment leaves the store
consistent (and the next compaction finishes the work); the lock outlives the parent while a
process holding its descriptor lives; a real pull that needs a compaction gets it from a child.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from harvester.config import load_config
from harvester.errors import StoreError, StoreLockedError
from harvester.plan import pull_plan
from harvester.scheduler import harvest
from harvester.simulator import SimulatorServer
from harvester.store import Store
from harvester.store import compact as compact_module
from harvester.store.lock import hold_lock
from tests.support import assert_store_matches_truth, cli_env, write_config
from tests.test_store_compact import SNAPSHOT, file_counts, job_of, query, record

CHILD_MODULE = "harvester.store.compactor"


def _fill(root: Path, flushes: int = 8) -> Store:
    """A store of 3 numbers over 14 days, re-fetched in ``flushes`` small flushes."""
    store = Store(root)
    store.ensure_writable("day")
    jobs = [job_of(p, d) for p in ("111", "222", "ALL") for d in range(14)]
    with store.lock("fill"), store.writer("fill", flush_jobs=1000) as writer:
        for generation in range(flushes):
            for job in jobs[generation::3]:
                record(writer, job, generation)
            writer.flush()
    return store


def _children_running(module: str) -> list[int]:
    """Pids of this process's children whose command line runs ``module``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and module.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_a_child_compacts_as_the_process_itself_would(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    here, there = _fill(tmp_path / "here"), _fill(tmp_path / "there")
    before = query(here.path, SNAPSHOT)
    assert before == query(there.path, SNAPSHOT)
    in_process = here.compact()
    with caplog.at_level(logging.INFO, logger="harvester"), there.lock("pull"):
        in_child = there.compact_in_child()
        # the parent's open tables were dropped: what it writes next builds on the child's work
        assert there.needs_compaction() is False
    assert in_child.batch_id is not None
    assert (in_child.files_before, in_child.files_after, in_child.rows_kept) == (
        in_process.files_before,
        in_process.files_after,
        in_process.rows_kept,
    )
    assert query(there.path, SNAPSHOT) == before
    assert file_counts(there.path) == file_counts(here.path)
    assert any("in a child process, peak RSS" in r.message for r in caplog.records)
    assert not (there.path / "harvester.lock").exists()  # released by the parent, once


def test_the_child_refuses_a_descriptor_that_does_not_hold_the_lock(tmp_path: Path) -> None:
    from harvester.store.compact_child import compact_in_child

    store = _fill(tmp_path / "store")
    before = query(store.path, SNAPSHOT)
    with store.lock("pull"):
        # the same file opened again: another open file, which the parent's flock excludes
        other = os.open(store.path / "harvester.lock", os.O_RDWR)
        try:
            with pytest.raises(StoreError, match="lock was not handed over"):
                compact_in_child(str(store.path), None, other, "pull")
        finally:
            os.close(other)
    assert query(store.path, SNAPSHOT) == before
    assert store.needs_compaction() or file_counts(store.path)["data"] > 1  # nothing compacted


def _plain_rows(root: Path) -> int:
    """Rows a plain Parquet reader of the data folder counts (the Delta log's own files aside)."""
    files = [str(p) for p in (root / "data").rglob("*.parquet") if "_delta_log" not in p.parts]
    con = duckdb.connect()
    try:
        return int(con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchall()[0][0])
    finally:
        con.close()


def _commits(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob("*/_delta_log/*.json")}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds children in /proc")
@pytest.mark.parametrize("after_commits", [0, 1, 3, 6, 9])  # a compaction here makes 11
def test_a_child_killed_at_any_moment_leaves_the_store_consistent(
    tmp_path: Path, after_commits: int
) -> None:
    store = _fill(tmp_path / "store")
    before = query(store.path, SNAPSHOT)
    initial = _commits(store.path)
    killed: list[int] = []

    def kill_child() -> None:
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            seen |= _commits(store.path) - initial  # compaction deletes old entries at its end
            children = _children_running(CHILD_MODULE)
            if children and len(seen) >= after_commits:
                os.kill(children[0], signal.SIGKILL)
                killed.append(children[0])
            time.sleep(0.002)

    killer = threading.Thread(target=kill_child)
    killer.start()
    try:
        with store.lock("pull"), pytest.raises(StoreError, match="stopped by signal 9"):
            store.compact_in_child()
    finally:
        killer.join()
    assert killed
    assert query(store.path, SNAPSHOT) == before
    # the pull's release vacuumed what the killed child wrote and never committed: a plain
    # Parquet reader of the folder sees exactly the table
    assert _plain_rows(store.path) == len(before)
    Store(store.path).compact()  # the next compaction finishes the work
    assert query(store.path, SNAPSHOT) == before
    assert not Store(store.path).needs_compaction()


_HOLD_AND_HAND_OVER = """
import os, subprocess, sys, time
from pathlib import Path
from harvester.store.lock import held_lock
lock = Path(sys.argv[1])
with held_lock(lock, "parent") as held:
    code = "import sys, time; from pathlib import Path; "
    code += "from harvester.store.lock import adopt_lock; "
    code += "adopt_lock(Path(sys.argv[1]), int(sys.argv[2])); print('adopted', flush=True); "
    code += "time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(lock), str(held.fd)],
        pass_fds=(held.fd,), stdout=sys.stdout,
    )
    print(child.pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.slow
def test_the_lock_outlives_the_parent_while_a_child_holding_it_lives(tmp_path: Path) -> None:
    lock = tmp_path / "harvester.lock"
    parent = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AND_HAND_OVER, str(lock)],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "adopted"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    try:
        with pytest.raises(StoreLockedError), hold_lock(lock, "intruder"):
            pass
    finally:
        os.kill(child_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:  # the child is the parent's: reaped by init, soon after the kill
        try:
            with hold_lock(lock, "next"):
                break
        except StoreLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("child", [True, False])
def test_a_pull_compacts_at_its_end_in_a_child(
    tmp_path: Path,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    child: bool,
) -> None:
    """... or in its own process when it cannot start one (an embedded interpreter)."""
    monkeypatch.setattr(compact_module, "COMPACT_FILES_THRESHOLD", 4)
    if not child:
        monkeypatch.setattr(sys, "executable", "")
    start, end = dt.date(2024, 3, 1), dt.date(2024, 3, 12)
    phones = [*simulator.settings.phones, "ALL"]
    path = write_config(tmp_path, simulator, start=start, end=end, flush_jobs=4)
    config = load_config(path, env=cli_env(simulator))
    plan = pull_plan(phones, start, end, config.harvest.window)
    with caplog.at_level(logging.INFO, logger="harvester"):
        summary = asyncio.run(harvest(config, plan))
    assert summary.exit_code == 0
    said = " ".join(r.getMessage() for r in caplog.records)
    assert ("in a child process, peak RSS" in said) is child
    assert ("compacting in this process" in said) is not child
    store = Path(config.store.path)
    data_files = [p for p in (store / "data").rglob("*.parquet") if "_delta_log" not in p.parts]
    assert len(data_files) == len({p.parent for p in data_files})  # one per partition
    assert_store_matches_truth(store, simulator, phones, start, end)
    assert not (store / "harvester.lock").exists()
