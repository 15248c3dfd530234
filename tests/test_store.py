"""The store on real Parquet and DuckDB: writes, visibility, index, status, lock, set-up errors."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from harvester.api.reply import parse_reply
from harvester.errors import StoreError, StoreLockedError, StoreWriteError
from harvester.items import ItemRows as ParsedReply
from harvester.items import item_schema
from harvester.jobs import Grain, Job, period_end, period_start
from harvester.store import FetchMeta, Store, base_views_sql, connect_base
from harvester.store.parquet_files import Journal, target, write_files
from harvester.store.tables import Tables

QUERIES = Path(__file__).resolve().parents[1] / "queries"
NOW = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
D0 = dt.date(2024, 1, 30)


def day_job(phone: str, day: dt.date) -> Job:
    return Job(phone, day, day, day)


def arrow(parsed: ParsedReply) -> pa.Table:
    """A parsed reply as the Arrow rows the store takes."""
    return pa.table(parsed.columns(), schema=item_schema())


def reply(job: Job, generation: int = 0, items: int = 3) -> tuple[pa.Table, bytes]:
    """A deterministic reply whose counters encode the job and the fetch generation."""
    parsed, body = parsed_reply(job, generation, items)
    return arrow(parsed), body


def parsed_reply(job: Job, generation: int = 0, items: int = 3) -> tuple[ParsedReply, bytes]:
    body = json.dumps(
        {
            "applications": {
                f"https://app/{job.phone}": [
                    {
                        "page": f"p{i}.php",
                        "form": "f",
                        "item": f"i{i}",
                        "visits": generation,
                        "filled": i,
                        "nomatch": job.window_start.toordinal(),
                        "noinput": 0,
                        "transfer": 0,
                        "disconnect": 1,
                    }
                    for i in range(items)
                ]
            }
        }
    ).encode()
    return parse_reply(body), body


def meta(job: Job, attempts: int = 1, at: dt.datetime = NOW) -> FetchMeta:
    return FetchMeta(fetched_at=at, attempts=attempts, http_status=200, request_path=job.path)


def flow(root: Path, sql: str = "SELECT * FROM diagnostic_flow") -> list[tuple[Any, ...]]:
    con = connect_base(root)
    con.execute((QUERIES / "diagnostic_flow.sql").read_text())
    return con.execute(sql).fetchall()


def new_store(tmp_path: Path, grain: Grain = Grain.DAY, url: str | None = None) -> Store:
    """A new store in ``tmp_path``, or at ``url`` (object storage: the ``backend`` fixture)."""
    store = Store(url or tmp_path / "store")
    store.ensure_writable(grain)
    return store


def write(store: Store, records: list[tuple[Job, int, int]], flush_jobs: int = 500) -> None:
    """Record (job, generation, items) as done replies in one run."""
    with store.lock("run"), store.writer("run", flush_jobs=flush_jobs) as writer:
        for job, generation, items in records:
            parsed, body = reply(job, generation, items)
            writer.record_done(job, parsed, body, meta(job))
            if writer.flush_due():
                writer.flush()


# -- writing and reading --------------------------------------------------------------------------


def test_written_rows_read_back_exactly_with_the_contract_types(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    jobs = [day_job(p, D0 + dt.timedelta(days=d)) for d in range(4) for p in ("111", "ALL")]
    write(store, [(job, 7, 3) for job in jobs], flush_jobs=3)
    rows = flow(store.path, "SELECT * FROM diagnostic_flow ORDER BY ALL")
    expected = sorted(
        (job.phone, job.window_start, job.window_end, *row[:], NOW)
        for job in jobs
        for row in parsed_reply(job, 7, 3)[0].rows()
    )
    assert rows == expected
    described = flow(store.path, "DESCRIBE diagnostic_flow")
    types = {name: kind for name, kind, *_ in described}
    assert types["window_start"] == "DATE" and types["visits"] == "BIGINT"
    assert types["fetched_at"] == "TIMESTAMP WITH TIME ZONE"
    # a Delta table partitioned by month of window_start, readable by plain pyarrow at rest
    assert sorted(p.name for p in (store.path / "data").iterdir()) == [
        "_delta_log",
        "month=2024-01",
        "month=2024-02",
    ]
    table = pq.read_table(store.path / "data")
    assert table.num_rows == len(jobs) * 3
    assert str(table.schema.field("fetched_at").type) == "timestamp[us, tz=UTC]"


def test_each_flush_is_one_commit_per_table_and_one_file_per_partition(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.lock("run"), store.writer("run", flush_jobs=500) as writer:
        for d in range(5):
            job = day_job("111", D0 + dt.timedelta(days=d))  # Jan 30 .. Feb 3
            writer.record_done(job, *reply(job), meta(job))
        result = writer.flush()
    assert (result.jobs, result.done, result.rows, result.files) == (5, 5, 15, 3)
    assert len(list((store.path / "data").rglob("*.parquet"))) == 2
    assert len(list((store.path / "ledger").glob("*.parquet"))) == 1
    tables = Tables(store._layout)
    assert [tables.open(kind).version() for kind in ("data", "raw", "ledger")] == [1, 1, 1]


def test_empty_reply_is_a_done_job_with_zero_rows(tmp_path: Path, backend: str | None) -> None:
    store = new_store(tmp_path, url=backend)
    job = day_job("111", D0)
    with store.lock("run"), store.writer("run") as writer:
        writer.record_done(job, arrow(parse_reply(b'{"applications": {}}')), b"{}", meta(job))
    assert flow(store.path) == []
    index = store.job_index()
    assert index.state(job.key) == "done"
    assert index.done_window(job.key) == (D0, D0)
    assert store.status().jobs_done == 1


def test_refetch_replaces_rows_and_a_failed_refetch_keeps_them(
    tmp_path: Path, backend: str | None
) -> None:
    store = new_store(tmp_path, url=backend)
    job = day_job("111", D0)
    write(store, [(job, 1, 4)])
    write(store, [(job, 2, 2)])  # a re-fetch with fewer items: the old ones vanish too
    assert flow(store.path, "SELECT visits, item FROM diagnostic_flow ORDER BY item") == [
        (2, "i0"),
        (2, "i1"),
    ]
    with store.lock("run2"), store.writer("run2") as writer:
        writer.record_failed(job, "HTTP 500: boom", None, meta(job, attempts=3))
    assert flow(store.path, "SELECT DISTINCT visits FROM diagnostic_flow") == [(2,)]
    index = store.job_index()
    assert index.state(job.key) == "failed"
    assert index.attempts(job.key) == 5
    assert index.done_window(job.key) == (D0, D0)


def test_the_same_job_twice_in_one_batch_keeps_the_later_record(
    tmp_path: Path, backend: str | None
) -> None:
    store = new_store(tmp_path, url=backend)
    job = day_job("111", D0)
    write(store, [(job, 1, 3), (job, 2, 3)])
    assert flow(store.path, "SELECT DISTINCT visits FROM diagnostic_flow") == [(2,)]


def test_flush_due_by_count_and_by_time(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    now = [0.0]
    with store.lock("run"):
        writer = store.writer("run", flush_jobs=3, flush_seconds=2.0, monotonic=lambda: now[0])
        assert not writer.flush_due()
        jobs = [day_job("111", D0 + dt.timedelta(days=d)) for d in range(3)]
        for job in jobs[:2]:
            writer.record_done(job, *reply(job), meta(job))
        assert not writer.flush_due()
        now[0] = 2.0
        assert writer.flush_due()
        now[0] = 0.5
        writer.record_done(jobs[2], *reply(jobs[2]), meta(jobs[2]))
        assert writer.flush_due() and writer.pending == 3
        writer.flush()
        assert not writer.flush_due() and writer.pending == 0
        writer.close()
        with pytest.raises(StoreError, match="closed"):
            writer.record_done(jobs[0], *reply(jobs[0]), meta(jobs[0]))


def test_recording_while_a_flush_runs_in_another_thread_loses_nothing(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    jobs = [day_job(f"{p:03d}", D0 + dt.timedelta(days=d)) for p in range(20) for d in range(30)]
    with store.lock("run"), store.writer("run", flush_jobs=25) as writer:
        stop = threading.Event()

        def flusher() -> None:
            while not stop.is_set():
                writer.flush()

        thread = threading.Thread(target=flusher)
        thread.start()
        for job in jobs:
            writer.record_done(job, *reply(job, items=1), meta(job))
        stop.set()
        thread.join()
    assert flow(
        store.path, "SELECT count(*), count(DISTINCT (phone, window_start)) FROM diagnostic_flow"
    )[0] == (
        len(jobs),
        len(jobs),
    )


def test_a_failed_flush_keeps_the_jobs_for_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever of a flush's three commits fails (disk full), its jobs are kept and the next
    flush stores them exactly once."""
    for failing in ("raw", "ledger", "data"):
        store = new_store(tmp_path / failing)
        job = day_job("111", D0)
        write(store, [(job, 1, 4)])  # the second fetch replaces these rows
        real = Tables.append if failing != "data" else Tables.replace
        calls = [0]

        def flaky(
            self: Tables,
            kind: str,
            *args: Any,
            failing: str = failing,
            calls: list[int] = calls,
            real: Any = real,
            **kw: Any,
        ) -> Any:
            if kind == failing and calls[0] == 0:
                calls[0] += 1
                raise OSError(28, "No space left on device")
            return real(self, kind, *args, **kw)

        monkeypatch.setattr(Tables, "append" if failing != "data" else "replace", flaky)
        with store.lock("run"), store.writer("run") as writer:
            writer.record_done(job, *reply(job, 2, 3), meta(job))
            with pytest.raises(StoreWriteError, match="No space left"):
                writer.flush()
            assert writer.pending == 1
        monkeypatch.undo()
        assert sorted(flow(store.path, "SELECT visits, item FROM diagnostic_flow")) == [
            (2, "i0"),
            (2, "i1"),
            (2, "i2"),
        ], failing
        index = store.job_index()
        assert index.state(job.key) == "done" and index.attempts(job.key) == 2, failing


