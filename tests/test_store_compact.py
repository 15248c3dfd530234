"""Compaction: same answers, fewer files, attempts and quarantine kept; no reader sees doubles."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from harvester.api.reply import parse_reply
from harvester.items import item_schema
from harvester.jobs import Job
from harvester.store import FetchMeta, Store, connect_base, retry_read
from harvester.store import writer as writer_module
from harvester.store.compact import COMPACT_FILES_THRESHOLD
from harvester.store.tables import Tables

QUERIES = Path(__file__).resolve().parents[1] / "queries"
NOW = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
D0 = dt.date(2024, 1, 25)
SNAPSHOT = "SELECT * FROM diagnostic_flow ORDER BY ALL"


def job_of(phone: str, day: int) -> Job:
    d = D0 + dt.timedelta(days=day)
    return Job(phone, d, d, d)


def body_of(job: Job, generation: int, items: int = 3) -> bytes:
    entries = [
        {
            "page": f"p{i}",
            "form": "f",
            "item": "i",
            "visits": generation,
            "filled": 0,
            "nomatch": 0,
            "noinput": 0,
            "transfer": 0,
            "disconnect": job.window_start.toordinal(),
        }
        for i in range(items)
    ]
    return json.dumps({"applications": {"https://app": entries}}).encode()


def record(writer: writer_module.StoreWriter, job: Job, generation: int, attempts: int = 1) -> None:
    body = body_of(job, generation)
    meta = FetchMeta(NOW, attempts, 200, job.path)
    writer.record_done(job, pa.table(parse_reply(body).columns(), schema=item_schema()), body, meta)


def query(root: Path, sql: str) -> list[tuple[Any, ...]]:
    con = connect_base(root)  # retries its own CREATE VIEWs
    view = (QUERIES / "diagnostic_flow.sql").read_text()
    retry_read(lambda: con.execute(view))  # binding a view opens files: it can race a delete
    return retry_read(lambda: con.execute(sql).fetchall())


def file_counts(root: Path) -> dict[str, int]:
    return {
        kind: len([p for p in (root / kind).rglob("*.parquet") if "_delta_log" not in p.parts])
        for kind in ("data", "raw", "ledger")
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.ensure_writable("day")
    return store


def test_compaction_keeps_answers_and_leaves_one_file_per_partition(store: Store) -> None:
    jobs = [job_of(p, d) for p in ("111", "222", "ALL") for d in range(14)]  # Jan 25 .. Feb 7
    with store.lock("run-1"), store.writer("run-1", flush_jobs=4) as writer:
        for job in jobs:
            record(writer, job, 1)
            if writer.flush_due():
                writer.flush()
    with store.lock("run-2"), store.writer("run-2", flush_jobs=4) as writer:
        for job in jobs[::3]:  # re-fetches: superseded rows to drop
            record(writer, job, 2, attempts=2)
        failed = jobs[1]
        writer.record_failed(failed, "HTTP 500", None, FetchMeta(NOW, 4, 500, failed.path))
        quarantined = jobs[2]
        writer.record_failed(
            quarantined, "invalid reply: x", b"junk", FetchMeta(NOW, 1, 200, quarantined.path), True
        )
    before = query(store.path, SNAPSHOT)
    index_before = store.job_index()
    status_before = store.status()
    assert file_counts(store.path)["ledger"] > 5
    # the data table holds only the visible rows already: no superseded row to drop
    assert query(store.path, "SELECT count(*) FROM flow_files") == [(len(jobs) * 3,)]
    result = store.compact()
    assert result.batch_id is not None and result.rows_kept == len(jobs) * 3
    assert result.ledger_records_dropped == len(jobs[::3])  # the superseded done records
    assert query(store.path, SNAPSHOT) == before
    assert file_counts(store.path) == {"data": 2, "raw": 2, "ledger": 1}
    index = store.job_index()
    for job in jobs:
        assert index.state(job.key) == index_before.state(job.key)
        assert index.attempts(job.key) == index_before.attempts(job.key)
        assert index.done_window(job.key) == index_before.done_window(job.key)
    assert index.attempts(failed.key) == 5
    after = store.status()
    assert (after.jobs_done, after.jobs_failed, after.rows) == (
        status_before.jobs_done,
        status_before.jobs_failed,
        status_before.rows,
    )
    assert [q.body for q in store.quarantine()] == [b"junk"]
    assert str(store.compact()) == "nothing to compact"
    # the store keeps working after a compaction: re-fetch, compact again, same invariants
    with store.lock("run-3"), store.writer("run-3") as writer:
        record(writer, jobs[0], 3)
    store.compact()
    assert query(
        store.path,
        "SELECT DISTINCT visits FROM diagnostic_flow WHERE phone = '111' "
        f"AND window_start = DATE '{jobs[0].window_start}'",
    ) == [(3,)]
    assert query(store.path, "SELECT count(*) FROM diagnostic_flow") == [(len(jobs) * 3,)]


def test_a_flush_cut_between_its_ledger_and_data_commits_is_undone_at_the_next_lock(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the ledger commit of a re-fetch and before its data commit: the
    next lock deletes that batch's records, so the job is back to the fetch whose rows the
    table holds (and the next pull may fetch it again); nothing is visible twice."""
    job = job_of("111", 0)
    with store.lock("run"), store.writer("run") as writer:
        record(writer, job, 1)

    def data_fails(*args: Any, **kwargs: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Tables, "replace", data_fails)
    # undoing the batch's records right away fails too (as on a full disk)
    monkeypatch.setattr(writer_module.StoreWriter, "_undo_records", lambda self, batch: False)
    with store.lock("run-2"):
        writer = store.writer("run-2")
        record(writer, job, 2, attempts=3)
        with pytest.raises(Exception, match="Input/output"):
            writer.flush()
        # the process "dies" here: the writer is never closed
    monkeypatch.undo()
    assert store.job_index().attempts(job.key) == 4  # the cut batch's record is still there
    assert query(store.path, "SELECT DISTINCT visits FROM diagnostic_flow") == [(1,)]
    with store.lock("run-3"):
        index = store.job_index()
    assert index.state(job.key) == "done" and index.attempts(job.key) == 1
    assert query(store.path, "SELECT DISTINCT visits FROM diagnostic_flow") == [(1,)]
    with store.lock("run-4"), store.writer("run-4") as writer:
        record(writer, job, 3)
    assert query(store.path, "SELECT visits, count(*) FROM diagnostic_flow GROUP BY 1") == [(3, 3)]
    store.compact()
    assert file_counts(store.path)["data"] == 1
    assert query(store.path, "SELECT count(*) FROM flow_files") == [(3,)]


