"""A store on object storage (``store.path = "s3://bucket/prefix"``) against a real S3 API on
loopback (moto's server over HTTP): the CLI end to end, kill -9, two writers on one table, and
no credential in any output."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest

from harvester.analysis import bundled_views
from harvester.simulator import SimulatorServer, SimulatorSettings
from tests.s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support import (
    PASSWORD_ENV,
    assert_store_matches_truth,
    cli_env,
    run_cli,
    start_cli,
    write_config,
)

START, END = dt.date(2024, 3, 25), dt.date(2024, 4, 3)
# A few days after END: the sync replaces the lookback's days and adds new ones, no more (each
# day is three jobs committed to the loopback S3 server; 28 days of them proved nothing more).
TODAY = dt.date(2024, 4, 8)


def s3_config(tmp_path: Path, sim: SimulatorServer, url: str, **kwargs: object) -> Path:
    config = write_config(tmp_path, sim, start=START, end=END, **kwargs)  # type: ignore[arg-type]
    config.write_text(config.read_text().replace('path = "store"', f'path = "{url}"'))
    return config


def cli(
    args: list[str], sim: SimulatorServer, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    result = run_cli(args, env=cli_env(sim, **env))
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert secret not in result.stdout + result.stderr, args
    return result


def test_pull_sync_views_export_report_compact_status_migrate_on_s3(
    tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str]
) -> None:
    url = s3_server.new_url()
    settings = SimulatorSettings(limit=100_000, window_seconds=60, today=TODAY, latency=0.0)
    with SimulatorServer(settings) as sim:
        phones = [*sim.settings.phones, "ALL"]
        config = s3_config(tmp_path, sim, url, phones=phones, flush_jobs=7)
        today = ["--today", TODAY.isoformat()]
        pulled = cli(["-q", "pull", "-c", str(config), *today], sim, s3_env)
        assert pulled.returncode == 0, pulled.stderr
        assert_store_matches_truth(Path(url), sim, phones, START, END)
        synced = cli(["-q", "sync", "-c", str(config), *today], sim, s3_env)
        assert synced.returncode == 0, synced.stderr
        end = TODAY - dt.timedelta(days=1)  # sync fetches through yesterday
        assert_store_matches_truth(Path(url), sim, phones, START, end)

        # every bundled view evaluated whole (a hash of each row) by one `query` through the
        # CLI and its SQL guard; each view's row count is checked against the exported file below
        views = [name for name, _ in bundled_views()]
        every_view = " UNION ALL ".join(
            f"SELECT '{name}' AS view, count(*) AS row_count, sum(hash(t)) AS digest "
            f"FROM {name} AS t"
            for name in views
        )
        query = cli(["query", "-c", str(config), every_view, "--format", "csv"], sim, s3_env)
        assert query.returncode == 0, query.stderr
        counted = {
            line.split(",")[0]: int(line.split(",")[1]) for line in query.stdout.splitlines()[1:]
        }
        assert sorted(counted) == sorted(views)
        # the SQL guard still holds: no file outside the store's read cache
        guarded = cli(
            ["query", "-c", str(config), "SELECT * FROM read_csv('/etc/passwd')"], sim, s3_env
        )
        assert guarded.returncode == 2 and "Traceback" not in guarded.stderr

        exported = tmp_path / "flow.duckdb"
        export = cli(["export-duckdb", "-c", str(config), str(exported)], sim, s3_env)
        assert export.returncode == 0, export.stderr
        import duckdb

        con = duckdb.connect(str(exported), read_only=True)
        try:
            rows = con.execute("SELECT count(*) FROM diagnostic_flow").fetchall()[0][0]
            in_file = {
                name: con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0] for name in views
            }
        finally:
            con.close()
        assert rows == sum(len(sim.truth_rows(p, d, d)) for p in phones for d in _days(START, end))
        assert in_file == counted

        report = cli(["report", "-c", str(config), "--out", str(tmp_path / "r.html")], sim, s3_env)
        assert report.returncode == 0, report.stderr
        compact = cli(["compact", "-c", str(config)], sim, s3_env)
        assert compact.returncode == 0, compact.stderr
        assert_store_matches_truth(Path(url), sim, phones, START, end)
        status = cli(["status", "-c", str(config), "--json"], sim, s3_env)
        assert status.returncode == 0, status.stderr
        migrate = cli(["migrate", "-c", str(config)], sim, s3_env)
        assert migrate.returncode == 2
        assert len(migrate.stderr.strip().splitlines()) == 1 and "object storage" in migrate.stderr


def test_a_pull_killed_on_s3_resumes_to_the_truth(
    tmp_path: Path, s3_server: S3Server, s3_env: dict[str, str]
) -> None:
    url = s3_server.new_url()
    settings = SimulatorSettings(
        limit=100_000, window_seconds=60, today=TODAY, latency=0.01, jitter=0.02
    )
    with SimulatorServer(settings) as sim:
        phones = [*sim.settings.phones, "ALL"]
        config = s3_config(tmp_path, sim, url, phones=phones, flush_jobs=4, flush_seconds=0.2)
        args = ["-q", "pull", "-c", str(config), "--today", TODAY.isoformat()]
        for delay in (1.5, 2.5):
            process = start_cli(args, env=cli_env(sim, **s3_env))
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
        # the resuming run is not killed: it flushes at the default sizes (a few commits to the
        # loopback S3 server, not one per four jobs)
        resume = s3_config(tmp_path, sim, url, phones=phones, name="resume.toml")
        final = cli(["-q", "pull", "-c", str(resume), "--today", TODAY.isoformat()], sim, s3_env)
        assert final.returncode == 0, final.stderr
        assert_store_matches_truth(Path(url), sim, phones, START, END)


def test_two_writers_replacing_on_one_s3_table_both_commit_once(
    s3_server: S3Server, s3_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Two writers (no shared lock: two machines) replace rows of one table at once: the
    conditional-put commit lets one win each version, the loser redoes its commit on the new
    version, and both batches end in the table exactly once."""
    import threading

    from deltalake import DeltaTable

    from harvester.store import schema as s
    from harvester.store.tables import Tables

    url = s3_server.new_url()
    Tables(s.Layout(url)).create_missing()
    table_uri = f"{url}/{s.LEDGER_DIR}"
    schema = pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())])
    from deltalake import write_deltalake

    # one file that both writers' predicates match: their replaces conflict for real
    seed = pa.table({"k": ["a", "b", "seed"], "v": [0, 0, 0]}, schema=schema)
    write_deltalake(table_uri, seed, schema_mode="overwrite", mode="overwrite")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    caplog.set_level("INFO", logger="harvester.store.tables")

    def writer(name: str) -> None:
        tables = Tables(s.Layout(url))
        tables.handle(s.LEDGER_DIR)  # both read the same version first
        rows = pa.table({"k": [name] * 3, "v": [1, 2, 3]}, schema=schema)
        barrier.wait()
        try:
            tables.replace(s.LEDGER_DIR, rows, f"k = '{name}'", 1, "flush")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert "a concurrent commit won on the ledger table" in caplog.text  # the loser redid it
    got = DeltaTable(table_uri).to_pyarrow_table().to_pylist()
    assert sorted((r["k"], r["v"]) for r in got) == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
        ("b", 2),
        ("b", 3),
        ("seed", 0),
    ]


