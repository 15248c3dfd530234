"""What a writer remembers of the jobs it stored stays small, and still finds their rows.

A writer keeps, for every job it stored, the month partition of its rows: a later fetch of the
job in the same run must replace them. Kept as a dict of job keys that was ~160 bytes a job, the
largest thing a 100,000-job pull's heap grew by.
"""

from __future__ import annotations

import datetime as dt
import random
import tracemalloc
from pathlib import Path

from harvester.store import schema as s
from harvester.store.stored_months import StoredMonths
from tests.test_store import day_job, flow, meta, new_store, reply

D0 = dt.date(2024, 1, 30)


def test_a_job_fetched_again_by_the_same_writer_replaces_its_rows(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    # days on both sides of the first job's, so the remembered span grows both ways
    days = [D0, D0 + dt.timedelta(days=40), D0 - dt.timedelta(days=400)]
    jobs = [day_job(phone, day) for day in days for phone in ("111", "ALL")]
    with store.lock("run"), store.writer("run", flush_jobs=500) as writer:
        for generation in range(3):  # each generation a flush of its own
            for job in jobs:
                writer.record_done(job, *reply(job, generation, items=2), meta(job))
            writer.flush()
    rows = flow(store.path, "SELECT phone, window_start, visits FROM diagnostic_flow")
    assert len(rows) == 2 * len(jobs)  # no duplicates: every re-fetch replaced the one before
    assert {r[:2] for r in rows} == {(j.phone, j.window_start) for j in jobs}
    assert {r[2] for r in rows} == {2}  # visits holds the generation: the last one's rows only


def test_what_a_writer_remembers_takes_bytes_per_day_not_a_dict_entry_per_job() -> None:
    rng = random.Random(7)
    stored = StoredMonths()
    phones = [f"61755501{i:02d}" for i in range(4)]
    start = dt.date(2000, 1, 1)
    days = [start + dt.timedelta(days=d) for d in range(25_000)]
    tracemalloc.start()
    try:
        for phone in phones:
            for day in days:
                stored.set(phone, day, day)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used < 1_000_000  # 100,000 jobs; a dict of job keys took ~16 MB
    for _ in range(1000):
        phone, day = rng.choice(phones), rng.choice(days)
        assert stored.get(phone, day) == s.month_of(day)
    assert stored.get(phones[0], start - dt.timedelta(days=1)) is None
    assert stored.get("other", start) is None
    # a weekly or monthly job's rows are in its window_start's month, whatever its period
    stored.set("x", dt.date(2024, 3, 1), dt.date(2024, 2, 26))
    assert stored.get("x", dt.date(2024, 3, 1)) == "2024-02"
