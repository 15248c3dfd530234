"""The store as seen by engines other than the harvester, and store paths a glob would misread.

* DuckDB's plain ``read_parquet`` over ``data/`` at rest, after a pull and daily syncs whose
  lookback re-fetches days (the case that showed 22% duplicates before the Delta layout); on
  object storage, pyarrow's own S3 client reading every Parquet file under ``data/``;
* delta-rs's own reader, sampled at random moments while a pull re-fetches every job;
* a store folder named ``st[1]`` or ``s?`` (next to a store ``sA``) through the CLI.

The first two run on a local folder and on an ``s3://`` URL of the loopback S3 server (the
``backend`` fixture of tests/s3_server.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.store.location import STATE_DIR_ENV
from tests.s3_server import S3Server
from tests.support import (
    assert_store_matches_truth,
    cli_env,
    days,
    run_cli,
    start_cli,
    write_config,
)

D = dt.date
START = D(2024, 3, 1)
PHONES = ["6175550101", "6175550103", "ALL"]
ITEM = ("application", "page", "form", "item")
COUNTERS = ("visits", "filled", "nomatch", "noinput", "transfer", "disconnect")


# Samples the data table with delta-rs's reader at random moments until the stop file appears;
# one JSON line per sample into a file (a pipe would fill and block it): the version and every
# row (the contract's key and item columns).
SAMPLER = r"""
import json, random, sys, time
from pathlib import Path
from deltalake import DeltaTable
table, stop, out = sys.argv[1], Path(sys.argv[2]), open(sys.argv[3], "w")
columns = ["phone", "window_start", "window_end", "application", "page", "form", "item",
           "visits", "filled", "nomatch", "noinput", "transfer", "disconnect"]
rng = random.Random(15)
print("ready", flush=True)
while True:
    last = stop.exists()
    try:
        current = DeltaTable(table)
        data = current.to_pyarrow_table(columns=columns)
    except Exception as exc:  # the run's final vacuum removed a file this version listed
        print("retrying after", type(exc).__name__, file=sys.stderr, flush=True)
        continue
    rows = [[str(v) if i in (1, 2) else v for i, v in enumerate(row)]
            for row in zip(*(data.column(c).to_pylist() for c in columns))]
    out.write(json.dumps({"version": current.version(), "rows": rows}) + "\n")
    out.flush()
    if last:
        break
    time.sleep(rng.uniform(0.0, 0.05))
"""


def _truth_check(
    rows: list[tuple[object, ...]], sim: SimulatorServer
) -> Counter[tuple[object, ...]]:
    """Every job's rows equal the simulator's truth and none is there twice; per-job counts."""
    per_job: dict[tuple[object, ...], list[tuple[object, ...]]] = {}
    for row in rows:
        per_job.setdefault(row[:3], []).append(row[3:])
    for (phone, start, end), got in per_job.items():
        assert len(got) == len(set(got)), f"duplicate rows for {phone} {start}"
        assert set(got) == sim.truth_rows(str(phone), start, end), f"rows differ: {phone} {start}"  # type: ignore[arg-type]
    return Counter({key: len(v) for key, v in per_job.items()})


def store_config(
    tmp_path: Path, sim: SimulatorServer, url: str | None, **kwargs: object
) -> tuple[Path, Path]:
    """A config for ``sim`` whose store is ``tmp_path/store`` or ``url``; (config, store)."""
    config = write_config(tmp_path, sim, **kwargs)  # type: ignore[arg-type]
    if url is None:
        return config, tmp_path / "store"
    config.write_text(config.read_text().replace('path = "store"', f'path = "{url}"'))
    return config, Path(url)


def store_env(sim: SimulatorServer | None = None) -> dict[str, str]:
    """The CLI's environment: the password, and the S3 variables and companion folder that the
    ``s3_env`` fixture put in this process's environment (if any)."""
    state = {STATE_DIR_ENV: os.environ[STATE_DIR_ENV]} if STATE_DIR_ENV in os.environ else {}
    return cli_env(sim, **state)