def test_fetch_meta_is_validated() -> None:
    with pytest.raises(ValueError, match="timezone"):
        FetchMeta(dt.datetime(2024, 1, 1), 1, 200, "/path")
    with pytest.raises(ValueError, match="fetch_id"):
        FetchMeta(NOW, 1, 200, "/path", fetch_id=-1)


# -- views on an empty store ----------------------------------------------------------------------


def test_views_work_on_an_empty_store(tmp_path: Path, backend: str | None) -> None:
    store = new_store(tmp_path, url=backend)
    con = duckdb.connect()
    con.execute(base_views_sql(store))
    con.execute((QUERIES / "diagnostic_flow.sql").read_text())
    assert con.execute("SELECT count(*) FROM diagnostic_flow").fetchall() == [(0,)]
    described = {
        name: kind for name, kind, *_ in con.execute("DESCRIBE diagnostic_flow").fetchall()
    }
    assert described["disconnect"] == "BIGINT"
    assert con.execute("SELECT count(*) FROM ledger_latest").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM raw_replies").fetchall() == [(0,)]
    assert store.status().jobs_done == 0
    assert len(store.job_index()) == 0
    assert store.quarantine() == []


# -- quarantine ------------------------------------------------------------------------------------


def test_quarantine_keeps_the_body_and_the_reason(tmp_path: Path, backend: str | None) -> None:
    store = new_store(tmp_path, url=backend)
    bad, good = day_job("111", D0), day_job("111", D0 + dt.timedelta(days=1))
    with store.lock("run"), store.writer("run") as writer:
        writer.record_failed(
            bad, "invalid reply: no 'applications' key", b'{"x": 1}', meta(bad), True
        )
        writer.record_failed(good, "invalid reply: x", b"<html>", meta(good), True)
        writer.record_done(good, *reply(good), meta(good, attempts=2))
    listed = {q.phone + str(q.period): q for q in store.quarantine()}
    assert listed["111" + str(D0)].body == b'{"x": 1}'
    assert listed["111" + str(D0)].reason == "invalid reply: no 'applications' key"
    assert listed["111" + str(D0)].job_state == "failed"
    assert listed["111" + str(good.period)].job_state == "done"
    assert store.status().jobs_quarantined == 1
    with pytest.raises(ValueError, match="raw body"), store.lock("run"):
        store.writer("run").record_failed(bad, "x", None, meta(bad), True)