def test_needs_compaction_after_many_small_flushes(store: Store) -> None:
    assert not store.needs_compaction()
    with store.lock("run"), store.writer("run", flush_jobs=1) as writer:
        for day in range(COMPACT_FILES_THRESHOLD + 1):
            record(writer, job_of("111", day % 5), day)
            writer.flush()
    assert store.needs_compaction()
    store.compact()
    assert not store.needs_compaction()
    assert query(store.path, "SELECT count(*) FROM diagnostic_flow") == [(15,)]


def test_readers_never_see_duplicates_while_a_writer_flushes_and_compacts(store: Store) -> None:
    """A DuckDB reader in a loop, a writer re-fetching every job and compacting, concurrently."""
    jobs = [job_of(p, d) for p in ("111", "222") for d in range(10)]
    with store.lock("seed"), store.writer("seed") as writer:
        for job in jobs:
            record(writer, job, 0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with store.lock("busy"):
                generation = 1
                while not stop.is_set():
                    with store.writer("busy", flush_jobs=5) as writer:
                        for job in jobs:
                            record(writer, job, generation)
                            if writer.flush_due():
                                writer.flush()
                    if generation % 3 == 0:
                        store.compact()
                    generation += 1
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    check = """
        SELECT count(*), count(DISTINCT (phone, window_start, page)),
               count(DISTINCT (phone, window_start, visits))
        FROM diagnostic_flow
    """
    reads = 0
    deadline = time.monotonic() + 2.5
    try:
        while time.monotonic() < deadline:
            total, distinct, fetches = query(store.path, check)[0]
            assert total == distinct == len(jobs) * 3  # nothing doubled, nothing missing
            assert fetches == len(jobs)  # every job's rows come from one fetch
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert reads >= 3  # the loop really read while the writer worked (few reads on a busy box)
