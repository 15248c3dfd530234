"""The scheduler against the real simulator over loopback: retries, 401s, order, clean stops.

Each test judges the harvester by what reached the server (the simulator's request log) and by
what the store holds afterwards (compared with the simulator's ground truth). Runs go through the
library's ``harvest()`` where a test must act at an exact point of the run (a progress sink that
expires the credentials after the n-th job), and through the real CLI in a subprocess where the
contract's exit codes and signals are the point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harvester import scheduler
from harvester.api.client import ApiClient
from harvester.api.credentials import RENEW_AFTER_SECONDS
from harvester.config import ApiConfig, Config, Secret, load_config
from harvester.errors import CredentialsError, HarvesterError
from harvester.gate import GateSnapshot, QuotaGate
from harvester.jobs import Job
from harvester.plan import PlanCount, pull_plan
from harvester.scheduler import RetryPolicy, RunSummary, harvest
from harvester.simulator import SimulatorServer
from harvester.store import StoreWriter
from tests.conftest import MakeSimulator
from tests.support import (
    PASSWORD_ENV,
    assert_store_matches_truth,
    cli_env,
    run_cli,
    start_cli,
    store_connection,
    stored_rows,
    write_config,
)

TODAY = dt.date(2024, 3, 15)
START = dt.date(2024, 3, 1)
ACCOUNT_PASSWORD_ENV = "VT_TEST_ACCOUNT_PASSWORD"
# Backoff shrunk so that retry tests take milliseconds; the policy's shape is what is tested.
FAST_RETRY = RetryPolicy(max_attempts=10, backoff_base=0.005, backoff_cap=0.02)


def _end(days: int) -> dt.date:
    return START + dt.timedelta(days=days - 1)


def _account_keys(sim: SimulatorServer) -> str:
    return (
        f'tool = "dev"\naccount_login = "{sim.settings.account_login}"\n'
        f'account_password_env = "{ACCOUNT_PASSWORD_ENV}"'
    )


def _env(sim: SimulatorServer) -> dict[str, str]:
    return cli_env(sim, **{ACCOUNT_PASSWORD_ENV: sim.settings.account_password})


def _config(tmp_path: Path, sim: SimulatorServer, **kwargs: Any) -> Config:
    path = write_config(tmp_path, sim, **kwargs)
    return load_config(path, env=_env(sim))


def _run(
    config: Config,
    *,
    days: int,
    phones: tuple[str, ...] | None = None,
    retry: RetryPolicy | None = None,
    progress: Any = None,
    stop: asyncio.Event | None = None,
    newest_first: bool = False,
) -> RunSummary:
    phones = phones or config.harvest.phones
    end = _end(days)

    async def main() -> RunSummary:
        return await harvest(
            config,
            pull_plan(phones, START, end, config.harvest.window, newest_first=newest_first),
            retry=retry,
            progress=progress,
            stop=stop,
        )

    return asyncio.run(main())


class _AfterJobs:
    """A progress sink that calls ``action`` once, when the n-th job has finished."""

    def __init__(self, n: int, action: Callable[[], None]) -> None:
        self.n, self.action, self.seen = n, action, 0

    def started(self, command: str, counts: PlanCount, gate: QuotaGate) -> None:
        pass

    def job_finished(self, job: Job, state: str, rows: int) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.action()

    def tick(self, summary: RunSummary, gate: GateSnapshot) -> None:
        pass

    def finished(self, summary: RunSummary) -> None:
        pass


def _ledger(store: Path, sql: str) -> list[tuple[Any, ...]]:
    con = store_connection(store)
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def _done_paths(store: Path) -> set[str]:
    return {str(r[0]) for r in _ledger(store, "SELECT request_path FROM ledger_current")}


def _data_paths(sim: SimulatorServer, since: int = 0) -> list[str]:
    return [e.path for e in sim.log.entries()[since:] if e.path.startswith("/path/")]


def _assert_done_jobs_match_truth(store: Path, sim: SimulatorServer) -> int:
    """Every job the ledger says is done holds exactly the ground truth, once."""
    rows = stored_rows(store)
    done = _ledger(store, "SELECT phone, window_start, window_end FROM ledger_current")
    for phone, start, end in done:
        got = rows.get((phone, start, end), [])
        assert len(got) == len(set(got)), f"duplicate rows for {phone} {start}"
        assert set(got) == sim.truth_rows(phone, start, end), f"rows differ for {phone} {start}"
    assert set(rows) <= {(p, s, e) for p, s, e in done}, "rows visible for a job not done"
    return len(done)


# -- 401: renewal with account credentials, a clean stop without -------------------------------


def test_many_401s_at_once_cause_one_renewal(tmp_path: Path, make_simulator: MakeSimulator) -> None:
    sim = make_simulator(today=TODAY, latency=0.03)
    config = _config(tmp_path, sim, start=START, end=_end(8), api_extra=_account_keys(sim))
    expire = _AfterJobs(6, sim.simulator.expire_credentials)
    summary = _run(config, days=8, progress=expire)

    assert summary.exit_code == 0 and summary.done == 32
    assert sim.log.count(path="/auth") == 1  # the configured pair first, then ONE renewal
    assert sim.log.count(status=401) >= 2  # several requests were refused at once
    assert summary.renewals == 1
    assert_store_matches_truth(
        tmp_path / "store", sim, [*sim.settings.phones, "ALL"], START, _end(8)
    )


def test_account_credentials_are_obtained_at_the_first_request(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY)  # its preset pair exists but is not configured
    path = write_config(tmp_path, sim, start=START, end=_end(3), api_extra=_account_keys(sim))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(x for x in lines if not x.startswith(("login =", "password_env"))))
    config = load_config(path, env=_env(sim))
    summary = _run(config, days=3)
    assert summary.exit_code == 0 and summary.done == 12
    assert sim.log.count(path="/auth") == 1  # four workers started together: one auth call
    assert sim.log.count(status=401) == 0
    assert summary.renewals == 0


def test_static_credentials_401_stops_cleanly_and_the_next_run_resumes(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, latency=0.02)
    config = write_config(tmp_path, sim, start=START, end=_end(10))
    args = ["pull", "-c", str(config), "--json", "--today", TODAY.isoformat()]
    proc = start_cli(args, env=cli_env(sim), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: sim.log.count(outcome="ok") >= 8)
    sim.simulator.expire_credentials()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "401" in err and "POST /auth" in err  # what happened and what to do
    summary = json.loads(out)
    assert summary["stopped"] == "credentials" and 8 <= summary["done"] < 40
    store = tmp_path / "store"
    assert _assert_done_jobs_match_truth(store, sim) == summary["done"]
    first_run = _done_paths(store)

    # new temporary credentials, as the user would get them, and the same command again
    login, password = sim.simulator.issue_credentials()
    config.write_text(config.read_text().replace(sim.credentials[0], login))
    sent = len(sim.log)
    again = run_cli(args, env={**cli_env(), PASSWORD_ENV: password})
    assert again.returncode == 0, again.stderr
    assert not first_run & set(_data_paths(sim, sent)), "a finished job was fetched again"
    assert_store_matches_truth(store, sim, [*sim.settings.phones, "ALL"], START, _end(10))


def test_fresh_credentials_rejected_stop_instead_of_looping(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """An inactive account: /auth answers 401 -> exit 3 at once, one auth call, no data call."""
    sim = make_simulator(today=TODAY, account_active=False)
    config = write_config(tmp_path, sim, start=START, end=_end(3), api_extra=_account_keys(sim))
    result = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=_env(sim))
    assert result.returncode == 3, result.stderr
    assert sim.log.count(path="/auth") == 1  # the configured pair was refused, one renewal tried
    assert sim.log.count(status=200) == 0


# -- the credential source on its own (a fake clock for the 23-hour renewal) -------------------


class _ManualClock:
    """Monotonic time that moves only when told (or when the code under test sleeps)."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def _account_api(sim: SimulatorServer, *, with_pair: bool = False) -> ApiConfig:
    login, password = sim.credentials if with_pair else (None, None)
    return ApiConfig(
        base_url=sim.base_url,
        login=login,
        password=Secret(password) if password else None,
        tool="dev",
        account_login=sim.settings.account_login,
        account_password=Secret(sim.settings.account_password),
        timeout_seconds=5,
    )


