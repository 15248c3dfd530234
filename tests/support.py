"""Helpers for the end-to-end tests: configs pointing at a simulator, CLI runs, stored rows."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvester.simulator import SimulatorServer
from tests.cli_server import CliServer, ForkedRun, cli_server

if TYPE_CHECKING:
    import duckdb

PASSWORD_ENV = "VT_TEST_PASSWORD"
Row = tuple[str, str, str, str, int, int, int, int, int, int]


def write_config(
    tmp_path: Path,
    sim: SimulatorServer,
    *,
    phones: Sequence[str] | None = None,
    start: dt.date,
    end: dt.date | str = "yesterday",
    window: str = "day",
    concurrency: int = 4,
    limit: int | None = None,
    window_seconds: float | None = None,
    lookback_days: int = 3,
    timeout_seconds: float = 5,
    max_attempts: int = 6,
    flush_jobs: int = 50,
    flush_seconds: float = 0.5,
    extra: str = "",
    api_extra: str = "",
    name: str = "config.toml",
    economy: str = "off",
) -> Path:
    """A config file for ``sim`` with the preset temporary credentials (password via env).

    ``economy`` is ``off`` unless asked: most tests judge the requests of the day-by-day path;
    tests/test_economy_e2e.py runs request economy (the product's default, ``auto``)."""
    login, _ = sim.credentials
    phones = list(phones if phones is not None else [*sim.settings.phones, "ALL"])
    end_toml = f'"{end}"' if isinstance(end, str) else end.isoformat()
    text = f"""
[api]
base_url = "{sim.base_url}"
login = "{login}"
password_env = "{PASSWORD_ENV}"
concurrency = {concurrency}
timeout_seconds = {timeout_seconds}
max_attempts = {max_attempts}
{api_extra}

[quota]
limit = {limit if limit is not None else sim.settings.limit}
window_seconds = {window_seconds if window_seconds is not None else sim.settings.window_seconds}

[harvest]
phones = {phones!r}
start = {start.isoformat()}
end = {end_toml}
window = "{window}"
lookback_days = {lookback_days}
timezone = "UTC"
economy = "{economy}"

[store]
path = "store"
flush_jobs = {flush_jobs}
flush_seconds = {flush_seconds}
{extra}
"""
    path = tmp_path / name
    path.write_text(text.replace("'", '"'))
    path.chmod(0o600)
    return path


def cli_env(sim: SimulatorServer | None = None, **more: str) -> dict[str, str]:
    """The environment for a CLI subprocess: the password variable set, nothing else odd."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    if sim is not None:
        env[PASSWORD_ENV] = sim.credentials[1]
    env.update(more)
    return env


def run_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    fresh: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -m harvester ARGS`` in a process of its own, as a user would run it: forked from
    the suite's CLI server (:mod:`tests.cli_server`: no start-up imports) unless ``env`` sets a
    variable only a fresh interpreter reads, or ``fresh``."""
    env = dict(env) if env is not None else cli_env()
    server = None if fresh else _server_for(env)
    if server is not None:
        return server.run(args, env, cwd, timeout)
    return subprocess.run(
        [sys.executable, "-m", "harvester", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _server_for(env: Mapping[str, str]) -> CliServer | None:
    """The CLI server to fork a run with ``env`` from; None when the run needs a fresh
    interpreter (the server is off, or ``env`` sets what only interpreter start-up reads)."""
    server = cli_server()
    return None if server is None or server.needs_fresh_interpreter(env) else server


def start_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int = subprocess.DEVNULL,
    stderr: int = subprocess.DEVNULL,
) -> ForkedRun | subprocess.Popen[str]:
    """``python -m harvester ARGS`` started in a process of its own and left running, for tests
    that signal or kill it: forked from the CLI server like :func:`run_cli` (the same
    ``Popen`` verbs), else a fresh interpreter. ``stdout``/``stderr``: DEVNULL or PIPE."""
    env = dict(env) if env is not None else cli_env()
    server = _server_for(env)
    if server is not None:
        return server.start(args, env, cwd, stdout, stderr)
    return subprocess.Popen(
        [sys.executable, "-m", "harvester", *args],
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        text=True,
    )


def store_connection(store: Path, *views: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to ``store`` with the base relations (``flow_files``,
    ``ledger_latest``, ``ledger_current``, ``raw_files``, ...) and the bundled ``views`` named,
    defined as :func:`harvester.analysis.connect` defines them.

    Why not ``connect`` itself: it binds all 20 bundled views (~0.3 s of CPU each time), and the
    suite reads stores a few hundred times through one view or none. ``connect`` and every
    view are tested on their own (tests/test_views.py, and through the CLI everywhere)."""
    from harvester.analysis import queries_dir
    from harvester.store import connect_base

    con = connect_base(store)
    try:
        for name in views:
            con.execute((queries_dir() / f"{name}.sql").read_text())
    except BaseException:
        con.close()
        raise
    return con


def start_python(
    code: str,
    args: Sequence[str],
    *,
    stdout: int = subprocess.DEVNULL,
    stderr: int = subprocess.DEVNULL,
) -> ForkedRun | subprocess.Popen[str]:
    """``python -c CODE ARGS`` started in a process of its own and left running, for tests that
    kill a child doing store work: forked from the CLI server like :func:`start_cli` (its
    imports, pyarrow and deltalake among them, already done: ~0.5 s of CPU a start), else a
    fresh interpreter. ``stdout``/``stderr``: DEVNULL or PIPE."""
    env = dict(os.environ)
    server = _server_for(env)
    if server is not None:
        return server.start(args, env, None, stdout, stderr, code)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=stdout, stderr=stderr, text=True
    )


def stored_rows(store: Path) -> dict[tuple[str, dt.date, dt.date], list[Row]]:
    """Rows of the bundled ``diagnostic_flow`` view grouped by job."""
    con = store_connection(store, "diagnostic_flow")
    try:
        result = con.execute(
            "SELECT phone, window_start, window_end, application, page, form, item, "
            "visits, filled, nomatch, noinput, transfer, disconnect FROM diagnostic_flow"
        ).fetchall()
    finally:
        con.close()
    out: dict[tuple[str, dt.date, dt.date], list[Row]] = defaultdict(list)
    for r in result:
        out[(r[0], r[1], r[2])].append(tuple(r[3:]))  # type: ignore[arg-type]
    return out


def days(start: dt.date, end: dt.date) -> Iterable[dt.date]:
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


def assert_store_matches_truth(
    store: Path,
    sim: SimulatorServer,
    phones: Sequence[str],
    start: dt.date,
    end: dt.date,
) -> None:
    """Every (phone, day) job's stored rows equal the simulator's ground truth, no duplicates."""
    rows = stored_rows(store)
    expected_keys = set()
    for phone in phones:
        for day in days(start, end):
            key = (phone, day, day)
            expected_keys.add(key)
            got = rows.get(key, [])
            truth = sim.truth_rows(phone, day, day)
            assert len(got) == len(set(got)), f"duplicate rows for {key}"
            assert set(got) == truth, f"rows differ for {key}"
    extra = {k for k in rows if k not in expected_keys}
    assert not extra, f"unexpected jobs in the store: {sorted(extra)[:5]}"


def ledger_states(store: Path) -> dict[str, int]:
    """How many jobs the ledger holds in each current state: each job's latest record, so a job
    whose re-fetch failed counts as failed (``ledger_current`` holds done records only)."""
    con = store_connection(store)
    try:
        res = con.execute("SELECT state, count(*) FROM ledger_latest GROUP BY 1").fetchall()
    finally:
        con.close()
    return {str(k): int(v) for k, v in res}


def json_lines(text: str) -> list[Any]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


@contextmanager
def refused(sim: SimulatorServer) -> Iterator[None]:
    """Stop ``sim`` and hold its port bound but not listening, so connections are refused and
    no simulator of a test running in parallel can take the port; start ``sim`` again after."""
    sim.stop()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind((sim.host, sim.port))
    try:
        yield
    finally:
        holder.close()
        sim.start()
