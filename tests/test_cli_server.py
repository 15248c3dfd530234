"""The suite's CLI fork server (tests/cli_server.py) answers as a fresh ``python -m harvester``
does: the same exit codes, stdout and stderr, the run's own environment and folder, and nothing
carried from one run into the next."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from harvester.cli import RUST_LOG_LEVEL
from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.store.tables import JEMALLOC_CONF, JEMALLOC_ENV
from tests.cli_server import ForkedRun, cli_server
from tests.support import cli_env, run_cli, start_python, write_config


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


def test_a_forked_run_reads_a_store_as_a_fresh_interpreter(tmp_path: Path) -> None:
    """pyarrow and deltalake come imported from the server (with jemalloc's background thread
    off): a run that reads a store through them answers exactly as a fresh interpreter does."""
    if cli_server() is None:
        pytest.skip("the fork server is off")
    settings = SimulatorSettings(today=dt.date(2024, 3, 10))
    with SimulatorServer(settings) as sim:
        config = write_config(tmp_path, sim, start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 2))
        pulled = run_cli(
            ["-q", "pull", "-c", str(config), "--today", "2024-03-10"], env=cli_env(sim)
        )
        assert pulled.returncode == 0, pulled.stderr
    store = str(tmp_path / "store")
    for args in (
        ["status", "--store", store, "--json"],
        ["query", "--store", store, "--format", "csv", "SELECT * FROM calls ORDER BY ALL"],
    ):
        forked, fresh = both(args, cwd=tmp_path)
        assert forked.returncode == fresh.returncode == 0, forked.stderr + fresh.stderr
        assert (forked.stdout, forked.stderr) == (fresh.stdout, fresh.stderr)
        assert forked.stdout.strip(), args


def test_a_run_setting_what_the_servers_imports_read_gets_a_fresh_interpreter() -> None:
    """delta-rs reads its log level and jemalloc its settings when they load, in the server: a
    run that sets them otherwise needs its own interpreter; one that leaves them to the
    harvester's defaults, or sets those very defaults, does not."""
    server = cli_server()
    if server is None:
        pytest.skip("the fork server is off")
    base = {k: v for k, v in cli_env().items() if k not in {JEMALLOC_ENV, "RUST_LOG"}}
    assert not server.needs_fresh_interpreter(base)
    assert not server.needs_fresh_interpreter({**base, JEMALLOC_ENV: JEMALLOC_CONF})
    assert not server.needs_fresh_interpreter({**base, "RUST_LOG": RUST_LOG_LEVEL})
    assert server.needs_fresh_interpreter({**base, "RUST_LOG": "debug"})
    assert server.needs_fresh_interpreter({**base, JEMALLOC_ENV: "narenas:2"})
    assert server.needs_fresh_interpreter({**base, "JE_ARROW_MALLOC_CONF": "narenas:2"})


def test_python_code_forked_from_the_server_runs_as_python_c_would() -> None:
    """``start_python`` (the store-crash writers): argv, ``__main__``, ``sys.path[0]``, output
    and exit code as ``python -c CODE ARGS`` in a fresh interpreter gives them."""
    if cli_server() is None:
        pytest.skip("the fork server is off")
    code = (
        "import sys\n"
        "print(sys.argv, __name__, repr(sys.path[0]), flush=True)\n"
        "print('to stderr', file=sys.stderr)\n"
        "raise SystemExit(int(sys.argv[1]))\n"
    )
    forked = start_python(code, ["3", "x y"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert isinstance(forked, ForkedRun)
    fresh = subprocess.run(
        [sys.executable, "-c", code, "3", "x y"], capture_output=True, text=True, check=False
    )
    out, err = forked.communicate(timeout=30)
    assert (forked.returncode, out, err) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.returncode == 3 and "['-c', '3', 'x y'] __main__ ''" in fresh.stdout


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