def plain_parquet_rows(
    store: Path, url: str | None, request: pytest.FixtureRequest
) -> list[tuple[object, ...]]:
    """Every row of every Parquet file under ``data/``, read as a plain Parquet reader would,
    knowing nothing of Delta: DuckDB's glob locally, pyarrow's S3 client on object storage."""
    columns = ("phone", "window_start", "window_end", *ITEM, *COUNTERS)
    if url is None:
        return duckdb.sql(
            f"SELECT {', '.join(columns)} FROM read_parquet('{store}/data/month=*/*.parquet')"
        ).fetchall()
    import pyarrow.parquet as pq
    from pyarrow import fs

    server: S3Server = request.getfixturevalue("s3_server")
    s3 = server.filesystem()
    found = s3.get_file_info(fs.FileSelector(f"{url[len('s3://') :]}/data", recursive=True))
    files = [f.path for f in found if "/month=" in f.path and f.path.endswith(".parquet")]
    assert files
    rows: list[tuple[object, ...]] = []
    for name in files:
        table = pq.read_table(name, columns=list(columns), filesystem=s3)
        rows += zip(*(table.column(c).to_pylist() for c in columns), strict=True)
    return rows


def test_plain_read_parquet_at_rest_equals_the_truth_after_pull_and_lookback_syncs(
    tmp_path: Path, backend: str | None, request: pytest.FixtureRequest
) -> None:
    settings = SimulatorSettings(limit=500, window_seconds=2, today=D(2024, 3, 10), settle_days=3)
    with SimulatorServer(settings) as sim:
        config, store = store_config(
            tmp_path, sim, backend, phones=PHONES, start=START, lookback_days=3
        )
        env = store_env(sim)
        pulled = run_cli(["pull", "-c", str(config), "--today", "2024-03-10"], env=env)
        assert pulled.returncode == 0, pulled.stderr
        # four daily syncs (the case); on S3 two, each ~5 s against moto, re-fetch every
        # lookback day as well
        syncs = 4 if backend is None else 2
        last = D(2024, 3, 10) + dt.timedelta(days=syncs)
        for today in days(D(2024, 3, 11), last):
            sim.settings.today = today
            done = run_cli(["sync", "-c", str(config), "--today", today.isoformat()], env=env)
            assert done.returncode == 0, done.stderr
        counts = _truth_check(plain_parquet_rows(store, backend, request), sim)
        yesterday = last - dt.timedelta(days=1)
        assert set(counts) == {(p, d, d) for p in PHONES for d in days(START, yesterday)}
        assert_store_matches_truth(store, sim, PHONES, START, yesterday)