def test_credentials_in_the_url_are_refused_without_echoing_them(tmp_path: Path) -> None:
    settings = SimulatorSettings(today=TODAY)
    with SimulatorServer(settings) as sim:
        url = f"s3://{ACCESS_KEY}:{SECRET_KEY}@bucket/prefix"
        config = s3_config(tmp_path, sim, url)
        result = run_cli(["-q", "pull", "-c", str(config)], env=cli_env(sim))
    assert result.returncode == 2
    assert "credentials" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert SECRET_KEY not in result.stderr + result.stdout


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def test_config_keeps_an_object_storage_url_and_relative_folders_stay_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harvester.config import load_config
    from harvester.store.location import object_url, one_line

    settings = SimulatorSettings(today=TODAY)
    with SimulatorServer(settings) as sim:
        monkeypatch.setenv(PASSWORD_ENV, sim.credentials[1])
        for given, expected in (
            ("s3://bucket/some/prefix/", "s3://bucket/some/prefix"),
            ("gs://bucket/p", "gs://bucket/p"),
            ("az://container/p", "az://container/p"),
        ):
            config = s3_config(tmp_path, sim, given)
            assert object_url(load_config(config).store.path) == expected
        local = s3_config(tmp_path, sim, "store")
        assert load_config(local).store.path == tmp_path / "store"
    # an error text carrying a secret loses it, and its colour codes and lines
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert one_line(f"\x1b[31mfailed\n  ↳ key {SECRET_KEY}\x1b[0m") == "failed / key ***"