# -- index -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("grain", list(Grain))
def test_job_index_answers_per_key_for_every_grain(tmp_path: Path, grain: Grain) -> None:
    store = new_store(tmp_path, grain)
    days = [dt.date(2024, 1, 1), dt.date(2024, 3, 6), dt.date(2025, 2, 5)]
    starts = [period_start(day, grain) for day in days]
    jobs = [Job("111", s, s, period_end(s, grain), grain) for s in starts]
    clipped = Job("ALL", starts[0], starts[0], starts[0], grain)
    with store.lock("run"), store.writer("run") as writer:
        for job in jobs:
            writer.record_done(job, *reply(job), meta(job))
        writer.record_failed(clipped, "HTTP 400", None, meta(clipped, attempts=2))
    index = store.job_index()
    assert index.state(jobs[1].key) == "done"
    assert index.state(clipped.key) == "failed" and index.attempts(clipped.key) == 2
    assert index.state(("111", dt.date(2024, 2, 5))) is None
    assert index.state(("nope", starts[0])) is None
    assert index.done_window(jobs[2].key) == (starts[2], period_end(starts[2], grain))
    assert index.done_window(clipped.key) is None
    assert index.last_done_end("111") == period_end(starts[2], grain)
    assert index.last_done_end("ALL") is None
    assert (index.done, index.failed, len(index)) == (3, 1, 4)
    assert sorted(index) == sorted([*(j.key for j in jobs), clipped.key])
    if grain is not Grain.DAY:
        assert index.state(("111", starts[0] + dt.timedelta(days=1))) is None  # not a period


