"""Which store the commands name, and where a store's own state lives, on a local folder and on
object storage (issue 15).

* ``status``, ``verify``, ``report`` and a held lock name the store as the user gave it: on
  ``s3://`` the URL, never the local companion folder that holds its lock, quota state and read
  cache (``status`` showed that folder, the report a path made of the URL);
* a URL with credentials (``user:pass@``) or parameters (``?...``) is refused by every command
  and shown redacted: delta-rs takes neither from the URL (it ignores both, and ``?x=1`` +
  ``/data`` named the prefix itself), and either may be a secret;
* request economy (the default) keeps what it learnt beside the store: on ``s3://`` a pull
  failed at its end looking for ``store.json`` under a path made of the URL.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

import pytest

from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.store import Store
from harvester.store.location import STATE_DIR_ENV, companion_folder, redacted_url
from harvester.store.provenance import load_economy
from tests.support import assert_store_matches_truth, cli_env, run_cli
from tests.test_delta import store_config, store_env

D = dt.date
TODAY, START, END = D(2024, 5, 1), D(2024, 4, 1), D(2024, 4, 20)
PHONES = ["6175550101", "6175550103", "ALL"]
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"  # stands for a secret key or a signature


def test_pull_with_request_economy_then_status_verify_and_the_lock_name_the_store_as_given(
    tmp_path: Path, backend: str | None
) -> None:
    settings = SimulatorSettings(limit=100_000, window_seconds=60, today=TODAY)
    with SimulatorServer(settings) as sim:
        config, store = store_config(
            tmp_path, sim, backend, phones=PHONES, start=START, end=END, economy="auto"
        )
        env = store_env(sim)
        today = ["--today", TODAY.isoformat()]
        pulled = run_cli(["-q", "pull", "-c", str(config), *today], env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert_store_matches_truth(store, sim, PHONES, START, END)
        # what the economy learnt is kept for the next run (on S3: in the companion folder)
        assert load_economy(store)["longest_accepted"] > 1

        name = backend or str(store)
        status = run_cli(["status", "-c", str(config)], env=env)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"store: {name} (day windows)"), status.stdout
        verify = run_cli(["verify", "-c", str(config)], env=env)
        assert verify.returncode == 0, verify.stderr
        assert verify.stdout.startswith(f"store: {name} (day windows)"), verify.stdout
        as_json = run_cli(["status", "-c", str(config), "--json"], env=env)
        assert json.loads(as_json.stdout)["path"] == name, as_json.stderr
        report = run_cli(["report", "-c", str(config), "--out", str(tmp_path / "r.html")], env=env)
        assert report.returncode == 0, report.stderr
        assert f"Store {html.escape(name)} ·" in (tmp_path / "r.html").read_text()
        with Store(store).lock("held-by-the-test"):
            locked = run_cli(["-q", "pull", "-c", str(config), *today], env=env)
        assert locked.returncode == 2, locked.stderr
        assert f"the store {name} is locked by" in locked.stderr, locked.stderr
    if backend is not None:
        companion = str(companion_folder(backend))
        for output in (status, verify, locked):
            assert companion not in output.stdout + output.stderr


# Object storage only: a local folder has no credentials or parameters. Refused before any
# request, so no server is needed.
# Each command once over the two cases: the read commands check the URL first
# (analysis.check_store), the others when the store opens its tables (Tables.uri).
@pytest.mark.parametrize(
    ("url", "shown", "commands"),
    [
        (
            f"s3://AKIAHARVESTERX:{SECRET}@bucket/prefix",
            "s3://***@bucket/prefix",
            (["status"], ["verify"], ["compact"]),
        ),
        (
            f"s3://bucket/prefix?X-Amz-Signature={SECRET}",
            "s3://bucket/prefix?***",
            (["query", "diagnostic_flow"], ["export-duckdb", "{tmp}/x.duckdb"], ["verify"]),
        ),
    ],
    ids=["credentials", "parameters"],
)
def test_a_store_url_with_credentials_or_parameters_is_refused_and_shown_redacted(
    tmp_path: Path, url: str, shown: str, commands: tuple[list[str], ...]
) -> None:
    state = tmp_path / "state"
    env = cli_env(**{STATE_DIR_ENV: str(state)})
    export = tmp_path / "x.duckdb"
    for command in commands:
        args = [command[0], "--store", url, *(a.format(tmp=tmp_path) for a in command[1:])]
        result = run_cli(args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and shown in result.stderr, (args, result.stderr)
        assert "must not hold credentials or parameters" in result.stderr
        assert SECRET not in result.stdout + result.stderr
    settings = SimulatorSettings(today=TODAY)
    with SimulatorServer(settings) as sim:
        config, _ = store_config(tmp_path, sim, url, start=START, end=END)
        pulled = run_cli(["-q", "pull", "-c", str(config)], env=cli_env(sim, **env))
        assert pulled.returncode == 2 and pulled.stderr.count("\n") == 1, pulled.stderr
        assert "must not hold credentials" in pulled.stderr
        assert SECRET not in pulled.stdout + pulled.stderr
        assert len(sim.log) == 0  # nothing sent
    assert not state.exists() and not export.exists()  # nothing written


def test_redacted_url_blanks_credentials_and_parameters_only() -> None:
    assert redacted_url("s3://bucket/some/prefix") == "s3://bucket/some/prefix"
    assert redacted_url(f"gs://me:{SECRET}@bucket") == "gs://***@bucket"
    assert redacted_url(f"az://container/p#{SECRET}") == "az://container/p#***"
    assert redacted_url(f"s3://u:p@bucket/p?a={SECRET}&b=1") == "s3://***@bucket/p?***"
    # the companion folder's name, made from the URL, holds no credential either
    assert SECRET not in str(companion_folder(f"s3://AKIAX:{SECRET}@bucket/prefix"))
