"""What a hurried new user ran into, each kept as the test that found it: the real CLI in a
subprocess, against the simulator over loopback and the session's loopback S3 server.

Every case checks the contract's rule for bad input (exit 2, one line on stderr naming the key or
flag, nothing sent, nothing written) or that a finished command's result is what it says.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from harvester.simulator import SimulatorServer
from tests.s3_server import S3Server
from tests.support import cli_env, run_cli, write_config

FORMAT1_STORE = Path(__file__).resolve().parent / "data" / "format1_store"
DAY = dt.date(2024, 1, 1)


def one_error_line(stderr: str, *needles: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- object storage: a bucket that does not exist, credentials that cannot be found --------------


READ_COMMANDS = [
    ("status",),
    ("status", "--gaps"),
    ("query", "diagnostic_flow"),
    ("compact",),
    ("verify",),
    ("export-duckdb", "{tmp}/x.duckdb"),
    ("report", "--out", "{tmp}/r.html"),
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_read_command_on_a_missing_bucket_is_one_line(
    args: tuple[str, ...], s3_server: S3Server, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """``--store s3://no-such-bucket/x`` was a raw OSError traceback (exit 1) from the store's
    existence check; now one line naming --store, exit 2."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli(
        [*argv, "--store", "s3://no-such-bucket-tryout/x"],
        env=cli_env(**s3_env),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    one_error_line(result.stderr, "s3://no-such-bucket-tryout/x")
    assert not (tmp_path / "x.duckdb").exists() and not (tmp_path / "r.html").exists()


def test_s3_store_without_credentials_is_one_line(tmp_path: Path) -> None:
    """No AWS_* variables at all (the most likely mistake): delta-rs's Rust logger printed
    WARN lines about the instance metadata service on stderr before the one error line. The
    metadata service is pointed at a closed loopback port, so nothing leaves the machine."""
    env = cli_env(
        AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:9/",
        HARVESTER_STATE_DIR=str(tmp_path / "state"),
    )
    imds = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
    for key in [k for k in env if k.startswith("AWS_") and k != imds]:
        env.pop(key)
    env.pop("RUST_LOG", None)
    result = run_cli(["status", "--store", "s3://tryout-bucket/nocreds"], env=env)
    assert result.returncode == 2, result.stderr
    one_error_line(result.stderr, "s3://tryout-bucket/nocreds")


# -- migrate ----------------------------------------------------------------------------------


def test_migrated_store_verifies_clean(tmp_path: Path) -> None:
    """`harvester migrate` then `harvester verify` said the store was damaged (exit 1: no table
    recorded the store's grain and format) until some later pull took the lock."""
    root = tmp_path / "store"
    shutil.copytree(FORMAT1_STORE, root)
    migrated = run_cli(["migrate", "--store", str(root)])
    assert migrated.returncode == 0, migrated.stderr
    verified = run_cli(["verify", "--store", str(root)])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "metadata" not in verified.stdout


# -- config: values that looked fine and were not -------------------------------------------------


def config_with(tmp_path: Path, sim: SimulatorServer, old: str, new: str) -> Path:
    path = write_config(tmp_path, sim, start=DAY, end=DAY + dt.timedelta(days=1))
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    "store_path", ["s3://", "S3://bucket/x", "ftp://host/x", "https://bucket.example/x"]
)
@pytest.mark.parametrize("command", ["plan", "pull"])
def test_store_path_url_delta_rs_cannot_use_is_refused(
    store_path: str, command: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    """A URL with another scheme, or s3:// without a bucket, was taken for a local folder
    (``./ftp:/host/x``, ``./s3:``) and a store was written there."""
    config = config_with(tmp_path, simulator, 'path = "store"', f'path = "{store_path}"')
    before = tree(tmp_path)
    result = run_cli(["-c", str(config), command], env=cli_env(simulator), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    one_error_line(result.stderr, "[store] path")
    assert tree(tmp_path) == before
    assert len(simulator.log) == 0


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("login = ", 'login = ""\n# was: ', "[api] login"),
        ("login = ", 'login = "   "\n# was: ', "[api] login"),
        (
            "login = ",
            'tool = "dev"\naccount_login = ""\naccount_password_env = "VT_TEST_PASSWORD"\n# was: ',
            "[api] account_login",
        ),
    ],
    ids=["login-empty", "login-blank", "account-login-empty"],
)
def test_empty_login_is_refused_before_sending(
    old: str, new: str, key: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    """An empty login passed every check: the pull sent requests, got 401s and stopped with
    exit 3 ("credentials rejected") instead of naming the empty key."""
    config = config_with(tmp_path, simulator, old, new)
    result = run_cli(["-c", str(config), "pull"], env=cli_env(simulator), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    one_error_line(result.stderr, key, "empty")
    assert len(simulator.log) == 0
    assert not (tmp_path / "store").exists()


# -- --store DIR that is not a store ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [a for a in READ_COMMANDS if a[0] != "compact"],  # compact said so already
    ids=lambda a: "-".join(a[:2]),
)
def test_read_command_on_a_folder_that_is_not_a_store(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """``--store ~/Documents`` (a typo, the wrong folder) showed an empty store with exit 0, and
    ``verify`` said "ok: every file reads"; pull already refuses such a folder."""
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a store\n")
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.replace("{tmp}", str(out)) for a in args]
    before = tree(tmp_path)
    result = run_cli([*argv, "--store", str(folder)], cwd=out)
    assert result.returncode == 2, result.stdout + result.stderr
    one_error_line(result.stderr, "--store", str(folder), "no store")
    assert tree(tmp_path) == before