def test_account_credentials_are_renewed_before_they_expire(
    make_simulator: MakeSimulator,
) -> None:
    sim = make_simulator(auth_limit=100)
    clock = _ManualClock()

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            source = ApiClient(session, _account_api(sim, with_pair=True), clock).credentials
            first = await source.current()
            assert first.login == sim.credentials[0]  # the configured pair, no auth call
            clock.t += RENEW_AFTER_SECONDS - 60
            assert await source.current() is first
            clock.t += 120  # 23 hours of use: renew ahead of Plum's 24
            pairs = await asyncio.gather(*(source.current() for _ in range(4)))
            assert len({p.login for p in pairs}) == 1 and pairs[0].generation == 1
            assert source.renewals == 1

    asyncio.run(main())
    assert sim.log.count(path="/auth") == 1  # four callers, one renewal


def test_the_auth_calls_own_limit_is_respected(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(auth_limit=100)
    clock = _ManualClock()

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            source = ApiClient(session, _account_api(sim), clock).credentials
            began = clock.t
            for _ in range(16):
                pair = await source.current()
                source.accepted(pair)
                await source.renew(pair)
            assert clock.t - began >= 900 - 1  # the 16th call waited for the window to pass

    asyncio.run(main())
    assert sim.log.count(path="/auth") == 17


def test_a_429_from_auth_waits_for_its_reset(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(auth_limit=1, window_seconds=2)
    clock = _ManualClock()

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            source = ApiClient(session, _account_api(sim), clock).credentials
            pair = await source.current()
            source.accepted(pair)
            began = time.monotonic()
            fresh = await source.renew(pair)
            assert fresh.generation == 1
            assert time.monotonic() - began < 4

    # the manual clock's sleep does not wait: make it really wait, as the reset is real time
    async def real_sleep(seconds: float) -> None:
        clock.t += seconds
        await asyncio.sleep(seconds)

    clock.sleep = real_sleep  # type: ignore[method-assign]
    while time.time() % 2 > 1.0:  # both calls inside one window of the auth limit
        time.sleep(0.05)
    asyncio.run(main())
    assert sim.log.count(path="/auth", status=429) >= 1
    assert sim.log.count(path="/auth", status=200) == 2


def test_a_static_pair_cannot_be_renewed(make_simulator: MakeSimulator) -> None:
    sim = make_simulator()
    login, password = sim.credentials
    api = ApiConfig(base_url=sim.base_url, login=login, password=Secret(password))

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            source = ApiClient(session, api, _ManualClock()).credentials
            pair = await source.current()
            with pytest.raises(CredentialsError, match="401"):
                await source.renew(pair)

    asyncio.run(main())
    assert sim.log.count() == 0


# -- permanent and transient failures -----------------------------------------------------------


def test_a_phone_not_on_the_account_fails_with_the_servers_message(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY)
    good, bad = sim.settings.phones[0], "6175550199"
    config = write_config(tmp_path, sim, phones=[good, bad], start=START, end=_end(3))
    result = run_cli(
        ["pull", "-c", str(config), "--json", "--today", TODAY.isoformat()], env=cli_env(sim)
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["done"] == 3 and len(summary["failed"]) == 3
    assert all("phone number not found" in f["reason"] for f in summary["failed"])
    ledger = _ledger(
        tmp_path / "store", "SELECT phone, state, reason, attempts FROM ledger_latest ORDER BY 1"
    )
    failed = [r for r in ledger if r[0] == bad]
    assert len(failed) == 3
    assert all(
        r[1] == "failed" and "phone number not found on this account" in r[2] for r in failed
    )
    assert all(r[3] == 1 for r in failed)  # a 400 is never retried
    assert sim.log.count(status=400) == 3
    assert_store_matches_truth(tmp_path / "store", sim, [good], START, _end(3))

    # a plain re-run does not retry them (--retry-failed does), but exit 0 would say all is done
    again = run_cli(
        ["pull", "-c", str(config), "--json", "--today", TODAY.isoformat()], env=cli_env(sim)
    )
    assert again.returncode == 1, again.stderr
    assert len(json.loads(again.stdout)["failed_before"]) == 3
    assert sim.log.count(status=400) == 3


def test_500s_at_30_percent_are_retried_until_every_job_is_done(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, error_rate=0.3, seed=3)
    config = _config(tmp_path, sim, start=START, end=_end(10))
    summary = _run(config, days=10, retry=FAST_RETRY)
    assert summary.exit_code == 0 and summary.done == 40 and not summary.failed
    errors = sim.log.count(status=500)
    assert errors >= 5
    assert summary.retries == errors
    assert summary.requests == len(_data_paths(sim)) == 40 + errors  # every retry was sent once
    assert_store_matches_truth(
        tmp_path / "store", sim, [*sim.settings.phones, "ALL"], START, _end(10)
    )
    # the ledger counts every attempt of a job, and each one the server saw
    attempts = _ledger(tmp_path / "store", "SELECT sum(total_attempts) FROM ledger_latest")
    assert attempts == [(40 + errors,)]


def test_drops_truncations_and_malformed_bodies_are_retried(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, drop_rate=0.1, truncate_rate=0.1, malformed_rate=0.1, seed=5)
    config = _config(tmp_path, sim, start=START, end=_end(8))
    summary = _run(config, days=8, retry=FAST_RETRY)
    outcomes = sim.log.outcomes()
    assert summary.exit_code == 0 and summary.done == 32, summary.failed
    assert outcomes["dropped"] and outcomes["truncated"] and outcomes["malformed"], outcomes
    assert summary.quarantined == outcomes["malformed"]
    assert summary.requests == len(_data_paths(sim))  # aiohttp re-sent no dropped GET itself
    assert summary.retries == outcomes["dropped"] + outcomes["truncated"] + outcomes["malformed"]
    assert_store_matches_truth(
        tmp_path / "store", sim, [*sim.settings.phones, "ALL"], START, _end(8)
    )
    states = _ledger(tmp_path / "store", "SELECT state, count(*) FROM ledger_latest GROUP BY 1")
    assert states == [("done", 32)]  # the quarantine records never outlive a job's success


def test_retries_give_up_after_max_attempts(tmp_path: Path, make_simulator: MakeSimulator) -> None:
    # One job: its 3 errors stay under the storm breaker's 5 in a row (storm.py), which two jobs'
    # 6 crossed whenever the last retry was sent after the fifth error came back (a 15 s pause).
    sim = make_simulator(today=TODAY, error_rate=1.0)
    config = _config(tmp_path, sim, phones=["ALL"], start=START, end=_end(1))
    summary = _run(config, days=1, retry=RetryPolicy(3, 0.001, 0.002))
    assert summary.exit_code == 1 and summary.done == 0
    assert [r for _, r in summary.failed] == ["HTTP 500: unknown error (after 3 attempts)"]
    assert sim.log.count(status=500) == 3


def test_a_429_never_counts_as_an_attempt(tmp_path: Path, make_simulator: MakeSimulator) -> None:
    """Another tool spends most of a window while our slow requests are on the wire: the ones
    it overtakes are refused, and with max_attempts = 1 a job would fail if a 429 counted."""
    window = 4
    # The probe (replied at 0.5 s) and the next four requests (arriving at 0.5 s, before the
    # other tool spends at 0.8 s) are counted; the last three, sent when those come back at
    # 1.0 s, are overtaken and refused. The server's window is made to begin just before the run
    # does (not when the simulator started: a loaded machine takes its time to get there).
    sim = make_simulator(
        today=TODAY,
        limit=10,
        window_seconds=window,
        latency=0.5,
        other_client_spend=6,
        other_client_at=0.8,
    )
    config = _config(tmp_path, sim, phones=["ALL"], start=START, end=_end(8), max_attempts=1)
    sim.settings.clock_skew = window - time.time() % window  # the server's window begins now
    summary = _run(config, days=8, retry=RetryPolicy(max_attempts=1))
    assert summary.exit_code == 0 and summary.done == 8
    refused = sim.log.count(status=429)
    assert refused >= 1 and summary.rate_limited == refused
    assert summary.retries == 0
    attempts = _ledger(tmp_path / "store", "SELECT DISTINCT attempts FROM ledger_latest")
    assert attempts == [(1,)]


# -- order and streaming --------------------------------------------------------------------------


@pytest.mark.parametrize("newest_first", [False, True])
def test_job_order(tmp_path: Path, make_simulator: MakeSimulator, newest_first: bool) -> None:
    sim = make_simulator(today=TODAY)
    config = _config(tmp_path, sim, phones=["ALL"], start=START, end=_end(6), concurrency=1)
    assert _run(config, days=6, newest_first=newest_first).done == 6
    starts = [e.start for e in sim.log.entries()]
    assert starts == sorted(starts, reverse=newest_first)


# -- stopping -------------------------------------------------------------------------------------


def test_a_harvester_error_mid_run_stops_cleanly_keeps_the_work_and_propagates(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """What the quota gate raises when the server refuses everything for windows on end (a
    HarvesterError from ``gate.request()``): the run stops, flushes what is done, and the error
    reaches the caller with its message (the CLI: one line, exit 1)."""
    sim = make_simulator(today=TODAY)
    config = _config(tmp_path, sim, phones=["ALL"], start=START, end=_end(10), concurrency=1)

    class Refusing(QuotaGate):
        def request(self) -> Any:
            if sim.log.count() >= 3:
                raise HarvesterError("the server refused every request for 3 windows")
            return super().request()

    original = scheduler.QuotaGate
    scheduler.QuotaGate = Refusing  # type: ignore[misc]
    try:
        with pytest.raises(HarvesterError, match="refused every request"):
            _run(config, days=10, retry=FAST_RETRY)
    finally:
        scheduler.QuotaGate = original  # type: ignore[misc]
    sent = sim.log.count()
    assert 3 <= sent <= 4  # a second worker may have had one on the wire
    assert _assert_done_jobs_match_truth(tmp_path / "store", sim) == sent  # flushed, none lost


def test_a_stop_while_waiting_for_quota_returns_at_once(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """The window's budget is spent and the next one is 30 s away: the stop abandons the jobs
    waiting in the gate by cancelling them, without sending or waiting for the reset."""
    sim = make_simulator(today=TODAY, limit=5, window_seconds=30)
    config = _config(tmp_path, sim, start=START, end=_end(5))
    stop = asyncio.Event()
    began = time.monotonic()
    summary = _run(config, days=5, stop=stop, progress=_AfterJobs(5, stop.set))
    assert time.monotonic() - began < 5
    assert summary.exit_code == 130 and summary.stopped == "interrupted"
    assert summary.done >= 5 and summary.pending == 20 - summary.done
    assert sim.log.count(status=429) == 0 and len(sim.log) == summary.done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_cleanly_and_the_next_run_resumes(
    tmp_path: Path, make_simulator: MakeSimulator, sig: signal.Signals
) -> None:
    sim = make_simulator(today=TODAY, latency=0.15, jitter=0.1)
    config = write_config(tmp_path, sim, start=START, end=_end(12), flush_seconds=0.2)
    args = ["pull", "-c", str(config), "--json", "--today", TODAY.isoformat()]
    proc = start_cli(args, env=cli_env(sim), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: sim.log.count(outcome="ok") >= 10)
    proc.send_signal(sig)
    signalled = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - signalled < 3
    assert "interrupted" in err
    summary = json.loads(out)
    assert summary["stopped"] == "interrupted" and 10 <= summary["done"] < 48

    store = tmp_path / "store"
    assert _assert_done_jobs_match_truth(store, sim) == summary["done"]
    first_run = _done_paths(store)
    sent = len(sim.log)
    sim.settings.latency = sim.settings.jitter = 0.0  # the re-run's pace is not what is judged
    again = run_cli(args, env=cli_env(sim))
    assert again.returncode == 0, again.stderr
    second = _data_paths(sim, sent)
    assert not first_run & set(second), "a finished job was fetched again"
    assert len(second) == 48 - len(first_run)
    assert_store_matches_truth(store, sim, [*sim.settings.phones, "ALL"], START, _end(12))


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run to make progress")
        time.sleep(0.01)


# -- a quota window the config gets wrong ---------------------------------------------------------


@pytest.mark.parametrize(("server", "configured"), [(4.0, 1.0), (1.0, 4.0)])
def test_the_servers_window_length_wins_over_the_configured_one(
    tmp_path: Path, make_simulator: MakeSimulator, server: float, configured: float
) -> None:
    """Told 1 s windows against the server's 4 s, the model alone sends into spent windows (a
    429 storm: 1,300 of them in one trial); told 4 s against 1 s, it idles. Either way the
    Resets correct it: at most one refused burst, every job done once."""
    sim = make_simulator(today=TODAY, limit=12, window_seconds=server)
    phones = sim.settings.phones[:2]
    config = write_config(
        tmp_path, sim, phones=phones, start=START, end=_end(12), window_seconds=configured
    )
    result = run_cli(
        ["pull", "-c", str(config), "--json", "--today", TODAY.isoformat()], env=cli_env(sim)
    )
    assert result.returncode == 0, result.stderr
    assert sim.log.count(status=429) <= 4  # concurrency: one burst, before the first Reset
    # learned from the Resets' spacing (a window skipped under load can make the first estimate
    # a multiple of the true length: slower, never refused; the next windows correct it)
    assert "quota windows are" in result.stderr and "following the server" in result.stderr
    assert sim.log.count(status=200) == 24
    assert_store_matches_truth(tmp_path / "store", sim, phones, START, _end(12))


def test_a_slow_flush_holds_back_new_requests(
    tmp_path: Path, make_simulator: MakeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure: while a flush is stuck on a slow disk, no more than one more batch (plus
    what the workers already hold) is fetched, so a kill -9 at that moment loses a bounded
    number of replies and the buffer's memory stays bounded; once the disk catches up the run
    finishes with every job stored."""
    sim = make_simulator(today=TODAY, limit=100_000)
    flush_jobs, concurrency = 4, 2
    config = _config(
        tmp_path,
        sim,
        phones=["ALL"],
        start=START,
        end=_end(30),
        concurrency=concurrency,
        flush_jobs=flush_jobs,
        flush_seconds=30,
    )
    disk_slow, disk_back = threading.Event(), threading.Event()
    real_flush = StoreWriter.flush
    sent_while_stuck: list[int] = []

    def slow_first_flush(writer: StoreWriter) -> Any:
        if not disk_slow.is_set():
            disk_slow.set()
            sent = len(_data_paths(sim))
            time.sleep(1.0)  # far longer than the 30 replies take on loopback
            sent_while_stuck.append(len(_data_paths(sim)) - sent)
            disk_back.set()
        return real_flush(writer)

    monkeypatch.setattr(StoreWriter, "flush", slow_first_flush)
    summary = _run(config, days=30)
    assert disk_back.is_set() and summary.done == 30 and not summary.failed
    workers = concurrency * scheduler.WORKERS_PER_SLOT
    assert sent_while_stuck[0] <= flush_jobs + workers, sent_while_stuck
    assert _assert_done_jobs_match_truth(tmp_path / "store", sim) == 30
