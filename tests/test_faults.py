"""Faults over loopback: a flaky, slow, vanishing or credential-expiring server, and a full disk.

Every scenario is bounded in time (a few seconds) and ends with the same check: the store holds
exactly the simulator's ground truth, without a duplicate. Scenarios that only test the
scheduler's retries run ``harvest()`` in-process with a fast backoff (the real one waits up to a
minute); those whose point is an exit code or a message run the real CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester import harvest, load_config, pull_plan
from harvester.api.reply import parse_reply
from harvester.errors import ReplyError
from harvester.scheduler import RetryPolicy, RunSummary
from harvester.simulator import SimulatorServer
from harvester.store import Store
from tests.conftest import MakeSimulator
from tests.support import (
    PASSWORD_ENV,
    assert_store_matches_truth,
    cli_env,
    refused,
    run_cli,
    store_connection,
    stored_rows,
    write_config,
)

TODAY = dt.date(2024, 3, 15)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 10)
CLI_TODAY = ("--today", TODAY.isoformat())
# In-process runs: enough attempts that a 30% fault rate never fails a job for good
# (0.3**12 ~ 5e-7 per job), and a backoff short enough to keep each scenario under a few seconds.
FAST_RETRY = RetryPolicy(max_attempts=12, backoff_base=0.02, backoff_cap=0.2)
# The outage lasts OUTAGE_SECONDS; 11 waits of up to 2 s each outlast it with certainty (in
# practice: the chance that they add up to less than 1 s is below 1e-9).
OUTAGE_SECONDS = 1.0
OUTAGE_RETRY = RetryPolicy(max_attempts=12, backoff_base=0.25, backoff_cap=2.0)
# Bounded waits for the threads that inject a fault once the run is under way.
TRIGGER_TIMEOUT_SECONDS = 20.0
ACCOUNT_PASSWORD_ENV = "VT_TEST_ACCOUNT_PASSWORD"
FLUSH_EVERY = 10  # jobs per batch in the fault scenarios: four batches in a 40-job run


def config_for(tmp_path: Path, sim: SimulatorServer, **kw: Any) -> Path:
    """``write_config`` for START..END, flushing every FLUSH_EVERY jobs: the faults strike while
    batches are written, and a 40-job run ends on a full batch (the case that used to hang)."""
    kw.setdefault("start", START)
    kw.setdefault("end", END)
    kw.setdefault("flush_jobs", FLUSH_EVERY)
    return write_config(tmp_path, sim, **kw)


def phones_of(sim: SimulatorServer) -> list[str]:
    return [*sim.settings.phones, "ALL"]


def pull_in_process(config_path: Path, sim: SimulatorServer, retry: RetryPolicy) -> RunSummary:
    """``await harvest(config, plan)``, the library face, for START..END and every phone."""
    config = load_config(config_path, env=cli_env(sim))
    phones = tuple(config.harvest.phones)

    plan = pull_plan(phones, START, END, config.harvest.window)
    return asyncio.run(harvest(config, plan, retry=retry))


def ledger(store: Path) -> dict[tuple[str, dt.date, dt.date], str]:
    """Every job's latest ledger state."""
    con = store_connection(store)
    try:
        rows = con.execute(
            "SELECT phone, window_start, window_end, state FROM ledger_latest"
        ).fetchall()
    finally:
        con.close()
    return {(r[0], r[1], r[2]): str(r[3]) for r in rows}


def assert_done_jobs_match_truth(store: Path, sim: SimulatorServer) -> int:
    """Consistency of a store a run left half-way: every done job's rows are exactly its truth,
    no rows are visible for any other job, nothing twice. Returns the number of done jobs."""
    rows = stored_rows(store)
    done = {key for key, state in ledger(store).items() if state == "done"}
    assert set(rows) <= done, f"rows visible for jobs not done: {sorted(set(rows) - done)[:3]}"
    for key in done:
        phone, start, end = key
        got = rows.get(key, [])
        assert len(got) == len(set(got)), f"duplicate rows for {key}"
        assert set(got) == sim.truth_rows(phone, start, end), f"rows differ for {key}"
    return len(done)


