"""Bad input, config and command line: exit 2, one line naming the key or flag, nothing sent,
nothing written.

Every case runs the real CLI in a subprocess against a live simulator that the config points at,
so "nothing sent" is what the server saw (its request log), and "nothing written" is a snapshot
of the whole temporary folder (config, store, cwd) before and after.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.store import Store
from tests.support import PASSWORD_ENV, cli_env, run_cli, write_config

TODAY = "2024-03-15"
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 3)
T = ("--today", TODAY)
# A value that must never come back in an error message (it is a password put in the wrong place).
LEAKY = "hunter2-Sekret-42"
# One that is also a valid variable name (letters and digits), so only its case gives it away.
LEAKY_NAME = "hunter2Sekret42"

Edit = Callable[[str], str]
Setup = Callable[[Path], None]


def set_key(key: str, value: str) -> Edit:
    """Replace the ``key = ...`` line (wherever it is) by ``key = value``."""

    def edit(text: str) -> str:
        new, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", f"{key} = {value}", text)
        assert n == 1, f"{key} not in the base config"
        return new

    return edit


def rename_key(key: str, new_key: str) -> Edit:
    def edit(text: str) -> str:
        new, n = re.subn(rf"(?m)^{re.escape(key)}(\s*=)", rf"{new_key}\1", text)
        assert n == 1
        return new

    return edit


def drop_key(key: str) -> Edit:
    def edit(text: str) -> str:
        new, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*\n", "", text)
        assert n == 1
        return new

    return edit


def add_line(section: str, line: str) -> Edit:
    def edit(text: str) -> str:
        return text.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)

    return edit


def chain(*edits: Edit) -> Edit:
    def edit(text: str) -> str:
        for one in edits:
            text = one(text)
        return text

    return edit


def make_store(grain: str = "day") -> Setup:
    def setup(tmp: Path) -> None:
        Store(tmp / "store").ensure_writable(grain)

    return setup


def make_file(name: str, content: bytes = b"not a store\n") -> Setup:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    return setup


@dataclass(frozen=True)
class Case:
    """One bad input: ``args`` after ``-c CONFIG`` (``{cfg}`` and ``{tmp}`` are substituted)."""

    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]  # substrings of the one error line: the key or flag, and the problem
    edit: Edit | None = None
    setup: Setup | None = None
    env: dict[str, str | None] = field(default_factory=dict)  # None: unset the variable
    use_config: bool = True
    secret: str | None = None  # must not appear anywhere in the output


PULL = ("pull", *T)
CASES = [
    # -- keys: unknown, misspelt, missing --------------------------------------------------------
    Case(
        "typo-key-api",
        PULL,
        ('[api] unknown key "concurency"', 'did you mean "concurrency"'),
        rename_key("concurrency", "concurency"),
    ),
    Case(
        "typo-key-harvest",
        PULL,
        ('[harvest] unknown key "phone"', 'did you mean "phones"'),
        rename_key("phones", "phone"),
    ),
    Case(
        "typo-section",
        PULL,
        ('unknown section "[harvset]"', 'did you mean "[harvest]"'),
        lambda t: t.replace("[harvest]", "[harvset]"),
    ),
    Case(
        "typo-secret-key-never-echoes-value",
        PULL,
        ('unknown key "pasword"', 'did you mean "password"'),
        add_line("api", f'pasword = "{LEAKY}"'),
        secret=LEAKY,
    ),
    Case("unknown-key", PULL, ('[store] unknown key "colour"',), add_line("store", 'colour = "b"')),
    Case("missing-phones", PULL, ("[harvest] phones", "no phones"), drop_key("phones")),
    Case("missing-start", PULL, ("[harvest] start", "no start date"), drop_key("start")),
    Case(
        "missing-password-env-key",
        PULL,
        ("[api] password_env", "required with login"),
        drop_key("password_env"),
    ),
    Case(
        "no-credentials-at-all",
        PULL,
        ("[api] login", "pull needs credentials"),
        chain(drop_key("login"), drop_key("password_env")),
    ),
    Case(
        "no-credentials-sync",
        ("sync", *T),
        ("[api] login", "sync needs credentials"),
        chain(drop_key("login"), drop_key("password_env")),
    ),
    Case(
        "account-login-without-tool",
        PULL,
        ("[api] tool", "required with account_login"),
        chain(
            add_line("api", 'account_login = "me@example.com"'),
            add_line("api", f'account_password_env = "{PASSWORD_ENV}"'),
        ),
    ),
    # -- wrong types -------------------------------------------------------------------------------
    Case(
        "type-concurrency",
        PULL,
        ("[api] concurrency", "expected an integer", "'4'"),
        set_key("concurrency", '"4"'),
    ),
    Case(
        "type-timeout",
        PULL,
        ("[api] timeout_seconds", "expected an integer or a number"),
        set_key("timeout_seconds", '"fast"'),
    ),
    Case("type-window", PULL, ("[harvest] window", "expected a string"), set_key("window", "7")),
    Case(
        "type-auto-compact",
        PULL,
        ("[store] auto_compact", "true or false"),
        add_line("store", 'auto_compact = "yes"'),
    ),
    Case(
        "type-inline-password-never-echoed",
        PULL,
        ("[api] password", "expected a string, got an integer (not shown)"),
        add_line("api", "password = 4242424242"),
        secret="4242424242",
    ),
    Case(
        "type-password-env-never-echoed",
        PULL,
        ("[api] password_env", "expected a string, got an integer (not shown)"),
        set_key("password_env", "4242424242"),
        secret="4242424242",
    ),
    Case(
        "type-section-not-table",
        PULL,
        ("[quota] must be a table",),
        lambda t: "quota = 5\n" + re.sub(r"\[quota\]\n(?:[^\[].*\n|\n)*", "", t),
    ),
    # -- dates ----------------------------------------------------------------------------------
    Case(
        "impossible-date-string",
        PULL,
        ("[harvest] start", "'2024-02-30'"),
        set_key("start", '"2024-02-30"'),
    ),
    Case(
        "impossible-date-toml",
        PULL,
        ("[harvest] start", "not valid TOML"),
        set_key("start", "2024-02-30"),
    ),
    Case(
        "datetime-not-date",
        PULL,
        ("[harvest] start", "date-time"),
        set_key("start", "2024-03-01T10:00:00"),
    ),
    Case("start-after-end", PULL, ("[harvest] start", "after"), set_key("start", "2024-03-05")),
    Case(
        "end-in-future",
        PULL,
        ("[harvest] end", "2024-04-01", "future"),
        set_key("end", "2024-04-01"),
    ),
    Case("end-word", PULL, ("[harvest] end", "'tomorrow'"), set_key("end", '"tomorrow"')),
    # -- values ---------------------------------------------------------------------------------
    Case("window-unknown", PULL, ("[harvest] window", "'year'"), set_key("window", '"year"')),
    Case("phones-empty", PULL, ("[harvest] phones", "non-empty"), set_key("phones", "[]")),
    Case(
        "phones-malformed",
        PULL,
        ("[harvest] phones", "'617-555-0101'"),
        set_key("phones", '["617-555-0101"]'),
    ),
    Case(
        "phones-twice",
        PULL,
        ("[harvest] phones", "listed twice"),
        set_key("phones", '["ALL", "all"]'),
    ),
    Case("phones-not-list", PULL, ("[harvest] phones",), set_key("phones", "{ a = 1 }")),
    Case(
        "concurrency-zero", PULL, ("[api] concurrency", "at least 1"), set_key("concurrency", "0")
    ),
    Case(
        "concurrency-negative",
        PULL,
        ("[api] concurrency", "at least 1"),
        set_key("concurrency", "-3"),
    ),
    Case("limit-zero", PULL, ("[quota] limit", "at least 1"), set_key("limit", "0")),
    Case("limit-negative", PULL, ("[quota] limit", "at least 1"), set_key("limit", "-150")),
    Case(
        "reserve-too-big",
        PULL,
        ("[quota] reserve", "less than limit"),
        add_line("quota", "reserve = 5000"),
    ),
    Case(
        "max-attempts-zero",
        PULL,
        ("[api] max_attempts", "at least 1"),
        set_key("max_attempts", "0"),
    ),
    Case(
        "timeout-zero", PULL, ("[api] timeout_seconds", "above 0"), set_key("timeout_seconds", "0")
    ),
    Case("flush-jobs-zero", PULL, ("[store] flush_jobs", "at least 1"), set_key("flush_jobs", "0")),
    Case(
        "lookback-negative",
        PULL,
        ("[harvest] lookback_days", "0 or more"),
        set_key("lookback_days", "-1"),
    ),
    Case(
        "timezone-unknown",
        PULL,
        ("[harvest] timezone", "Mars/Olympus"),
        set_key("timezone", '"Mars/Olympus"'),
    ),
    Case("tool-unknown", PULL, ("[api] tool", "'excel'"), add_line("api", 'tool = "excel"')),
    # -- values beyond the documented bounds (infinite, not a number, absurdly large) -------------
    *[
        Case(
            f"{key}-{name}",
            PULL,
            (f"[{section}] {key}", f"at most {most}", shown),
            set_key(key, value),
        )
        for section, key, most, name, value, shown in (
            ("api", "timeout_seconds", "3600", "inf", "inf", "got inf"),
            ("api", "timeout_seconds", "3600", "nan", "nan", "got nan"),
            ("api", "timeout_seconds", "3600", "huge", "1e300", "got 1e+300"),
            ("quota", "window_seconds", "86400", "inf", "inf", "got inf"),
            ("quota", "window_seconds", "86400", "nan", "-nan", "got nan"),
            ("quota", "window_seconds", "86400", "a-day-too-long", "86401", "got 86401"),
            ("store", "flush_seconds", "3600", "inf", "inf", "got inf"),
        )
    ],
    *[
        Case(
            f"{key}-huge",
            PULL,
            (f"[{section}] {key}", f"at most {most:,}", "got 9223372036854775807"),
            set_key(key, "9223372036854775807")
            if key != "reserve"
            else add_line(section, f"{key} = 9223372036854775807"),
        )
        for section, key, most in (
            ("api", "concurrency", 256),
            ("api", "max_attempts", 100),
            ("quota", "limit", 10**9),
            ("quota", "reserve", 10**9),
            ("harvest", "lookback_days", 366),
            ("store", "flush_jobs", 100_000),
        )
    ],
    Case(
        "flush-jobs-beyond-the-store",
        PULL,
        ("[store] flush_jobs", "at most 100,000", "got 16777216"),
        set_key("flush_jobs", "16777216"),
    ),
    Case(
        "integer-too-long-to-read",
        PULL,
        ("config.toml", "not valid TOML", "too long"),
        set_key("flush_jobs", "1" * 5000),
    ),
    # -- the API's address and credentials ---------------------------------------------------------
    Case(
        "base-url-no-scheme",
        PULL,
        ("[api] base_url", "http(s) URL"),
        lambda t: t.replace('base_url = "http://', 'base_url = "'),
    ),
    Case(
        "base-url-ftp",
        PULL,
        ("[api] base_url", "http(s) URL"),
        lambda t: t.replace('base_url = "http://', 'base_url = "ftp://'),
    ),
    Case(
        "base-url-with-password",
        PULL,
        ("[api] base_url", "credentials"),
        lambda t: t.replace('base_url = "http://', f'base_url = "http://me:{LEAKY}@'),
        secret=LEAKY,
    ),
    Case(
        "base-url-schemeless-with-password",
        PULL,
        ("[api] base_url", "credentials"),
        lambda t: t.replace('base_url = "http://', f'base_url = "me:{LEAKY}@'),
        secret=LEAKY,
    ),
    Case(
        "base-url-ipv6-unclosed",
        PULL,
        ("[api] base_url", "not a valid URL", "Invalid IPv6 URL"),
        set_key("base_url", '"http://[::1/api"'),
    ),
    Case(
        "base-url-port-too-big",
        PULL,
        ("[api] base_url", "not a valid URL", "Port out of range"),
        lambda t: re.sub(r":\d+/api", ":70000/api", t),
    ),
    Case(
        "base-url-port-not-a-number",
        PULL,
        ("[api] base_url", "not a valid URL", "'abc'"),
        lambda t: re.sub(r":\d+/api", ":abc/api", t),
    ),
    Case(
        "base-url-port-zero",
        PULL,
        ("[api] base_url", "port 0"),
        lambda t: re.sub(r":\d+/api", ":0/api", t),
    ),
    Case(
        "base-url-space-in-host",
        PULL,
        ("[api] base_url", "spaces"),
        lambda t: t.replace('base_url = "http://', 'base_url = "http://exa mple.'),
    ),
    Case(
        "password-variable-unset",
        PULL,
        ("[api] password_env", PASSWORD_ENV, "not set"),
        env={PASSWORD_ENV: None},
    ),
    Case(
        "password-variable-empty",
        PULL,
        ("[api] password_env", f"variable {PASSWORD_ENV} is set but empty"),
        env={PASSWORD_ENV: ""},
    ),
    Case(
        "password-pasted-into-password-env",
        PULL,
        ("[api] password_env", "must name an environment variable", "not hold the secret"),
        set_key("password_env", f'"{LEAKY}"'),
        secret=LEAKY,
    ),
    Case(
        # letters and digits only: a valid variable name, but not a conventional one
        "password-like-a-name-pasted-into-password-env",
        PULL,
        ("[api] password_env", "not set", "name not shown"),
        set_key("password_env", f'"{LEAKY_NAME}"'),
        secret=LEAKY_NAME,
    ),
    Case(
        "password-pasted-into-account-password-env",
        PULL,
        ("[api] account_password_env", "must name an environment variable"),
        chain(
            drop_key("login"),
            drop_key("password_env"),
            add_line("api", 'tool = "dev"\naccount_login = "me@example.com"'),
            add_line("api", f'account_password_env = "{LEAKY}"'),
        ),
        secret=LEAKY,
    ),
    Case(
        "password-like-a-name-pasted-into-account-password-env",
        PULL,
        ("[api] account_password_env", "not set", "name not shown"),
        chain(
            drop_key("login"),
            drop_key("password_env"),
            add_line("api", 'tool = "dev"\naccount_login = "me@example.com"'),
            add_line("api", f'account_password_env = "{LEAKY_NAME}"'),
        ),
        secret=LEAKY_NAME,
    ),
    Case(
        "password-and-password-env",
        PULL,
        ("[api] password", "not both"),
        add_line("api", f'password = "{LEAKY}"'),
        secret=LEAKY,
    ),
    # -- the config file itself -------------------------------------------------------------------
    Case(
        "config-missing",
        ("-c", "{tmp}/nope.toml", *PULL),
        ("nope.toml", "not found (use -c/--config or $HARVESTER_CONFIG)"),
        use_config=False,
    ),
    Case(
        "config-is-a-folder",
        ("-c", "{tmp}/folder.toml", *PULL),
        ("--config", "is a directory"),
        setup=lambda tmp: (tmp / "folder.toml").mkdir(),
        use_config=False,
    ),
    Case(
        "config-env-is-a-folder",
        PULL,
        ("folder.toml", "cannot read config file"),
        setup=lambda tmp: (tmp / "folder.toml").mkdir(),
        env={"HARVESTER_CONFIG": "folder.toml"},
        use_config=False,
    ),
    Case(
        "config-not-utf8",
        PULL,
        ("config.toml", "not UTF-8"),
        lambda t: "# caf\udce9\n" + t,
    ),
    Case(
        # a byte order mark (Windows editors) is skipped: the real error, not a parse error
        "config-with-bom-names-the-key",
        PULL,
        ('[api] unknown key "concurency"',),
        chain(rename_key("concurrency", "concurency"), lambda t: "\ufeff" + t),
    ),
    Case(
        "config-not-toml",
        PULL,
        ("config.toml", "not valid TOML"),
        lambda t: t.replace("[store]", "[store"),
    ),
    # -- the store folder ------------------------------------------------------------------------
    Case("store-is-a-file", PULL, ("store.path", "is a file"), setup=make_file("store")),
    Case(
        "store-under-a-file",
        PULL,
        ("store folder", "Not a directory"),
        set_key("path", '"afile/store"'),
        setup=make_file("afile"),
    ),
    Case(
        "store-folder-not-ours",
        PULL,
        ("store.path", "not empty"),
        setup=make_file("store/notes.txt"),
    ),
    Case(
        "store-of-another-window",
        PULL,
        ("store.path", "week windows, not day"),
        setup=make_store("week"),
    ),
    Case("store-path-empty", PULL, ("[store] path", "empty"), set_key("path", '""')),
    # -- command-line flags ------------------------------------------------------------------------
    Case("flag-start-month-13", (*PULL, "--start", "2024-13-01"), ("--start", "'2024-13-01'")),
    Case("flag-end-feb-30", (*PULL, "--end", "2024-02-30"), ("--end", "'2024-02-30'")),
    Case("flag-phones-empty", (*PULL, "--phones", ""), ("--phones",)),
    Case("flag-phones-plus", (*PULL, "--phones", "+16175550101"), ("--phones", "+16175550101")),
    Case("flag-phones-commas", (*PULL, "--phones", ",,"), ("--phones",)),
    Case("flag-today-format", ("plan", "--today", "15/03/2024"), ("--today", "15/03/2024")),
    Case(
        "flag-start-after-end",
        (*PULL, "--start", "2024-03-09", "--end", "2024-03-02"),
        ("--start", "after"),
    ),
    Case("flag-end-in-future", (*PULL, "--end", "2024-03-16"), ("--end", "future")),
    Case("flag-sync-start", ("sync", *T, "--start", "March"), ("--start", "'March'")),
    # -- dates at the ends of the calendar (week, month, lookback and "yesterday" stepped past) ----
    *[
        Case(
            f"flag-today-{today}-{window}-{command}",
            (command, "--today", today),
            ("--today", today, "outside the dates", "1900-01-01 to 2999-12-31"),
            set_key("window", f'"{window}"'),
        )
        for today, window, command in (
            ("9999-12-31", "week", "plan"),
            ("9999-12-31", "month", "plan"),
            ("9999-12-31", "day", "pull"),
            ("0001-01-01", "day", "sync"),
            ("0001-01-01", "week", "plan"),
        )
    ],
    Case(
        "flag-plan-sync-today-max",
        ("plan", "--sync", "--today", "9999-12-31"),
        ("--today", "outside the dates"),
    ),
    Case("flag-start-min", (*PULL, "--start", "0001-01-01"), ("--start", "0001-01-01", "outside")),
    Case("flag-end-max", (*PULL, "--end", "9999-12-31"), ("--end", "9999-12-31", "outside")),
    Case(
        "flag-sync-start-min",
        ("sync", *T, "--start", "0001-01-01"),
        ("--start", "0001-01-01", "outside"),
    ),
    Case(
        "config-start-min",
        PULL,
        ("[harvest] start", "0001-01-01", "outside"),
        set_key("start", "0001-01-01"),
    ),
    Case(
        "config-end-max",
        PULL,
        ("[harvest] end", "9999-12-31", "outside"),
        set_key("end", "9999-12-31"),
    ),
    Case(
        "config-end-max-string",
        PULL,
        ("[harvest] end", "9999-12-31", "outside"),
        set_key("end", '"9999-12-31"'),
    ),
    Case("flag-unknown", (*PULL, "--frobnicate"), ("--frobnicate",)),
    Case("flag-conflict", (*PULL, "--retry-failed", "--refetch"), ("--retry-failed", "--refetch")),
    Case("flag-extra-argument", (*PULL, "2024"), ("unexpected extra argument",)),
    Case("command-unknown", ("frobnicate",), ("No such command", "frobnicate")),
    Case("command-typo", ("pul", *T), ("No such command 'pul'", "Did you mean 'pull'?")),
    Case("flag-typo", (*PULL, "--strat", "2024-03-01"), ("'--strat'", "Did you mean '--start'?")),
    # -- the read-side commands ------------------------------------------------------------------
    Case(
        "query-bad-sql",
        ("query", "SELEC phone FROM diagnostic_flow"),
        ("query", "syntax error"),
        setup=make_store(),
    ),
    Case(
        "query-unknown-table",
        ("query", "SELECT * FROM no_such_view"),
        ("query", "no_such_view"),
        setup=make_store(),
    ),
    Case("query-no-store", ("query", "diagnostic_flow"), ("[store] path", "does not exist")),
    Case(
        "query-bad-format",
        ("query", "--format", "xml", "diagnostic_flow"),
        ("--format", "'xml'"),
        setup=make_store(),
    ),
    Case(
        "query-parquet-without-out",
        ("query", "--format", "parquet", "diagnostic_flow"),
        ("--out",),
        setup=make_store(),
    ),
    Case(
        "query-bad-from",
        ("query", "--from", "2024-02-30", "diagnostic_flow"),
        ("--from", "'2024-02-30'"),
        setup=make_store(),
    ),
    Case("query-no-sql", ("query",), ("Missing argument", "SQL_OR_VIEW"), setup=make_store()),
    Case(
        "export-into-missing-folder",
        ("export-duckdb", "nowhere/x.duckdb"),
        ("FILE", "does not exist"),
        setup=make_store(),
    ),
    Case(
        "export-onto-a-folder",
        ("export-duckdb", "{tmp}"),
        ("FILE", "is a directory"),
        setup=make_store(),
    ),
    Case(
        "query-from-min",
        ("query", "--from", "0001-01-01", "diagnostic_flow"),
        ("--from", "outside"),
        setup=make_store(),
    ),
    Case(
        "report-to-max",
        ("report", "--to", "9999-12-31"),
        ("--to", "outside"),
        setup=make_store(),
    ),
    Case(
        "report-from-after-to",
        ("report", "--from", "2024-03-10", "--to", "2024-03-01"),
        ("--from", "after --to"),
        setup=make_store(),
    ),
    Case("status-no-store", ("status", "--store", "{tmp}/none"), ("none", "does not exist")),
]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings(limit=1000, window_seconds=60)) as server:
        yield server


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``root`` (not following links): kind, size and modification time."""
    out: dict[str, tuple[str, int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            st = path.lstat()
            kind = "dir" if path.is_dir() and not path.is_symlink() else "file"
            out[str(path.relative_to(root))] = (kind, st.st_size, st.st_mtime_ns)
    return out


def run_case(case: Case, tmp_path: Path, sim: SimulatorServer) -> subprocess.CompletedProcess[str]:
    """Set up, run the CLI, and check the four promises; returns the finished process."""
    config = write_config(tmp_path, sim, start=START, end=END)
    if case.edit is not None:
        text = case.edit(config.read_text())
        config.write_bytes(text.encode("utf-8", "surrogateescape"))
    if case.setup is not None:
        case.setup(tmp_path)
    env = cli_env(sim)
    for name, value in case.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    if case.use_config:
        args = ["-c", str(config), *args]
    before_requests = len(sim.log)
    before = snapshot(tmp_path)

    result = run_cli(args, env=env, cwd=tmp_path, timeout=60)

    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("harvester: error: "), line
    for expected in case.expect:
        assert expected in line, f"{expected!r} not in {line!r}"
    assert "Traceback" not in result.stderr + result.stdout
    assert len(sim.log) == before_requests, "a request reached the server"
    assert snapshot(tmp_path) == before, "a file was written"
    if case.setup is None:
        assert not (tmp_path / "store").exists(), "the store folder was created"
    if case.secret is not None:
        assert case.secret not in result.stderr + result.stdout
    return result


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_sent_nothing_written(
    case: Case, tmp_path: Path, sim: SimulatorServer
) -> None:
    run_case(case, tmp_path, sim)


def test_did_you_mean_for_every_section(tmp_path: Path, sim: SimulatorServer) -> None:
    """A misspelt key in any section suggests the right one, quoting both."""
    typos = {
        "timeout_secs": "timeout_seconds",
        "window_second": "window_seconds",
        "lookback_day": "lookback_days",
        "flush_job": "flush_jobs",
    }
    for typo, right in typos.items():
        case = Case(
            f"typo-{typo}",
            PULL,
            (f'unknown key "{typo}"', f'(did you mean "{right}"?)'),
            rename_key(right, typo),
        )
        folder = tmp_path / typo
        folder.mkdir()
        run_case(case, folder, sim)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A real read-only folder even for root: a read-only bind mount of an empty folder."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) for a read-only bind mount")
    done = subprocess.run(
        [mount, "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"bind mount not permitted here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, check=False)


def test_store_on_a_read_only_filesystem(
    tmp_path: Path, sim: SimulatorServer, read_only_folder: Path
) -> None:
    for name, store_path in (("as-is", "readonly"), ("below", "readonly/store")):
        case = Case(
            f"store-read-only-{name}",
            PULL,
            ("store", "Read-only file system"),
            set_key("path", f'"{read_only_folder.parent / store_path}"'),
            setup=lambda _tmp: None,
        )
        run_case(case, tmp_path, sim)
        (tmp_path / "config.toml").unlink()


def test_enough_cases() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