def test_deltalake_reader_at_random_moments_of_a_pull_with_refetches_equals_the_truth(
    tmp_path: Path, backend: str | None
) -> None:
    settings = SimulatorSettings(
        limit=100_000, window_seconds=60, today=D(2024, 5, 1), latency=0.01
    )
    # 60 days x 3 (30 on S3, where each commit is slower): a re-fetching pull of several seconds
    end = D(2024, 4, 29) if backend is None else D(2024, 3, 30)
    with SimulatorServer(settings) as sim:
        # the first pull fills the store in a few large flushes (its versions are not sampled);
        # the re-fetching pull flushes every few jobs, so the samples meet many versions
        filling, _ = store_config(
            tmp_path, sim, backend, phones=PHONES, start=START, end=end, name="filling.toml"
        )
        config, store = store_config(
            tmp_path,
            sim,
            backend,
            phones=PHONES,
            start=START,
            end=end,
            concurrency=4,
            flush_jobs=6,
            flush_seconds=0.1,
        )
        env = store_env(sim)
        first = run_cli(["pull", "-c", str(filling), "--today", "2024-05-01"], env=env)
        assert first.returncode == 0, first.stderr
        jobs = {(p, d, d) for p in PHONES for d in days(START, end)}
        with_rows = {job for job in jobs if sim.truth_rows(*job)}  # a quiet day has none
        table = f"{backend}/data" if backend else store / "data"
        stop, found = tmp_path / "stop-sampling", tmp_path / "samples.jsonl"
        # delta-rs's own reader in a process of its own: delta-rs may abort a process at exit
        # ("terminate called without an active exception"), which must not take pytest with it;
        # on S3 it finds the server and credentials in the environment, as any reader would
        sampler = subprocess.Popen(
            [sys.executable, "-c", SAMPLER, str(table), str(stop), str(found)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert sampler.stdout is not None and sampler.stdout.readline().strip() == "ready"
        proc = start_cli(
            ["-q", "pull", "-c", str(config), "--refetch", "--today", "2024-05-01"],
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            proc.wait(timeout=120)
        finally:
            stop.touch()
            _, err = sampler.communicate(timeout=60)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        samples = [json.loads(line) for line in found.read_text().splitlines()]
        assert len(samples) >= 3, err[-2000:]
        versions = {sample["version"] for sample in samples}
        for sample in samples:
            rows = [
                (r[0], dt.date.fromisoformat(r[1]), dt.date.fromisoformat(r[2]), *r[3:])
                for r in sample["rows"]
            ]
            counts = _truth_check(rows, sim)
            assert set(counts) == with_rows, "a job's rows vanished or appeared"
        refetched = Counter(e.path for e in sim.log.entries() if e.outcome == "ok")
        assert set(refetched.values()) == {2}  # every job really was fetched again
        assert len(versions) >= 3, versions  # the samples saw the table change under them


@pytest.fixture
def sim() -> SimulatorServer:
    settings = SimulatorSettings(limit=500, window_seconds=2, today=D(2024, 3, 10))
    with SimulatorServer(settings) as server:
        yield server  # type: ignore[misc]


# Local only: folder names with glob characters are a local file system's matter.
def test_store_folders_with_glob_characters(tmp_path: Path, sim: SimulatorServer) -> None:
    """``s?`` and ``s*`` work like any folder and never read the sibling ``sA``; ``st[1]``, which
    delta-rs cannot address, is refused in one line before anything is written (issue 12 item
    10: the old layout failed on the second pull with a traceback, and ``s?`` read ``sA``)."""
    env = cli_env(sim)
    results = {}
    stores = (("sA", ["6175550108"]), ("s?", PHONES[:1]), ("s*", PHONES[1:2]))
    for name, phones in stores:
        config = _config(tmp_path, sim, name, phones)
        for end in ("2024-03-04", "2024-03-08"):  # pull twice
            done = run_cli(
                ["pull", "-c", str(config), "--end", end, "--today", "2024-03-10"], env=env
            )
            assert done.returncode == 0, (name, done.stderr)
        status = run_cli(["status", "--store", str(tmp_path / name), "--json"])
        assert status.returncode == 0, (name, status.stderr)
        assert json.loads(status.stdout)["jobs_done"] == 8
        query = run_cli(
            [
                *("query", "--store", str(tmp_path / name), "--format", "json"),
                "SELECT DISTINCT phone FROM diagnostic_flow",
            ]
        )
        assert query.returncode == 0, (name, query.stderr)
        results[name] = {r["phone"] for r in json.loads(query.stdout)}
        assert_store_matches_truth(tmp_path / name, sim, phones, START, D(2024, 3, 8))
    assert results == {"sA": {"6175550108"}, "s?": {PHONES[0]}, "s*": {PHONES[1]}}
    mark = len(sim.log)
    config = _config(tmp_path, sim, "st[1]", PHONES[:1])
    refused = run_cli(["pull", "-c", str(config), "--today", "2024-03-10"], env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "st[1]" in refused.stderr and "'['" in refused.stderr
    assert len(sim.log) == mark and not (tmp_path / "st[1]").exists()  # nothing sent or written
    status = run_cli(["status", "--store", str(tmp_path / "st[1]")])
    assert status.returncode == 2 and "Traceback" not in status.stderr, status.stderr


def _config(tmp_path: Path, sim: SimulatorServer, store: str, phones: list[str]) -> Path:
    config = write_config(tmp_path, sim, phones=phones, start=START, name=f"{store}.toml")
    config.write_text(config.read_text().replace('path = "store"', f'path = "{store}"'))
    return config