def test_open_index_of_a_missing_store_is_empty(tmp_path: Path) -> None:
    from harvester.store import open_index

    assert len(open_index(tmp_path / "nothing")) == 0


# -- status ---------------------------------------------------------------------------------------


def test_status_counts_coverage_gaps_files_and_last_run(
    tmp_path: Path, backend: str | None
) -> None:
    store = new_store(tmp_path, url=backend)
    days = [0, 1, 2, 5, 6, 9]
    write(store, [(day_job("111", D0 + dt.timedelta(days=d)), 0, 2) for d in days])
    with store.lock("run-2"), store.writer("run-2") as writer:
        job = day_job("222", D0)
        writer.record_failed(job, "HTTP 500", None, meta(job))
        job = day_job("111", D0 + dt.timedelta(days=9))
        writer.record_failed(job, "HTTP 500", None, meta(job))  # still covered: rows kept
    status = store.status()
    assert (status.jobs_done, status.jobs_failed, status.rows) == (5, 2, 12)
    by_phone = {p.phone: p for p in status.phones}
    one = by_phone["111"]
    assert (one.first_day, one.last_day) == (D0, D0 + dt.timedelta(days=9))
    assert one.gaps == (
        (D0 + dt.timedelta(days=3), D0 + dt.timedelta(days=4)),
        (D0 + dt.timedelta(days=7), D0 + dt.timedelta(days=8)),
    )
    assert status.gap_days == 4
    assert by_phone["222"].jobs_failed == 1 and by_phone["222"].first_day is None
    assert status.files["ledger"] == 2 and status.files["data"] == 2
    assert status.bytes["data"] > 0
    assert status.last_run is not None and status.last_run.run_id == "run-2"
    assert status.locked_by is None
    assert json.loads(json.dumps(status.to_dict()))["phones"][0]["gaps"][0][0] == "2024-02-02"


