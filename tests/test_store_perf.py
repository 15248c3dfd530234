"""The store's write path stays cheap as a run grows (issue 15's pipeline figures): the Delta log a
commit replays stays short, delta-rs's allocator returns freed memory, and the rows a flush
builds are the same whichever form the replies came in."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from harvester.store import schema as s
from harvester.store.data_rows import data_table
from harvester.store.tables import JEMALLOC_CONF, JEMALLOC_ENV
from harvester.store.writer import _Entry
from tests.test_store import D0, day_job, meta, new_store, parsed_reply, write

REPO = Path(__file__).resolve().parents[1]


def test_the_log_a_commit_replays_stays_short_over_many_flushes(tmp_path: Path) -> None:
    # delta-rs 1.6 replays every log entry since the last checkpoint at each commit: with
    # Delta's default of a checkpoint every 100 commits a run's commits got ~4x dearer
    store = new_store(tmp_path)
    jobs = [day_job("111", D0 + dt.timedelta(days=d)) for d in range(25)]
    write(store, [(job, 1, 2) for job in jobs], flush_jobs=1)  # 25 flushes
    for kind in s.KINDS:
        log = store.path / kind / "_delta_log"
        assert list(log.glob("*.checkpoint.parquet")), kind
        assert len(list(log.glob("*.json"))) <= 10, kind  # older entries cleaned up
        table = DeltaTable(str(store.path / kind))
        assert table.version() == 25  # create + one commit per flush: nothing lost
    # the rows are all there, once
    data = DeltaTable(str(store.path / "data")).to_pyarrow_table()
    assert data.num_rows == 50 and len(set(data.column("job_key").to_pylist())) == 25


def test_delta_rs_allocator_returns_freed_pages_unless_the_user_says_otherwise() -> None:
    show = f"import os, harvester.store.tables, deltalake; print(os.environ.get({JEMALLOC_ENV!r}))"
    env = {k: v for k, v in os.environ.items() if k != JEMALLOC_ENV}
    ran = subprocess.run(
        [sys.executable, "-c", show], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert ran.stdout.strip() == JEMALLOC_CONF, ran.stderr
    env[JEMALLOC_ENV] = "narenas:2"
    ran = subprocess.run(
        [sys.executable, "-c", show], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert ran.stdout.strip() == "narenas:2", ran.stderr


def test_flush_rows_are_the_same_from_column_mappings_arrow_tables_or_both() -> None:
    entries = []
    for d in range(6):
        for phone in ("222", "111", "ALL"):
            job = day_job(phone, D0 + dt.timedelta(days=d))
            parsed, body = parsed_reply(job, d, items=d % 3)  # some replies are empty
            entry = _Entry(job, "done", parsed.columns(), body, meta(job), 100 * d + len(phone))
            entry.count = len(parsed)
            entries.append(entry)
    schema = s.data_schema()
    mappings = data_table(entries, schema)
    for entry in entries:
        assert isinstance(entry.rows, dict)
        entry.rows = pa.table(entry.rows)
    tables = data_table(entries, schema)
    for i, entry in enumerate(entries):  # every other reply back to a mapping
        if i % 2 and isinstance(entry.rows, pa.Table):
            entry.rows = entry.rows.to_pydict()
    mixed = data_table(entries, schema)
    assert mappings.num_rows == sum(e.count for e in entries) > 0
    assert mappings.equals(tables) and mappings.equals(mixed)
    assert mappings.schema == schema
    assert all(column.num_chunks == 1 for column in mappings.columns)
    assert mappings.column("phone").to_pylist()[0] == "111"  # grouped by phone, then day
