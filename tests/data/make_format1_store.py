"""Writes tests/data/format1_store with the format-1 harvester: run with that version's code,

    PYTHONPATH=<checkout of the format-1 harvester> python tests/data/make_format1_store.py \\
        tests/data/format1_store

and ``format1_expected.json`` beside it (what that version's views showed). Not a test module:
tests/test_delta_migrate.py reads what it wrote.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from harvester.reply import parse_reply
from harvester.views import connect

import harvester
from harvester.jobs import Job
from harvester.store import FetchMeta, Store

AT = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
DAYS = [dt.date(2024, 1, 28) + dt.timedelta(days=i) for i in range(8)]


def body(job: Job, generation: int, items: int = 3) -> bytes:
    entries = [
        {
            **{"page": f"p{i}.php", "form": "f", "item": f"i{i}", "visits": generation},
            **{"filled": i, "nomatch": job.window_start.toordinal() % 97, "noinput": 0},
            **{"transfer": 0, "disconnect": 1},
        }
        for i in range(items)
    ]
    return json.dumps({"applications": {f"https://app/{job.phone}": entries}}).encode()


def meta(job: Job, attempts: int = 1, status: int = 200) -> FetchMeta:
    return FetchMeta(fetched_at=AT, attempts=attempts, http_status=status, request_path=job.path)


def main(out: Path) -> None:
    store = Store(out)
    store.ensure_writable("day")
    jobs = [Job(p, d, d, d) for p in ("6175550101", "ALL") for d in DAYS]
    with store.lock("run-1"), store.writer("run-1", flush_jobs=5) as writer:
        for job in jobs:
            reply = body(job, 1)
            writer.record_done(job, parse_reply(reply), reply, meta(job))
            if writer.flush_due():
                writer.flush()
    with store.lock("run-2"), store.writer("run-2", flush_jobs=5) as writer:
        for job in jobs[::3]:  # re-fetches: the superseded rows stay in the old files
            reply = body(job, 2, 2)
            writer.record_done(job, parse_reply(reply), reply, meta(job, 2))
        writer.record_failed(jobs[1], "HTTP 500: boom", None, meta(jobs[1], 3, 500))
        day = dt.date(2024, 2, 10)
        rejected = Job("6175550101", day, day, day)
        writer.record_failed(rejected, "HTTP 404: no such number", b"{}", meta(rejected, 1, 404))
        day = dt.date(2024, 2, 11)
        bad = Job("ALL", day, day, day)
        writer.record_failed(bad, "invalid reply: x", b"<html>", meta(bad), True)
    con = connect(out)
    rows = con.execute("SELECT * FROM diagnostic_flow ORDER BY ALL").fetchall()
    states = con.execute(
        "SELECT phone, CAST(period AS VARCHAR), state, total_attempts "
        "FROM ledger_latest ORDER BY ALL"
    ).fetchall()
    expected = {
        "written_by": f"harvester {harvester.__version__} (format 1)",
        "diagnostic_flow": [[str(v) for v in r] for r in rows],
        "ledger_latest": [list(r) for r in states],
    }
    (out.parent / "format1_expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
