"""Crash safety: a writer killed with SIGKILL at random moments never leaves a duplicate row.

A child process writes re-fetches of a small set of jobs in tiny batches and compacts every few
flushes, so kills land mid-flush, between the ledger and data commits, mid-compaction and
mid-vacuum. After every kill the data table must be readable, hold no duplicate and show every
job's rows from exactly one fetch, with the ledger knowing each such job as done; once the next
writer has taken the lock (which undoes a flush cut between its two commits), every done job
shows exactly the rows of the one fetch its ledger names. The next child also has to recover
the dead one's lock.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import duckdb

from harvester.store import Store, connect_base, retry_read
from tests.support import start_python

QUERIES = Path(__file__).resolve().parents[1] / "queries"
KILLS = 12
# A child's first flush takes well under a second; far more means it hangs.
FIRST_FLUSH_TIMEOUT_SECONDS = 60.0

# A reply's items and counters are a function of its generation, so the parent can check that a
# job's visible rows are exactly one fetch: 1 + generation % 4 items, all with visits = generation.
CHILD = r"""
import datetime as dt, json, random, sys
import pyarrow as pa
from harvester.items import item_schema
from harvester.jobs import Job
from harvester.api.reply import parse_reply
from harvester.store import FetchMeta, Store

root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
store = Store(root)
store.ensure_writable("day")
with store.lock(f"run-{seed}"):
    writer = store.writer(f"run-{seed}", flush_jobs=rng.randint(2, 6))
    print("ready", flush=True)
    generation, flushes = seed * 1_000_000, 0
    while True:
        generation += 1
        day = dt.date(2024, 1, 20) + dt.timedelta(days=rng.randrange(20))
        job = Job(rng.choice(["111", "222", "ALL"]), day, day, day)
        meta = FetchMeta(dt.datetime.now(dt.UTC), 1, 200, job.path)
        if rng.random() < 0.1:
            writer.record_failed(job, "HTTP 500", None, meta)
        else:
            items = [
                {"page": f"p{i}", "form": "f", "item": "i", "visits": generation, "filled": 0,
                 "nomatch": 0, "noinput": 0, "transfer": 0, "disconnect": 0}
                for i in range(1 + generation % 4)
            ]
            body = json.dumps({"applications": {"https://app": items}}).encode()
            rows = pa.table(parse_reply(body).columns(), schema=item_schema())
            writer.record_done(job, rows, body, meta)
        if writer.flush_due():
            writer.flush()
            flushes += 1
            if flushes == 1:
                print("flushed", flush=True)
            if flushes % 7 == 0:
                store.compact()
"""

CHECK = """
WITH per_job AS (
    SELECT phone, window_start, count(*) AS n, count(DISTINCT visits) AS fetches,
           min(visits) AS generation, count(DISTINCT page) AS pages
    FROM diagnostic_flow GROUP BY phone, window_start
)
SELECT
    (SELECT count(*) FROM ledger_current) AS done_jobs,
    (SELECT count(*) FROM per_job) AS jobs_with_rows,
    (SELECT count(*) FROM per_job p ANTI JOIN ledger_current l
         ON p.phone = l.phone AND p.window_start = l.window_start) AS rows_of_unknown_jobs,
    (SELECT count(*) FROM per_job WHERE n <> pages OR fetches <> 1
                                        OR n <> 1 + generation % 4) AS bad_jobs,
    (SELECT count(*) FROM ledger_current l LEFT JOIN per_job p
         ON p.phone = l.phone AND p.window_start = l.window_start
     WHERE coalesce(p.n, 0) <> l.rows) AS rows_mismatch
"""


def check(root: Path, *, after_lock: bool = True) -> tuple[int, int]:
    """The data invariants always; the ledger's agreement with the data once a writer has
    taken the lock (``after_lock``), as the next run does first."""
    if after_lock:
        with Store(root).lock("check"):
            pass
    con = connect_base(root)
    view = (QUERIES / "diagnostic_flow.sql").read_text()
    retry_read(lambda: con.execute(view))
    done_jobs, with_rows, unknown, bad, mismatch = retry_read(
        lambda: con.execute(CHECK).fetchall()
    )[0]
    assert bad == 0, "a job shows rows of more than one fetch, or duplicates"
    assert unknown == 0, "rows of a job the ledger does not know as done"
    if after_lock:
        assert mismatch == 0, "a done job's rows differ from its ledger record"
        assert with_rows == done_jobs
    return done_jobs, with_rows


def test_sigkill_at_random_moments_never_duplicates_or_loses_rows(tmp_path: Path) -> None:
    root = tmp_path / "store"
    rng = random.Random(7)
    for kill in range(1, KILLS + 1):
        # forked from the suite's CLI server, its imports done (a process of its own all the
        # same: SIGKILL ends it as it would any writer)
        child = start_python(
            CHILD, [str(root), str(kill)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            child.kill()
            _, err = child.communicate()
            raise AssertionError(f"child {kill} did not start: {line!r} {err}")
        if kill % 2 == 0:
            # every second kill lands after the child's first commit, so the run is sure to have
            # committed something even when a loaded machine makes every start slow
            watchdog = threading.Timer(FIRST_FLUSH_TIMEOUT_SECONDS, child.kill)
            watchdog.start()
            line = child.stdout.readline()
            watchdog.cancel()
            assert line.strip() == "flushed", (line, child.communicate()[1])
        time.sleep(rng.uniform(0.05, 0.5))
        assert child.poll() is None, child.communicate()[1]
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        check(root, after_lock=False)
        check(root)
    done_before, _ = check(root)
    assert done_before > 0
    snapshot = "SELECT * FROM diagnostic_flow ORDER BY ALL"
    con = connect_base(root)
    con.execute((QUERIES / "diagnostic_flow.sql").read_text())
    before = con.execute(snapshot).fetchall()
    Store(root).compact()
    con = connect_base(root)
    con.execute((QUERIES / "diagnostic_flow.sql").read_text())
    assert con.execute(snapshot).fetchall() == before
    # at rest, a plain Parquet reader over the data folder sees exactly the same rows
    plain = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{root}/data/month=*/*.parquet')"
    ).fetchall()
    assert plain == [(len(before),)]
