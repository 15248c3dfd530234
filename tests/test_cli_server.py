"""The suite's CLI fork server (tests/cli_server.py) answers as a fresh ``python -m harvester``
does: the same exit codes, stdout and stderr, the run's own environment and folder, and nothing
carried from one run into the next."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli_server import cli_server
from tests.support import cli_env, run_cli


def both(args: list[str], **kwargs: object) -> tuple[subprocess.CompletedProcess[str], ...]:
    forked = run_cli(args, **kwargs)  # type: ignore[arg-type]
    fresh = run_cli(args, fresh=True, **kwargs)  # type: ignore[arg-type]
    return forked, fresh


@pytest.mark.parametrize(
    "args",
    [["--version"], ["pul"], ["status", "--store", "no-such-store"], ["plan"]],
    ids=["version", "usage-error", "missing-store", "missing-config"],
)
def test_a_forked_run_answers_as_a_fresh_interpreter(args: list[str], tmp_path: Path) -> None:
    if cli_server() is None:
        pytest.skip("the fork server is off")
    forked, fresh = both(args, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode,
        fresh.stdout,
        fresh.stderr,
    )
    assert forked.args == fresh.args


def test_each_run_has_its_own_environment_and_folder(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[api\n")  # read from the run's folder: a TOML error
    named = run_cli(["plan"], env=cli_env(HARVESTER_CONFIG=str(tmp_path / "elsewhere.toml")))
    assert named.returncode == 2 and "elsewhere.toml: config file not found" in named.stderr
    here = run_cli(["plan"], cwd=tmp_path)  # the variable did not outlive its run
    assert here.returncode == 2 and "config.toml" in here.stderr and "elsewhere" not in here.stderr
    assert "not found" not in here.stderr, here.stderr


def test_a_run_past_its_timeout_is_killed() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli(["simulate", "--port", "0"], timeout=1)
