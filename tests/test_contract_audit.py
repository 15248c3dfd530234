"""Findings of the item-by-item audit against shared/spec/contract.md, on servers that answer
within the API document but differently from our simulator.

- counters sent as digit strings (``"visits": "985"``, what a PHP service passing database
  values through ``json_encode`` writes) are counts: stored as BIGINTs, one request per job;
- every command takes ``-c FILE``: the ones that send nothing (plan, status, query, compact,
  export-duckdb, report, verify) work with a config whose password variable is not set in their
  environment (only the cron job's holds it); pull and sync still refuse it, naming the key;
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tests.scripted_api import ScriptedApi, scripted_config
from tests.support import PASSWORD_ENV, cli_env, run_cli, stored_rows

DAY = dt.date(2024, 12, 31)  # a year's last day: the date edge the paths are built from
PASSWORD = "fedcba9876543210fedcba9876543210"
URL = "https://demos.plumgroup.com/vxml/start.php"


def _as_strings_reply(path: str) -> tuple[int, bytes]:
    """One item whose counters are all strings, plus extra fields a newer server may add."""
    item = {
        "page": "main.php",
        "form": "main_menu",
        "item": "selection",
        "visits": "985",
        "filled": "941",
        "nomatch": "32",
        "noinput": "12",
        "transfer": "0",
        "disconnect": "0",
        "average_seconds": 3.5,
    }
    return 200, json.dumps({"applications": {URL: [item]}, "generated": "now"}).encode()


def test_counters_sent_as_digit_strings_are_stored_as_counts(tmp_path: Path) -> None:
    server = ScriptedApi(_as_strings_reply)
    try:
        config = scripted_config(
            tmp_path, server.base_url(), phones=["ALL"], start=DAY, end=DAY, max_attempts=3
        )
        env = cli_env(**{PASSWORD_ENV: PASSWORD})
        result = run_cli(["-c", str(config), "-q", "pull", "--today", "2025-01-01"], env=env)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert [seen.path for seen in server.seen] == ["/path/20241231/20241231/ALL"]
    rows = stored_rows(tmp_path / "store")
    expected = (URL, "main.php", "main_menu", "selection", 985, 941, 32, 12, 0, 0)
    assert rows == {("ALL", DAY, DAY): [expected]}


def test_commands_that_send_nothing_need_no_secret(tmp_path: Path) -> None:
    server = ScriptedApi(_as_strings_reply)
    try:
        config = scripted_config(tmp_path, server.base_url(), phones=["ALL"], start=DAY, end=DAY)
        pulled = run_cli(
            ["-c", str(config), "-q", "pull", "--today", "2025-01-01"],
            env=cli_env(**{PASSWORD_ENV: PASSWORD}),
        )
        assert pulled.returncode == 0, pulled.stderr
        no_secret = cli_env()
        assert PASSWORD_ENV not in no_secret
        reads = [
            ["plan", "--today", "2025-01-01", "--json"],
            ["status"],
            ["query", "--format", "csv", "SELECT sum(visits) AS v FROM diagnostic_flow"],
            ["compact"],
            ["export-duckdb", str(tmp_path / "out.duckdb")],
            ["report", "--out", str(tmp_path / "r.html")],
            ["verify"],
        ]
        for args in reads:
            result = run_cli(["-c", str(config), *args], env=no_secret)
            assert (result.returncode, result.stderr) == (0, ""), args
            if args[0] == "query":
                assert result.stdout.splitlines() == ["v", "985"]
        for args in (["pull", "--today", "2025-01-01"], ["sync", "--today", "2025-01-01"]):
            refused = run_cli(["-c", str(config), *args], env=no_secret)
            assert refused.returncode == 2
            assert refused.stderr.count("\n") == 1 and "password_env" in refused.stderr
    finally:
        server.stop()
    assert len(server.seen) == 1  # the pull's one request; nothing else was sent