def when(condition: Callable[[], bool], action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` in a thread as soon as ``condition`` holds (polled; bounded in time)."""

    def watch() -> None:
        deadline = time.monotonic() + TRIGGER_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if condition():
                action()
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("harvester: error:")]


# ---------------------------------------------------------------------------------------------
# flaky replies: 500s, drops, truncated and malformed bodies, replies slower than the timeout

FLAKY = {
    "500s": ({"error_rate": 0.3}, "500"),
    "drops": ({"drop_rate": 0.3}, "dropped"),
    "truncated": ({"truncate_rate": 0.3}, "truncated"),
    "malformed": ({"malformed_rate": 0.3}, "malformed"),
    "slow": ({"jitter": 0.5}, None),
    # the store issue's own mix: 5% 500s, 3% dropped connections, 3% malformed bodies
    "store-mix": ({"error_rate": 0.05, "drop_rate": 0.03, "malformed_rate": 0.03}, None),
    "everything": (
        {
            "error_rate": 0.08,
            "drop_rate": 0.08,
            "truncate_rate": 0.08,
            "malformed_rate": 0.08,
            "jitter": 0.3,
        },
        None,
    ),
}
SLOW_TIMEOUT_SECONDS = 0.3  # "slow": a third of the replies (jitter 0..0.5 s) arrive too late


@pytest.mark.parametrize("fault", list(FLAKY))
def test_flaky_server_every_job_done_once_and_equal_to_truth(
    fault: str, tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    knobs, outcome = FLAKY[fault]
    sim = make_simulator(today=TODAY, latency=0.002, seed=7, **knobs)
    timeout = SLOW_TIMEOUT_SECONDS if "jitter" in knobs else 5.0
    config = config_for(tmp_path, sim, timeout_seconds=timeout)

    summary = pull_in_process(config, sim, FAST_RETRY)

    jobs = len(phones_of(sim)) * 10
    assert summary.exit_code == 0 and summary.done == jobs and not summary.failed
    assert summary.retries > 0, "the fault never happened"
    if outcome is not None:
        assert sim.log.outcomes()[outcome] > 0
    store = tmp_path / "store"
    assert_store_matches_truth(store, sim, phones_of(sim), START, END)
    assert set(ledger(store).values()) == {"done"} and len(ledger(store)) == jobs
    if "jitter" not in knobs:
        # each job got exactly one good reply (a late reply the client gave up on is "ok" to
        # the server too, so this only holds without timeouts)
        assert set(sim.log.successes_by_path().values()) == {1}
    quarantined = Store(store).quarantine()
    assert len(quarantined) == sim.log.outcomes()["malformed"]
    for reply in quarantined:
        assert reply.reason.startswith("invalid reply"), reply.reason
        assert reply.job_state == "done"  # a later attempt succeeded
        with pytest.raises(ReplyError):
            parse_reply(reply.body)


def test_invalid_reply_is_quarantined_with_its_body_and_the_run_goes_on(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """One attempt per job: a malformed body fails its job for good, kept in quarantine with the
    reason; the other jobs finish (exit 1 lists the failures); a re-run heals them."""
    sim = make_simulator(today=TODAY, malformed_rate=0.3, seed=3)
    config = config_for(tmp_path, sim, max_attempts=1)
    env = cli_env(sim)
    first = run_cli(["pull", "-c", str(config), "--json", *CLI_TODAY], env=env, timeout=60)
    assert first.returncode == 1, first.stderr
    summary = json.loads(first.stdout)
    malformed = sim.log.outcomes()["malformed"]
    assert malformed > 0 and len(summary["failed"]) == malformed
    assert summary["done"] == len(phones_of(sim)) * 10 - malformed
    assert all(f["reason"].startswith("invalid reply") for f in summary["failed"])

    store = tmp_path / "store"
    quarantined = Store(store).quarantine()
    assert len(quarantined) == malformed
    failed_paths = {e.path for e in sim.log.entries() if e.outcome == "malformed"}
    assert {q.request_path for q in quarantined} == failed_paths
    for reply in quarantined:
        assert reply.job_state == "failed" and reply.http_status == 200
        assert reply.reason.startswith("invalid reply: ")
        assert isinstance(reply.body, bytes)  # as received (may be empty), for a post-mortem
        with pytest.raises(ReplyError):
            parse_reply(reply.body)
    assert_done_jobs_match_truth(store, sim)

    sim.settings.malformed_rate = 0.0
    second = run_cli(["pull", "-c", str(config), "--retry-failed", *CLI_TODAY], env=env)
    assert second.returncode == 0, second.stderr
    assert_store_matches_truth(store, sim, phones_of(sim), START, END)
    assert {q.job_state for q in Store(store).quarantine()} == {"done"}
    assert set(sim.log.successes_by_path().values()) == {1}


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # nesting that overflows a recursive decoder
        b'{"applications": {"a": [{"visits": ' + b"9" * 5000 + b"}]}}",  # int beyond 4300 digits
        b'{"applications": {"a": [{"visits": Infinity}]}}',
        b'{"applications": {"\\ud800": [{"page": "p"}]}}',
        "{}".encode("utf-16"),
        b"\x00" * 64,
    ],
    ids=["deep", "huge-int", "infinity", "surrogate", "utf16", "nul"],
)
def test_pathological_bodies_raise_only_reply_error(body: bytes) -> None:
    """Complements tests/test_reply.py's property tests with bodies hypothesis rarely builds."""
    with pytest.raises(ReplyError):
        parse_reply(body)


# ---------------------------------------------------------------------------------------------
# the server goes away mid-run and comes back on the same port


def pull_through_an_outage(
    tmp_path: Path, make_simulator: MakeSimulator, seconds: float, retry: RetryPolicy
) -> tuple[SimulatorServer, RunSummary, int]:
    """Pull while the server goes away for ``seconds`` after its 10th request and comes back on
    the same port; returns the simulator, the summary and the requests it saw before going."""
    sim = make_simulator(today=TODAY, latency=0.05)
    config = config_for(tmp_path, sim)
    port, outage = sim.port, {}

    def go_away_and_come_back() -> None:
        with refused(sim):
            outage["requests_before"] = len(sim.log)
            time.sleep(seconds)
        outage["restarted"] = 1

    trigger = when(lambda: len(sim.log) >= 10, go_away_and_come_back)
    summary = pull_in_process(config, sim, retry)
    trigger.join(TRIGGER_TIMEOUT_SECONDS)
    assert outage.get("restarted") and sim.port == port
    assert outage["requests_before"] < len(phones_of(sim)) * 10, "over before the outage"
    return sim, summary, outage["requests_before"]


def test_server_going_away_and_coming_back(
    tmp_path: Path, make_simulator: MakeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="harvester"):
        sim, summary, _ = pull_through_an_outage(
            tmp_path, make_simulator, OUTAGE_SECONDS, OUTAGE_RETRY
        )
    jobs = len(phones_of(sim)) * 10
    assert summary.exit_code == 0 and summary.done == jobs, summary.failed
    # the run met the outage: requests cut off on the wire (retried) or refused (waited for)
    assert summary.retries > 0 or any("unreachable" in r.message for r in caplog.records)
    assert_store_matches_truth(tmp_path / "store", sim, phones_of(sim), START, END)


# An outage far longer than a job's whole retry budget: 6 attempts over at most ~0.25 s of
# backoff (enough attempts that stale pooled connections, which fail as attempts once each when
# the server goes away, cannot use them all up).
SHORT_BUDGET = RetryPolicy(max_attempts=6, backoff_base=0.02, backoff_cap=0.05, outage_patience=30)


def test_jobs_wait_out_an_unreachable_api_instead_of_failing(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """Requests that cannot even connect never reached the server: they are neither attempts nor
    quota, so jobs wait for the API (up to outage_patience) rather than burn their retries."""
    # away for ten times the jobs' whole retry budget
    sim, summary, _ = pull_through_an_outage(tmp_path, make_simulator, 2.0, SHORT_BUDGET)
    jobs = len(phones_of(sim)) * 10
    assert summary.exit_code == 0 and summary.failed == [], summary.failed
    assert summary.done == jobs and summary.stopped is None
    # refused connections were not counted: one request per job, plus the retries of requests
    # the server's going away cut off (those did reach it)
    assert summary.requests - summary.retries == jobs
    assert_store_matches_truth(tmp_path / "store", sim, phones_of(sim), START, END)


def test_an_api_that_stays_unreachable_stops_the_run_and_the_next_run_resumes(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY)
    config = config_for(tmp_path, sim)
    patient = RetryPolicy(max_attempts=3, backoff_base=0.05, backoff_cap=0.1, outage_patience=1)

    with refused(sim):  # nothing listens on its port
        started = time.monotonic()
        summary = pull_in_process(config, sim, patient)
        assert time.monotonic() - started < 10
    assert summary.stopped == "unreachable" and summary.exit_code == 1
    assert summary.message is not None and "unreachable" in summary.message
    assert summary.failed == [] and summary.done == 0 and summary.requests == 0
    assert "failed" not in ledger(tmp_path / "store").values()  # nothing recorded as failed

    again = pull_in_process(config, sim, patient)
    assert again.exit_code == 0 and again.done == len(phones_of(sim)) * 10
    assert_store_matches_truth(tmp_path / "store", sim, phones_of(sim), START, END)


# ---------------------------------------------------------------------------------------------
# credentials rejected in the middle of a run


def test_401_mid_run_with_fixed_credentials_exits_3_keeps_data_and_resumes(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, latency=0.05)
    config = config_for(tmp_path, sim)
    trigger = when(
        lambda: sim.log.count(outcome="ok") >= 12, lambda: sim.simulator.expire_credentials()
    )
    first = run_cli(["pull", "-c", str(config), "--json", *CLI_TODAY], env=cli_env(sim))
    trigger.join(TRIGGER_TIMEOUT_SECONDS)

    assert first.returncode == 3, first.stderr
    summary = json.loads(first.stdout)
    assert summary["stopped"] == "credentials"
    (line,) = error_lines(first.stderr)
    assert "401" in line and "credentials" in line
    assert sim.log.count(status=401) >= 1
    store = tmp_path / "store"
    fetched = set(sim.log.successes_by_path())
    jobs = len(phones_of(sim)) * 10
    assert 12 <= len(fetched) < jobs
    # everything fetched before the 401 is kept: one done job per good reply
    assert assert_done_jobs_match_truth(store, sim) == len(fetched) == summary["done"]

    login, password = sim.simulator.issue_credentials()
    text = config.read_text().replace(sim.credentials[0], login)
    config.write_text(text)
    second = run_cli(
        ["pull", "-c", str(config), "--json", *CLI_TODAY],
        env=cli_env(sim, **{PASSWORD_ENV: password}),
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["already_done"] == len(fetched)
    assert_store_matches_truth(store, sim, phones_of(sim), START, END)
    assert set(sim.log.successes_by_path().values()) == {1}  # nothing fetched twice


def account_config(tmp_path: Path, sim: SimulatorServer) -> Path:
    """A config that logs in with the account (tool, login, password) instead of a fixed pair."""
    config = config_for(
        tmp_path,
        sim,
        api_extra=(
            f'tool = "dev"\naccount_login = "{sim.settings.account_login}"\n'
            f'account_password_env = "{ACCOUNT_PASSWORD_ENV}"'
        ),
    )
    lines = config.read_text().splitlines()
    kept = [line for line in lines if not line.startswith(("login =", "password_env ="))]
    config.write_text("\n".join(kept) + "\n")
    return config


def test_401_mid_run_with_account_credentials_renews_and_finishes(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, latency=0.05)
    config = account_config(tmp_path, sim)
    env = cli_env(**{ACCOUNT_PASSWORD_ENV: sim.settings.account_password})
    trigger = when(
        lambda: sim.log.count(outcome="ok") >= 12, lambda: sim.simulator.expire_credentials()
    )
    run = run_cli(["pull", "-c", str(config), "--json", *CLI_TODAY], env=env)
    trigger.join(TRIGGER_TIMEOUT_SECONDS)

    assert run.returncode == 0, run.stderr
    assert not error_lines(run.stderr)
    assert sim.log.count(status=401) >= 1
    assert sim.log.count(path="/auth") == 2  # the first login and one renewal, single-flight
    assert json.loads(run.stdout)["done"] == len(phones_of(sim)) * 10
    assert_store_matches_truth(tmp_path / "store", sim, phones_of(sim), START, END)


def test_an_unreachable_auth_endpoint_is_an_outage_not_a_credentials_error(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """With the account login, the first thing a run sends is POST /auth: if nothing answers,
    the run waits like any request and stops as "unreachable" (exit 1), not as exit 3, which
    would send the user off to renew credentials that are fine."""
    sim = make_simulator(today=TODAY)
    env = cli_env(**{ACCOUNT_PASSWORD_ENV: sim.settings.account_password})
    config = load_config(account_config(tmp_path, sim), env=env)
    patient = RetryPolicy(max_attempts=3, backoff_base=0.05, backoff_cap=0.1, outage_patience=1)
    plan = pull_plan(tuple(config.harvest.phones), START, END, config.harvest.window)

    with refused(sim):
        summary = asyncio.run(harvest(config, plan, retry=patient))
    assert summary.stopped == "unreachable" and summary.exit_code == 1, summary.message
    assert summary.message is not None and "/auth" in summary.message
    assert summary.failed == [] and summary.requests == 0

    again = asyncio.run(harvest(config, plan, retry=patient))
    assert again.exit_code == 0 and again.done == len(phones_of(sim)) * 10
    assert sim.log.count(path="/auth") == 1
    assert_store_matches_truth(tmp_path / "store", sim, phones_of(sim), START, END)


# ---------------------------------------------------------------------------------------------
# the disk fills up during a write

LONG_START = dt.date(2024, 1, 1)  # 70 days x 4 phones = 280 jobs: the disk fills half-way
FLUSH_JOBS = 20
# The tmpfs variant's disk, counted as tmpfs counts it (4 KiB pages per file). Measured on this
# run (statvfs around each table write, 3 runs alike): the store uses 32 KiB before the first
# flush, and the first flush's biggest write needs 194 KiB (its data rows' 66 KiB of Arrow plus
# the writer's 64 KiB margin, tables.SPACE_MARGIN_BYTES, over the 64 KiB already used); the
# whole run ends at 680 KiB used and needs up to 800 KiB. 200 KiB left the first flush 6 KiB to
# spare and failed it outright once on a loaded machine (its batch took more than 20 jobs). 448
# KiB holds a first batch of twice that size (~290 KiB) and fills near the run's middle (the
# write needing 480 KiB, the 6th of 14 flushes).
TMPFS_SIZE = "448k"
# sitecustomize for the "injected" variant: every table write of the store after the first
# ENOSPC_AFTER_BYTES bytes (of Arrow data handed to delta-rs) fails as a full disk does.
ENOSPC_SITECUSTOMIZE = """
import errno, os
from harvester.store import tables as _tables

_budget = int(os.environ["HARVESTER_TEST_ENOSPC_AFTER_BYTES"])
_used = 0


def _full(real):
    def write(self, kind, rows, *args, **kwargs):
        global _used
        if _used >= _budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        result = real(self, kind, rows, *args, **kwargs)
        _used += getattr(rows, "nbytes", 0)
        return result

    return write


for _name in ("append", "replace", "overwrite"):
    setattr(_tables.Tables, _name, _full(getattr(_tables.Tables, _name)))
"""


@pytest.fixture
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The store folder on a disk that fills up; yields the extra environment of the first run.

    ``tmpfs``: a real tmpfs of TMPFS_SIZE mounted at the store folder (needs root and mount),
    grown to 64 MiB for the second run. ``injected``: ENOSPC raised by the store's table writes
    after 200 KB, through a sitecustomize module on the subprocess's PYTHONPATH.
    """
    store = tmp_path / "store"
    store.mkdir()
    if request.param == "tmpfs":
        mount = shutil.which("mount")
        if mount is None or os.geteuid() != 0:
            pytest.skip("a tmpfs needs root and mount(8)")
        done = subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(store)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"mount not permitted: {done.stderr.decode().strip()}")
        try:
            yield {}
        finally:
            subprocess.run(["umount", str(store)], capture_output=True, check=False)
    else:
        inject = tmp_path / "inject"
        inject.mkdir()
        (inject / "sitecustomize.py").write_text(ENOSPC_SITECUSTOMIZE)
        yield {"PYTHONPATH": str(inject), "HARVESTER_TEST_ENOSPC_AFTER_BYTES": "200000"}


def grow_the_disk(store: Path, variant: str) -> None:
    if variant == "tmpfs":
        subprocess.run(["mount", "-o", "remount,size=64m", str(store)], check=True)


@pytest.mark.parametrize("full_disk", ["tmpfs", "injected"], indirect=True)
def test_disk_full_during_a_write(
    full_disk: dict[str, str],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_simulator: MakeSimulator,
) -> None:
    variant = request.node.callspec.params["full_disk"]
    sim = make_simulator(today=TODAY, latency=0.002)
    config = config_for(tmp_path, sim, start=LONG_START, flush_jobs=FLUSH_JOBS)
    store = tmp_path / "store"
    jobs = len(phones_of(sim)) * ((END - LONG_START).days + 1)

    first = run_cli(["-q", "pull", "-c", str(config), *CLI_TODAY], env=cli_env(sim, **full_disk))

    assert first.returncode == 1  # a failure mid-run, not a usage error (that is exit 2)
    assert first.stderr.count("\n") == 1, first.stderr  # -q: the error line and nothing else
    (line,) = error_lines(first.stderr)
    assert "No space left on device" in line and str(store) in line, line
    assert "Traceback" not in first.stderr
    fetched = len(sim.log.successes_by_path())
    done = assert_done_jobs_match_truth(store, sim)
    assert 0 < done < fetched, "the disk never filled up"  # some fetched jobs never became durable
    # a full disk stops the run instead of fetching the rest of the plan into memory. What is
    # fetched but not durable (re-fetched next time) is the failing batch plus what arrived
    # while it was written: a few batches on a quiet machine, more on a loaded one.
    assert fetched - done <= jobs // 2, (fetched, done)

    grow_the_disk(store, variant)
    second = run_cli(["pull", "-c", str(config), "--json", *CLI_TODAY], env=cli_env(sim))
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["already_done"] == done
    assert_store_matches_truth(store, sim, phones_of(sim), LONG_START, END)
    assert not [p for p in store.rglob("*.tmp")], "temp files left behind"
    # jobs done before the disk filled were not fetched again
    assert sum(sim.log.successes_by_path().values()) == fetched + (jobs - done)


# ---------------------------------------------------------------------------------------------
# bugs found here, fixed in harvester/scheduler.py (the flusher's wait; earlier failures)


def test_a_run_whose_last_job_fills_a_batch_finishes(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY)
    config = write_config(
        tmp_path, sim, phones=["ALL"], start=START, end=START, concurrency=1, flush_jobs=1
    )
    try:
        run = run_cli(["pull", "-c", str(config), *CLI_TODAY], env=cli_env(sim), timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("a one-job pull with flush_jobs = 1 did not finish in 8 s")
    assert run.returncode == 0, run.stderr


def test_a_rerun_that_leaves_failed_jobs_does_not_exit_0(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, error_rate=1.0)
    config = config_for(tmp_path, sim, phones=["ALL"], end=START, max_attempts=1)
    first = run_cli(["pull", "-c", str(config), *CLI_TODAY], env=cli_env(sim))
    assert first.returncode == 1, first.stderr
    again = run_cli(["pull", "-c", str(config), "--json", *CLI_TODAY], env=cli_env(sim))
    assert again.returncode == 1, again.stdout


# ---------------------------------------------------------------------------------------------
# the soak benchmark itself, at a size that takes seconds


def test_soak_benchmark_runs_and_checks_a_tiny_pull(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "soak.py"), "--jobs", "8", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert [r["jobs"] for r in results] == [1, 8]
    for r in results:
        assert r["ok"] and r["exit_code"] == 0 and r["ledger_done"] == r["jobs"], r
        assert r["sampled"] > 0 and r["sample_mismatches"] == 0
        assert r["peak_rss_mb"] > 0 and r["cpu_ms_per_job"] > 0
    assert "peak RSS" in done.stdout