# -- set-up errors ---------------------------------------------------------------------------------


def test_ensure_writable_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StoreError, match=f"{path} is a file"):
        Store(path).ensure_writable("day")
    with pytest.raises(StoreError, match="cannot create"):
        Store(path / "sub").ensure_writable("day")


def test_ensure_writable_refuses_another_grain_and_foreign_folders(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.ensure_writable("day")  # idempotent
    with pytest.raises(StoreError, match="holds day windows, not week"):
        store.ensure_writable("week")
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        Store(foreign).ensure_writable("day")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_ensure_writable_refuses_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="not writable"):
            Store(folder).ensure_writable("day")
    finally:
        folder.chmod(0o755)


def test_writing_needs_the_lock(tmp_path: Path, backend: str | None) -> None:
    store = new_store(tmp_path, url=backend)
    with pytest.raises(StoreError, match="without holding its lock"):
        store.writer("run")


# -- lock ------------------------------------------------------------------------------------------


def test_a_second_holder_is_refused_with_pid_host_and_since(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    other = Store(store.path)
    with store.lock("first"):
        with pytest.raises(StoreLockedError) as caught, other.lock("second"):
            pass
        message = str(caught.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert "run first" in message
        assert store.status().locked_by is not None
        with store.lock("nested"):  # re-entrant within one Store
            pass
    with other.lock("second"):
        pass
    assert not (store.path / "harvester.lock").exists()


def test_a_lock_held_by_another_process(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    code = (
        "import sys, time; from harvester.store import Store\n"
        "with Store(sys.argv[1]).lock('child'):\n"
        "    print('locked', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(store.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=f"pid {child.pid}"), store.lock("me"):
            pass
    finally:
        child.kill()
        child.wait()
    with store.lock("me"):  # the kernel dropped the dead child's flock
        pass


def test_a_stale_lock_file_is_recovered_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store(tmp_path)
    lock = store.path / "harvester.lock"
    holder = {"pid": 999_999, "host": socket.gethostname(), "since": "2024-01-01", "run_id": "x"}
    lock.write_text(json.dumps(holder))
    assert store.status().locked_by is None
    with caplog.at_level(logging.WARNING), store.lock("me"):
        pass
    assert "stale lock" in caplog.text and "pid 999999" in caplog.text


def test_a_lock_file_from_another_host_is_not_recovered(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    holder = {"pid": 42, "host": "elsewhere", "since": "2024-01-01", "run_id": "x"}
    (store.path / "harvester.lock").write_text(json.dumps(holder))
    with pytest.raises(StoreLockedError, match=r"pid 42 on elsewhere.*delete"), store.lock("me"):
        pass


def test_files_that_are_not_part_of_the_tables_change_nothing(tmp_path: Path) -> None:
    """A junk `.parquet` file, a copy of a data file, a stray file: never read, never an error,
    never deleted (issue 12 item 9)."""
    store = new_store(tmp_path)
    jobs = [day_job("111", D0 + dt.timedelta(days=d)) for d in range(3)]
    write(store, [(job, 1, 2) for job in jobs])
    before = flow(store.path, "SELECT * FROM diagnostic_flow ORDER BY ALL")
    status = store.status()
    part = next((store.path / "data").rglob("part-*.parquet"))
    strays = [
        store.path / "data" / "junk.parquet",
        part.parent / "junk.parquet",
        part.parent / f"{part.stem} (copy).parquet",
        store.path / "ledger" / "notes.parquet",
    ]
    for stray in strays[:2] + strays[3:]:
        stray.write_bytes(b"not parquet at all")
    strays[2].write_bytes(part.read_bytes())
    assert flow(store.path, "SELECT * FROM diagnostic_flow ORDER BY ALL") == before
    assert store.status().rows == status.rows and store.status().files == status.files
    assert len(store.job_index()) == 3
    write(store, [(jobs[0], 2, 2)])  # a run that removes a file, then vacuums
    store.compact()
    assert all(stray.exists() for stray in strays)
    assert len(flow(store.path)) == 6


def filesystem_base(store: Store) -> str:
    """The data table's folder as :func:`_data_objects` names it."""
    url = store._layout.url
    return str(store.path / "data") if url is None else url.removeprefix("s3://") + "/data"


def _data_objects(store: Store) -> tuple[pafs.FileSystem, list[str]]:
    """A filesystem on the data table's folder (local or the loopback object store) and every
    Parquet file in it."""
    url = store._layout.url
    if url is None:
        filesystem: pafs.FileSystem = pafs.LocalFileSystem()
        base = str(store.path / "data")
    else:
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        filesystem = pafs.S3FileSystem(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region=os.environ["AWS_REGION"],
            endpoint_override=endpoint.split("://", 1)[1],
            scheme="http",
        )
        base = url.removeprefix("s3://").rstrip("/") + "/data"
    selector = pafs.FileSelector(base, recursive=True)
    paths = [
        info.path
        for info in filesystem.get_file_info(selector)
        if info.path.endswith(".parquet") and "_delta_log" not in info.path
    ]
    return filesystem, sorted(paths)


def test_files_a_killed_writer_never_committed_are_deleted_by_the_next_lock(
    tmp_path: Path, backend: str | None
) -> None:
    """kill -9 between a flush's files and its commit leaves files no version names (and their
    journal): the next holder of the lock deletes them as it takes it, even if it then commits
    nothing, so a plain reader of the folder stays exact; a user's copy is never touched. On
    object storage too (the journal is this machine's, so only its own writers' files go)."""
    store = new_store(tmp_path, url=backend)
    jobs = [day_job("111", D0 + dt.timedelta(days=d)) for d in range(3)]
    write(store, [(job, 1, 2) for job in jobs])
    filesystem, committed = _data_objects(store)
    tables = Tables(store._layout)
    table = tables.handle("data")
    journal = Journal(store._layout.root, "data")
    uncommitted = write_files(
        target(tables.uri("data"), store._layout.storage_options),
        [table.to_pyarrow_table()],
        pa.schema(table.schema().to_arrow()),
        ["month"],
        journal,
    )
    journal.close()  # the writer dies here: files written, no commit
    part = committed[0]
    copy = part.removesuffix(".parquet") + " (copy).parquet"
    filesystem.copy_file(part, copy)
    assert _data_objects(store)[1] == sorted(
        [*committed, copy, *(f"{filesystem_base(store)}/{a.path}" for a in uncommitted)]
    )
    with store.lock("next-run"):
        pass
    assert _data_objects(store)[1] == sorted([*committed, copy])
    if backend is None:  # a plain reader of the folder (a copy's name is no part file's)
        plain = duckdb.sql(
            f"SELECT count(*) FROM read_parquet('{store.path}/data/month=*/part-*0.zstd.parquet')"
        ).fetchall()
        assert plain == [(6,)]
    assert len(flow(store.path)) == 6


def test_bulk_plan_count_equals_the_job_by_job_walk(tmp_path: Path) -> None:
    """plan.count's per-phone array count (what `harvester plan` uses on a daily store) gives
    the same figures as asking the index job by job, for pulls and syncs over random histories:
    done, failed and done-then-failed jobs, fetched on various days (late-data re-fetches)."""
    import random

    from harvester.plan import CountingIndex, Plan, PlanCount, count, pull_plan, sync_plan

    rng = random.Random(7)
    store = new_store(tmp_path)
    phones = ("+15550001", "+15550002", "+15550003")
    with store.lock("run"), store.writer("run") as writer:
        for phone in phones:
            for offset in range(40):
                day = D0 + dt.timedelta(days=offset)
                if rng.random() < 0.25:
                    continue  # never fetched
                job = day_job(phone, day)
                fetched = day + dt.timedelta(days=rng.randint(1, 5))
                at = dt.datetime.combine(fetched, dt.time(3), tzinfo=dt.UTC)
                parsed, body = reply(job)
                writer.record_done(job, parsed, body, meta(job, at=at))
                if rng.random() < 0.3:  # a later fetch failed: transiently or rejected
                    status = rng.choice((500, None, 200, 400, 404))
                    failure = FetchMeta(
                        fetched_at=at, attempts=1, http_status=status, request_path=job.path
                    )
                    rejected = status in (400, 404)
                    writer.record_failed(job, f"HTTP {status}", None, failure, rejected=rejected)
    index = store.job_index()
    assert isinstance(index, CountingIndex)

    def walk(plan: Plan) -> PlanCount:
        total = done = failed = to_fetch = retry = 0
        for job in plan.jobs():
            state = index.state(job.key)
            pending = plan.is_pending(job, state, index)
            total += 1
            done += state == "done"
            failed += state == "failed"
            retry += state == "failed" and pending
            to_fetch += pending
        new = total - done - failed
        return PlanCount(total, done, failed, to_fetch, to_fetch - new - retry, retry)

    plans = [
        pull_plan(phones, D0 - dt.timedelta(days=5), D0 + dt.timedelta(days=50), Grain.DAY),
        pull_plan((*phones, "+15550009"), D0 + dt.timedelta(days=3), D0, Grain.DAY),
    ]
    for today_offset in (10, 30, 41, 44, 60):
        for lookback in (0, 2, 4):
            today = D0 + dt.timedelta(days=today_offset)
            plans.append(sync_plan(phones, D0, today, Grain.DAY, lookback))
    late_seen = retry_seen = 0
    for plan in plans:
        expected = walk(plan)
        assert count(plan, index) == expected, plan
        late_seen += expected.refetch
        retry_seen += expected.retry
    # the histories exercise the late-data rule, and both kinds of failure
    assert late_seen > 0 and retry_seen > 0
    rejected = sum(index.rejected(key) for key in index)
    assert 0 < rejected < sum(index.state(key) == "failed" for key in index)


def test_rows_as_arrow_or_as_column_mappings_store_alike(
    tmp_path: Path, backend: str | None
) -> None:
    """record_done takes the item columns as an Arrow table or as a mapping of columns (what
    the scheduler passes: converted once per flush); one batch may mix both."""
    store = new_store(tmp_path, url=backend)
    jobs = [day_job("111", D0 + dt.timedelta(days=d)) for d in range(4)]
    with store.lock("run"), store.writer("run") as writer:
        for n, job in enumerate(jobs):
            parsed, body = parsed_reply(job, n, items=n + 1)
            rows = arrow(parsed) if n % 2 else parsed.columns()
            writer.record_done(job, rows, body, meta(job))
        with pytest.raises(ValueError, match="item columns"):
            writer.record_done(jobs[0], {"visits": [1]}, b"{}", meta(jobs[0]))
    got = flow(store.path, "SELECT * EXCLUDE (fetched_at) FROM diagnostic_flow ORDER BY ALL")
    expected = sorted(
        (job.phone, job.window_start, job.window_end, *row)
        for n, job in enumerate(jobs)
        for row in parsed_reply(job, n, items=n + 1)[0].rows()
    )
    assert got == expected
    assert store.status().rows == 1 + 2 + 3 + 4
