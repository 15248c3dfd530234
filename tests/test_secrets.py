"""Secret hygiene: no password, and no basic-auth value made from one, ever leaves the process.

A full run with distinctive passwords -- a pull through faults, a 401 healed by renewing the
temporary credentials from the account, then every read command and every ``--help`` -- and
then a search of everything it produced: stdout, stderr (at debug level), every file of the
store as bytes and decoded through pyarrow, the exported DuckDB file, the HTML report, and the
one-line errors of rejected credentials and of a traceback.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from harvester.api.credentials import Credentials
from harvester.cli import cli
from harvester.config import Secret, load_config
from harvester.logs import MIN_SECRET_FRAGMENT, RedactSecrets
from harvester.simulator import Simulator, SimulatorServer, SimulatorSettings
from harvester.simulator.settings import DEFAULT_TEMP_LOGIN
from harvester.store import Store, schema
from tests.conftest import MakeSimulator
from tests.scripted_api import ScriptedApi, scripted_config
from tests.support import PASSWORD_ENV, cli_env, run_cli, write_config

TODAY = dt.date(2024, 3, 15)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 8)
CLI_TODAY = ("--today", TODAY.isoformat())
SEED = 11
# Distinctive, and made of characters no encoding changes (URL, JSON, HTML), so one needle each.
PASSWORD = "tmpPW-7Qx9-ZetaUniq"
ACCOUNT_PASSWORD = "acctPW-3Kv8-OmegaUniq"
ACCOUNT_PASSWORD_ENV = "VT_TEST_ACCOUNT_PASSWORD"
PHONES = ["6175550101", "ALL"]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def needles(sim: SimulatorServer) -> dict[str, str]:
    """Every secret of the run and its basic-auth header value, by name.

    The temporary pairs ``POST /auth`` hands out follow from the seed alone, so a twin
    simulator predicts them: the harvester must hide those as well as the configured ones.
    """
    login = sim.credentials[0]
    found = {
        "password": PASSWORD,
        "account password": ACCOUNT_PASSWORD,
        "basic auth": b64(f"{login}:{PASSWORD}"),
        "account basic auth": b64(f"{sim.settings.account_login}:{ACCOUNT_PASSWORD}"),
    }
    twin = Simulator(SimulatorSettings(seed=SEED))
    for n in range(1, 4):
        issued_login, issued_password = twin.issue_credentials()
        found[f"issued password {n}"] = issued_password
        found[f"issued basic auth {n}"] = b64(f"{issued_login}:{issued_password}")
    return found


def assert_clean(where: str, text: str | bytes, secrets: dict[str, str]) -> None:
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    for name, secret in secrets.items():
        assert secret.encode() not in data, f"the {name} appears in {where}"


def parquet_text(path: Path) -> str:
    """A Parquet file decoded: its key-value metadata and every value of every column."""
    table = pq.read_table(path)
    parts = [repr(table.schema.metadata)]
    for column in table.column_names:
        for value in table.column(column).to_pylist():
            parts.append(
                value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            )
    return "\n".join(parts)


def duckdb_text(path: Path) -> str:
    """Every view of an exported DuckDB file: its SQL and all its rows."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        views = con.execute(
            "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        parts = [str(sql) for _, sql in views]
        for name, _ in views:
            parts.append(repr(con.execute(f'SELECT * FROM "{name}"').fetchall()))
    finally:
        con.close()
    return "\n".join(parts)


def every_file(root: Path) -> Iterable[Path]:
    return (p for p in sorted(root.rglob("*")) if p.is_file())


def account_and_fixed_config(tmp_path: Path, sim: SimulatorServer) -> Path:
    """The fixed temporary pair to start with, and the account login to renew it after a 401."""
    return write_config(
        tmp_path,
        sim,
        phones=PHONES,
        start=START,
        end=END,
        max_attempts=10,
        flush_jobs=5,  # several batches, each a chance to leak
        api_extra=(
            f'tool = "dev"\naccount_login = "{sim.settings.account_login}"\n'
            f'account_password_env = "{ACCOUNT_PASSWORD_ENV}"'
        ),
    )


def secret_env(sim: SimulatorServer) -> dict[str, str]:
    return cli_env(**{PASSWORD_ENV: PASSWORD, ACCOUNT_PASSWORD_ENV: ACCOUNT_PASSWORD})


