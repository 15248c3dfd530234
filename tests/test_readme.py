"""The README stays true: every `harvester ...` command in it runs, in order, on a simulator."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from harvester.cli import cli
from harvester.simulator import SimulatorServer, SimulatorSettings
from tests.support import cli_env, run_cli, write_config

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
FENCE = re.compile(r"```sh\n(.*?)```", re.S)


def readme_commands() -> list[list[str]]:
    """Every line of a ```sh block that starts with `harvester`, comments stripped."""
    commands = []
    for block in FENCE.findall(README.read_text()):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("harvester "):
                commands.append(shlex.split(line, comments=True))
    return commands


def test_readme_shows_every_command() -> None:
    shown = {c[1] for c in readme_commands()} | set(
        re.findall(r"`harvester (\w[\w-]*)", README.read_text())
    )
    assert set(cli.commands) <= shown, f"not in the README: {set(cli.commands) - shown}"


def test_every_readme_command_runs(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    settings = SimulatorSettings(limit=500, window_seconds=2)
    with SimulatorServer(settings) as sim:
        write_config(tmp_path, sim, start=today - dt.timedelta(days=6), end="yesterday")
        config = tmp_path / "config.toml"
        config.write_text(config.read_text().replace('timezone = "UTC"\n', ""))
        env = cli_env(sim)
        ran = 0
        for argv in readme_commands():
            result = run_cli(argv[1:], env=env, cwd=tmp_path)
            assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stderr}"
            ran += 1
        assert ran >= 10
        assert (tmp_path / "report.html").stat().st_size > 10_000
        assert (tmp_path / "voicetrends.duckdb").exists()
        assert (tmp_path / "calls.json").exists()


def test_simulate_command_serves_the_api(tmp_path: Path) -> None:
    """`harvester simulate` (shown in the README) serves the API until interrupted."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvester", "simulate", "--port", "0", "--window-seconds", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/api", first + proc.stdout.readline())
        assert match, first
        import urllib.error
        import urllib.request

        url = f"http://127.0.0.1:{match.group(1)}/api/path/20240101/20240101/ALL"
        try:
            urllib.request.urlopen(url, timeout=5)
            raise AssertionError("unauthenticated request accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
            assert exc.headers["X-RateLimit-Limit"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def test_help_of_every_command_has_an_example() -> None:
    for name in cli.commands:
        result = run_cli([name, "--help"])
        assert result.returncode == 0, result.stderr
        assert "Example:" in result.stdout, name
    top = run_cli(["--help"])
    assert top.returncode == 0 and all(name in top.stdout for name in cli.commands)