def test_a_full_run_leaks_no_secret_anywhere(tmp_path: Path, make_simulator: MakeSimulator) -> None:
    sim = make_simulator(
        today=TODAY,
        seed=SEED,
        temp_password=PASSWORD,
        account_password=ACCOUNT_PASSWORD,
        latency=0.05,
        error_rate=0.05,
        drop_rate=0.05,
        malformed_rate=0.05,
        truncate_rate=0.05,
    )
    secrets = needles(sim)
    config = account_and_fixed_config(tmp_path, sim)
    env = secret_env(sim)
    store = tmp_path / "store"
    outputs: list[tuple[str, subprocess.CompletedProcess[str]]] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(list(args), env=env, cwd=tmp_path, timeout=90)
        outputs.append((" ".join(args), done))
        return done

    # a 401 once a few jobs are in: the fixed pair dies, the account renews it
    def expire_after_some_jobs() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sim.log.count(outcome="ok") >= 5:
                sim.simulator.expire_credentials()
                return
            time.sleep(0.002)

    threading.Thread(target=expire_after_some_jobs, daemon=True).start()
    pull = run("-vv", "pull", "-c", str(config), "--json", *CLI_TODAY)
    assert pull.returncode == 0, pull.stderr
    assert sim.log.count(status=401) >= 1 and sim.log.count(path="/auth") >= 1
    assert sim.log.outcomes()["malformed"] + sim.log.outcomes()["500"] > 0
    assert "DEBUG" in pull.stderr  # the most talkative level was searched

    assert run("-v", "status", "-c", str(config)).returncode == 0
    assert run("status", "--store", str(store), "--json", "--gaps").returncode == 0
    assert run("query", "-c", str(config), "--format", "csv", "diagnostic_flow").returncode == 0
    for view in ("raw_replies", "ledger_files"):
        assert run("query", "--store", str(store), "--format", "json", view).returncode == 0
    assert run("export-duckdb", "-c", str(config), "export.duckdb").returncode == 0
    assert run("report", "-c", str(config), "--out", "report.html").returncode == 0
    assert run("compact", "-c", str(config)).returncode == 0
    assert run("plan", "-c", str(config), "--json", *CLI_TODAY).returncode == 0
    assert run("-c", str(config), "--help").returncode == 0
    for command in sorted(cli.commands):
        assert run(command, "-c", str(config), "--help").returncode == 0, command

    for what, done in outputs:
        assert_clean(f"the stdout of `{what}`", done.stdout, secrets)
        assert_clean(f"the stderr of `{what}`", done.stderr, secrets)
    files = list(every_file(tmp_path))
    assert any(p.suffix == ".parquet" for p in files) and (tmp_path / "export.duckdb").exists()
    for path in files:
        assert_clean(str(path), path.read_bytes(), secrets)
        if path.suffix == ".parquet":
            assert_clean(f"{path} (decoded)", parquet_text(path), secrets)
    assert_clean("export.duckdb (decoded)", duckdb_text(tmp_path / "export.duckdb"), secrets)


def test_the_raw_archive_never_stores_request_headers() -> None:
    columns = {name.lower() for name in schema.RAW_SCHEMA.names}
    assert not {c for c in columns if "header" in c or "auth" in c}
    assert "request_path" in columns  # the path below the base URL: no host, no credentials


def test_rejected_credentials_errors_name_no_secret(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """A 401 on the fixed pair, and an account login refused by /auth: exit 3, clean lines."""
    sim = make_simulator(
        today=TODAY, seed=SEED, temp_password=PASSWORD, account_password="the-right-one"
    )
    secrets = needles(sim)
    fixed = write_config(tmp_path, sim, phones=["ALL"], start=START, end=START)
    sim.simulator.expire_credentials()
    rejected = run_cli(["-vv", "pull", "-c", str(fixed), *CLI_TODAY], env=secret_env(sim))
    assert rejected.returncode == 3, rejected.stderr
    assert "401" in rejected.stderr
    assert_clean("the 401 error", rejected.stderr + rejected.stdout, secrets)

    folder = tmp_path / "account"
    folder.mkdir()
    account = account_and_fixed_config(folder, sim)
    refused = run_cli(["-vv", "pull", "-c", str(account), *CLI_TODAY], env=secret_env(sim))
    assert refused.returncode == 3, refused.stderr
    assert "/auth" in refused.stderr
    assert_clean("the /auth error", refused.stderr + refused.stdout, secrets)


@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_a_password_in_a_file_others_can_read_is_warned_about(
    mode: int, tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, temp_password=PASSWORD)
    config = write_config(tmp_path, sim, phones=["ALL"], start=START, end=START)
    text = config.read_text().replace(
        f'password_env = "{PASSWORD_ENV}"', f'password = "{PASSWORD}"'
    )
    config.write_text(text)
    config.chmod(mode)
    done = run_cli(["plan", "-c", str(config), *CLI_TODAY], env=cli_env())
    assert done.returncode == 0, done.stderr
    assert "prefer password_env" in done.stderr
    readable = "readable by other users" in done.stderr
    assert readable == bool(mode & 0o044), done.stderr
    assert_clean("plan's output", done.stdout + done.stderr, {"password": PASSWORD})
    assert sim.log.count() == 0


# sitecustomize for the traceback test: an unexpected error whose message holds the whole config.
BOOM_SITECUSTOMIZE = """
import harvester.scheduler as _scheduler

async def _boom(config, *args, **kwargs):
    raise RuntimeError(f"unexpected: {config!r} {config.api.password} {vars(config.api)}")

_scheduler.harvest = _boom
"""


def test_an_unexpected_traceback_shows_no_secret(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, seed=SEED, temp_password=PASSWORD)
    config = account_and_fixed_config(tmp_path, sim)
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(BOOM_SITECUSTOMIZE)
    env = {**secret_env(sim), "PYTHONPATH": str(inject)}
    done = run_cli(["pull", "-c", str(config), *CLI_TODAY], env=env)
    assert done.returncode != 0
    assert "RuntimeError: unexpected: Config(" in done.stderr, done.stderr  # the bug shows...
    assert "***" in done.stderr
    assert_clean("the traceback", done.stderr + done.stdout, needles(sim))  # ...its secret not


def test_secret_wrappers_never_show_their_value(tmp_path: Path) -> None:
    secret = Secret(PASSWORD)
    assert PASSWORD not in repr(secret) and PASSWORD not in str(secret) and "***" in repr(secret)
    assert PASSWORD not in f"{secret}" and PASSWORD not in f"{secret!s} {secret!r}"
    credentials = Credentials("0123456789abcdef0123456789abcdef", secret, 0)
    token = b64(f"{credentials.login}:{PASSWORD}")
    assert credentials.authorization.reveal() == f"Basic {token}"
    assert PASSWORD not in repr(credentials) and token not in repr(credentials)
    path = tmp_path / "config.toml"
    path.write_text(f'[api]\nlogin = "abc"\npassword_env = "{PASSWORD_ENV}"\n')
    path.chmod(0o600)
    config = load_config(path, env={PASSWORD_ENV: PASSWORD})
    assert PASSWORD not in repr(config) and PASSWORD not in str(vars(config.api))
    b64_pair = b64(f"abc:{PASSWORD}")
    assert PASSWORD in config.secrets() and b64_pair in config.secrets()

    # a traceback that prints every frame's locals (pytest --showlocals, error trackers)
    text = traceback_with_locals(config.api, credentials)
    assert "boom" in text and "Secret('***')" in text
    assert PASSWORD not in text and token not in text


def traceback_with_locals(api: object, credentials: Credentials) -> str:
    """The traceback of an error raised where ``api`` and ``credentials`` are locals."""

    def fail_with(api: object, credentials: Credentials) -> None:
        raise ValueError("boom")

    try:
        fail_with(api, credentials)
    except ValueError as exc:
        trace = traceback.TracebackException.from_exception(exc, capture_locals=True)
        return "".join(trace.format())
    raise AssertionError("unreachable")


def test_the_log_safety_net_redacts_messages_tracebacks_and_basic_auth() -> None:
    redactor = RedactSecrets()
    redactor.add([PASSWORD, b64(f"abc:{PASSWORD}")])
    header = f"Authorization: Basic {b64('someone:else-entirely')}"
    try:
        raise RuntimeError(f"library text with {PASSWORD} and {header}")
    except RuntimeError:
        record = logging.LogRecord("harvester", logging.ERROR, __file__, 1, "%s", (PASSWORD,), None)
        record.exc_info = sys.exc_info()
    assert redactor.filter(record)
    text = logging.Formatter().format(record)
    assert "RuntimeError" in text and "***" in text
    assert PASSWORD not in text and "else-entirely" not in text
    assert b64("someone:else-entirely") not in text
    assert redactor.redact("Basic authentication is described in RFC 7617") == (
        "Basic authentication is described in RFC 7617"
    )
    assert json.dumps(redactor.redact(f"x{b64(f'abc:{PASSWORD}')}x")) == '"x***x"'


# -- a server's text: echoed credentials, cut short, in every kind of reply (issue 12.4) ---------


def fragments(secret: str, shortest: int = MIN_SECRET_FRAGMENT) -> dict[str, str]:
    """Every piece of ``secret`` of ``shortest`` characters (longer pieces contain one)."""
    return {
        f"{secret[:3]}... fragment {secret[i : i + shortest]!r}": secret[i : i + shortest]
        for i in range(len(secret) - shortest + 1)
    }


def test_server_text_that_echoes_the_credentials_is_redacted_everywhere(tmp_path: Path) -> None:
    """A 400 that echoes the login, password and Authorization header; a 200 ``{"error": ...}``
    whose text the parser cuts at 60 characters in the middle of the password; a 500 page and a
    data reply holding it: the password (nor any 6-character piece of it) and the basic-auth
    value appear nowhere in stdout, stderr or any store file, raw or decoded."""
    login = DEFAULT_TEMP_LOGIN
    token = b64(f"{login}:{PASSWORD}")

    def answer(path: str) -> tuple[int, bytes]:
        heard = server.seen[-1].authorization or ""
        echo = f"login {login} password {PASSWORD} header {heard}"
        day = path.split("/")[2]
        if day == "20240301":
            return 400, json.dumps({"error": f"bad request ({echo})"}).encode()
        if day == "20240302":  # 50 characters, then the password: a cut at 57 keeps 7 of it
            return 200, json.dumps({"error": "x" * 50 + PASSWORD}).encode()
        if day == "20240303":
            return 500, f"<html><pre>{echo}</pre></html>".encode()
        if day == "20240304":
            items = [{"page": PASSWORD, "form": "f", "item": "i", "visits": 1, "filled": 1,
                      "nomatch": 0, "noinput": 0, "transfer": 0, "disconnect": 0}]  # fmt: skip
            return 200, json.dumps({"applications": {"https://x": items}}).encode()
        return 200, b'{"applications": {}}'

    server = ScriptedApi(answer)
    try:
        config = scripted_config(
            tmp_path, server.base_url(), phones=["ALL"], start=START, end=dt.date(2024, 3, 5)
        )
        env = cli_env(**{PASSWORD_ENV: PASSWORD})
        runs = [
            run_cli(["-vv", "pull", "-c", str(config), "--json", *CLI_TODAY], env=env),
            run_cli(["pull", "-c", str(config), *CLI_TODAY], env=env),  # the text summary
            run_cli(["query", "-c", str(config), "--format", "json", "raw_replies"], env=env),
            run_cli(["query", "-c", str(config), "--format", "json", "ledger_latest"], env=env),
            run_cli(["status", "-c", str(config), "--gaps"], env=env),
        ]
    finally:
        server.stop()
    first = runs[0]
    assert first.returncode == 1, first.stderr
    reasons = {f["window_start"]: f["reason"] for f in json.loads(first.stdout)["failed"]}
    assert reasons["2024-03-01"].startswith("HTTP 400: bad request (login ***")
    assert reasons["2024-03-02"].startswith("invalid reply: error reply: xxxxx")
    assert reasons["2024-03-03"].startswith("HTTP 500")
    assert reasons["2024-03-04"].startswith("invalid reply: it echoes a credential")
    assert all(run.returncode in (0, 1) for run in runs), [r.stderr for r in runs]
    quarantined = {q.request_path.split("/")[2] for q in Store(tmp_path / "store").quarantine()}
    assert quarantined == {"20240302", "20240304"}

    secrets = {"password": PASSWORD, "basic auth": token, "login": login, **fragments(PASSWORD)}
    for run in runs:
        assert_clean(f"the output of {run.args[3:5]}", run.stdout + run.stderr, secrets)
    files = list(every_file(tmp_path / "store"))
    assert any(p.name.endswith(".parquet") for p in files)
    for path in files:
        assert_clean(str(path), path.read_bytes(), secrets)
        if path.suffix == ".parquet":
            assert_clean(f"{path} (decoded)", parquet_text(path), secrets)
