"""The API layer's decisions, judged by what reached a real server and what the store holds.

- every exchange becomes exactly one typed outcome (a scripted server answers each status);
- a 5xx storm pauses sending: a broken server costs a few requests a minute, not max_attempts
  per job (issue 13.8), on a real server with the pauses shrunk through the policy;
- a window the server's day has not passed is not recorded as done (issue 12.11);
- an implausible counter (2^63-1) is quarantined and the views still sum (issue 12.8);
- a 30 MB reply is not read past ``api.max_reply_bytes``, and memory stays bounded (12.13);
- the retry helper's contract (issue 13.9).
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harvester.api.client import ApiClient
from harvester.api.outcomes import (
    InvalidBody,
    NoReply,
    RateLimited,
    Rejected,
    Rows,
    ServerError,
    Unauthorized,
    Unfinished,
    Unreachable,
)
from harvester.api.reply import MAX_PLAUSIBLE_COUNT
from harvester.clock import LoopClock, SystemClock
from harvester.config import Config, load_config
from harvester.plan import pull_plan
from harvester.retrying import Backoff, retry_async, retry_sync
from harvester.scheduler import RetryPolicy, harvest
from harvester.simulator.settings import DEFAULT_TEMP_PASSWORD
from harvester.store import Store
from harvester.storm import STORM_AFTER, StormBreaker, StormPolicy
from tests.conftest import MakeSimulator
from tests.scripted_api import ScriptedApi, empty_reply, scripted_config
from tests.support import (
    PASSWORD_ENV,
    assert_store_matches_truth,
    cli_env,
    ledger_states,
    run_cli,
    stored_rows,
    write_config,
)
from tests.virtual_time import run_virtual

TODAY = dt.date(2024, 3, 15)
START = dt.date(2024, 3, 1)
ENV = {PASSWORD_ENV: DEFAULT_TEMP_PASSWORD}
URL = "https://demos.plumgroup.com/vxml/start.php"


def item(**counts: int) -> dict[str, Any]:
    names = ("visits", "filled", "nomatch", "noinput", "transfer", "disconnect")
    return {"page": "main.php", "form": "f", "item": "i", **{n: counts.get(n, 1) for n in names}}


def reply_of(*items: dict[str, Any]) -> bytes:
    return json.dumps({"applications": {URL: list(items)}}).encode()


# -- one typed outcome per exchange ---------------------------------------------------------------

ANSWERS: dict[str, tuple[int, bytes]] = {
    "/rows": (200, reply_of(item(visits=3))),
    "/empty": (200, empty_reply()),
    "/limited": (429, b'{"error":"quota exceeded"}'),
    "/refused": (401, b'{"error":"invalid credentials"}'),
    "/bad-date": (400, b'{"error":"invalid start date"}'),
    "/missing": (404, b'{"error":"not found"}'),
    "/method": (405, b'{"error":"only POST"}'),
    "/broken": (503, b"<html>Service Unavailable</html>"),
    "/garbage": (200, b"<html>not json</html>"),
    "/error-200": (200, b'{"error":"something failed"}'),
    "/huge-count": (200, reply_of(item(visits=2**63 - 1))),
}
EXPECTED = {
    "/rows": Rows,
    "/empty": Rows,
    "/limited": RateLimited,
    "/refused": Unauthorized,
    "/bad-date": Rejected,
    "/missing": Rejected,
    "/method": Rejected,
    "/broken": ServerError,
    "/garbage": InvalidBody,
    "/error-200": InvalidBody,
    "/huge-count": InvalidBody,
}


def test_every_exchange_is_one_typed_outcome(tmp_path: Path) -> None:
    server = ScriptedApi(lambda path: ANSWERS[path])
    try:
        config = load_config(
            scripted_config(tmp_path, server.base_url(), phones=["ALL"], start=START, end=START),
            env=ENV,
        )

        async def main() -> dict[str, object]:
            async with aiohttp.ClientSession() as session:
                client = ApiClient(session, config.api, SystemClock())
                credentials = await client.authorize()
                assert not isinstance(credentials, Unreachable)
                far = dt.date(2000, 1, 1)  # a window long over
                return {p: await client.fetch(p, far, credentials) for p in ANSWERS}

        outcomes = asyncio.run(main())
    finally:
        server.stop()
    assert {path: type(o) for path, o in outcomes.items()} == EXPECTED
    rows = outcomes["/rows"]
    assert isinstance(rows, Rows) and rows.rows.visits == [3] and rows.body == ANSWERS["/rows"][1]
    empty = outcomes["/empty"]
    assert isinstance(empty, Rows) and len(empty.rows) == 0
    limited = outcomes["/limited"]
    assert isinstance(limited, RateLimited) and limited.reset is not None
    rejected = outcomes["/bad-date"]
    assert isinstance(rejected, Rejected) and rejected.reason == "HTTP 400: invalid start date"
    huge = outcomes["/huge-count"]
    assert isinstance(huge, InvalidBody) and "implausibly large" in huge.reason


def test_a_window_the_servers_day_has_not_passed_is_unfinished(tmp_path: Path) -> None:
    server = ScriptedApi(lambda path: (200, empty_reply()))
    try:
        config = load_config(
            scripted_config(tmp_path, server.base_url(), phones=["ALL"], start=START, end=START),
            env=ENV,
        )

        async def main() -> list[object]:
            async with aiohttp.ClientSession() as session:
                client = ApiClient(session, config.api, SystemClock())
                pair = await client.authorize()
                assert not isinstance(pair, Unreachable)
                today = dt.datetime.now(dt.UTC).date()
                days = (today - dt.timedelta(days=1), today, today + dt.timedelta(days=1))
                return [await client.fetch("/x", day, pair) for day in days]

        yesterday, today, tomorrow = asyncio.run(main())
    finally:
        server.stop()
    assert isinstance(yesterday, Rows)
    assert isinstance(today, Unfinished) and isinstance(tomorrow, Unfinished)
    assert today.server_today == dt.datetime.now(dt.UTC).date()


def test_unreachable_and_lost_replies(tmp_path: Path, make_simulator: MakeSimulator) -> None:
    """No listener: Unreachable (never sent). A server that hangs up: NoReply (it was sent)."""
    dropping = make_simulator(today=TODAY, drop_rate=1.0)
    outcomes = []
    for url in ("http://127.0.0.1:9/api", dropping.base_url):
        config = load_config(
            scripted_config(tmp_path, url, phones=["ALL"], start=START, end=START), env=ENV
        )

        async def main(config: Config = config) -> object:
            async with aiohttp.ClientSession() as session:
                client = ApiClient(session, config.api, SystemClock())
                pair = await client.authorize()
                assert not isinstance(pair, Unreachable)
                return await client.fetch("/path/20240301/20240301/ALL", START, pair)

        outcomes.append(asyncio.run(main()))
    refused, dropped = outcomes
    assert isinstance(refused, Unreachable) and "cannot connect" in refused.reason
    assert isinstance(dropped, NoReply) and dropped.reason.startswith("transport: ")
    assert dropping.log.count(outcome="dropped") == 1


# -- a 5xx storm ----------------------------------------------------------------------------------

# Real pauses (15 s growing to 300 s) shrunk 60-fold: the test's 2 seconds stand for 2 minutes.
SCALE = 60.0
STORM_POLICY = RetryPolicy(
    max_attempts=6,
    backoff_base=1.0 / SCALE,
    backoff_cap=60.0 / SCALE,
    storm_pause=15.0 / SCALE,
    storm_pause_cap=300.0 / SCALE,
)


def test_a_5xx_storm_costs_a_few_requests_a_minute(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """Every request answers 500 for two (scaled) minutes: the run pauses sending instead of
    spending max_attempts requests on every job; the simulator's log counts what was sent."""
    sim = make_simulator(today=TODAY, error_rate=1.0)
    config = load_config(
        write_config(tmp_path, sim, phones=["ALL"], start=START, end=TODAY - dt.timedelta(1)),
        env=cli_env(sim),
    )
    plan = pull_plan(("ALL",), START, TODAY - dt.timedelta(1), config.harvest.window)
    minutes = 2.0

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(minutes * 60 / SCALE, stop.set)
        summary = await harvest(config, plan, retry=STORM_POLICY, stop=stop)
        assert summary.stopped == "interrupted"

    began = time.monotonic()
    asyncio.run(main())
    sent = [e.t - began for e in sim.log.entries() if e.path.startswith("/path/")]
    assert all(e.status == 500 for e in sim.log.entries())
    per_minute = len(sent) / minutes
    second_minute = [t for t in sent if t >= 60 / SCALE]
    # 5 errors in a row start the storm, up to 3 more were on the wire; then a probe after 15,
    # 30, 60 s (scaled): ~11 in two minutes, and the second minute sees one or two.
    assert per_minute <= 6, sent
    assert len(second_minute) <= 3, sent


def test_the_storm_ends_when_the_server_answers_again(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(today=TODAY, error_rate=1.0)
    config = load_config(
        write_config(tmp_path, sim, phones=["ALL"], start=START, end=dt.date(2024, 3, 10)),
        env=cli_env(sim),
    )
    plan = pull_plan(("ALL",), START, dt.date(2024, 3, 10), config.harvest.window)
    policy = RetryPolicy(20, 0.01, 0.05, storm_pause=0.2, storm_pause_cap=0.5)

    async def main() -> Any:
        asyncio.get_running_loop().call_later(1.0, lambda: setattr(sim.settings, "error_rate", 0))
        return await harvest(config, plan, retry=policy)

    summary = asyncio.run(main())
    assert summary.exit_code == 0 and summary.done == 10
    assert_store_matches_truth(tmp_path / "store", sim, ["ALL"], START, dt.date(2024, 3, 10))
    assert sim.log.count(status=500) <= 15  # paused meanwhile: ~8, then a probe a half second


# -- the server's date decides when a day is over --------------------------------------------------


def test_pull_with_a_future_today_leaves_the_days_the_server_has_not_passed(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    """``--today`` three days ahead of the server: the server's own days (today and later) are
    not recorded as done with 0 rows; they stay pending, and a later run fetches them."""
    sim = make_simulator()  # the server's today: its clock's UTC date
    server_today = dt.datetime.now(dt.UTC).date()
    start, ahead = server_today - dt.timedelta(days=3), server_today + dt.timedelta(days=3)
    config = write_config(tmp_path, sim, phones=["ALL"], start=start, end=ahead, concurrency=1)
    pull = ["pull", "-c", str(config), "--json", "--today", ahead.isoformat()]
    first = run_cli(pull, env=cli_env(sim))
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["done"] == 3 and summary["unfinished"] == 4 and summary["pending"] == 4
    assert "not over yet, left for a later run" in first.stderr
    # once a reply's Date told the server's day, the later days were not even sent
    assert len([e for e in sim.log.entries() if e.path.startswith("/path/")]) <= 4
    assert ledger_states(tmp_path / "store") == {"done": 3}
    done_days = {key[1] for key in stored_rows(tmp_path / "store")}
    assert max(done_days) < server_today

    again = run_cli(pull, env=cli_env(sim))
    assert json.loads(again.stdout)["to_fetch"] == 4  # the unfinished days are still to fetch


# -- hostile replies ------------------------------------------------------------------------------


def test_an_implausible_counter_is_quarantined_and_the_views_still_sum(tmp_path: Path) -> None:
    days = {"20240301": 5, "20240302": 2**63 - 1, "20240303": MAX_PLAUSIBLE_COUNT + 1}
    server = ScriptedApi(lambda path: (200, reply_of(item(visits=days[path.split("/")[2]]))))
    try:
        config = scripted_config(
            tmp_path, server.base_url(), phones=["ALL"], start=START, end=dt.date(2024, 3, 3)
        )
        done = run_cli(["pull", "-c", str(config), "--json", "--today", "2024-03-10"], env=ENV)
    finally:
        server.stop()
    assert done.returncode == 1, done.stderr
    reasons = [f["reason"] for f in json.loads(done.stdout)["failed"]]
    assert len(reasons) == 2 and all("implausibly large" in r for r in reasons)
    quarantined = Store(tmp_path / "store").quarantine()
    assert len(quarantined) == 2 and all(b"visits" in q.body for q in quarantined)
    total = run_cli(
        ["query", "-c", str(config), "--format", "csv", "SELECT sum(visits) FROM diagnostic_flow"],
        env=ENV,
    )
    assert total.returncode == 0, total.stderr
    assert total.stdout.split() == ["sum(visits)", "5"]
    report = run_cli(["report", "-c", str(config), "--out", str(tmp_path / "r.html")], env=ENV)
    assert report.returncode == 0, report.stderr


# The peak resident set of the CLI process itself: VmHWM starts afresh at exec, whereas getrusage's
# ru_maxrss carries over the forking parent's (pytest's) high-water mark.
MEASURE_RSS = """
import atexit, re, sys
from pathlib import Path
out = Path(sys.argv[1])
def peak():
    status = Path("/proc/self/status").read_text()
    out.write_text(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
atexit.register(peak)
sys.argv = ["harvester", *sys.argv[2:]]
from harvester.cli import main
main()
"""


def _pull_rss(
    config: Path, tmp_path: Path, name: str
) -> tuple[subprocess.CompletedProcess[str], int]:
    """A pull in a subprocess, and its peak resident set in KiB."""
    rss = tmp_path / f"{name}.rss"
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_RSS, str(rss), "pull", "-c", str(config), "--json",
         "--today", "2024-03-10"],
        env=cli_env(**ENV), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert rss.exists(), done.stderr
    return done, int(rss.read_text())


@pytest.fixture(scope="module")
def big_reply() -> bytes:
    """30 MB of valid items (~2 s of CPU to build: once for both framings)."""
    big = reply_of(*[item(visits=n) for n in range(300_000)])
    assert len(big) > 30_000_000
    return big


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_30_mb_reply_is_not_read_past_the_cap_and_memory_stays_bounded(
    tmp_path: Path, chunked: bool, big_reply: bytes
) -> None:
    """A reply far larger than any real one (30 MB of valid items) is quarantined after
    ``api.max_reply_bytes`` (16 MiB by default): at once when its Content-Length says so, after
    16 MiB when it streams; the pull's peak memory stays near the one of ordinary replies."""
    big = big_reply
    server = ScriptedApi(
        lambda path: (200, big if "20240302" in path else empty_reply()), chunked=chunked
    )
    try:
        small_dir, big_dir = tmp_path / "small", tmp_path / "big"
        small_dir.mkdir()
        big_dir.mkdir()
        small = scripted_config(
            small_dir, server.base_url(), phones=["ALL"], start=START, end=START
        )
        baseline, baseline_rss = _pull_rss(small, small_dir, "small")
        config = scripted_config(
            big_dir, server.base_url(), phones=["ALL"], start=START, end=dt.date(2024, 3, 3)
        )
        done, rss = _pull_rss(config, big_dir, "big")
    finally:
        server.stop()
    assert baseline.returncode == 0, baseline.stderr
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["done"] == 2
    assert ["max_reply_bytes" in f["reason"] for f in summary["failed"]] == [True]
    (quarantined,) = Store(big_dir / "store").quarantine()
    assert len(quarantined.body) == (2**20 if chunked else 0)  # the first MiB of what was read
    grew_mb = (rss - baseline_rss) / 1024
    print(f"peak RSS: {baseline_rss / 1024:.0f} MB for empty replies, {rss / 1024:.0f} MB with "
          f"a 30 MB one (+{grew_mb:.0f} MB)")  # fmt: skip
    assert grew_mb < 60, f"a 30 MB reply added {grew_mb:.0f} MB"


# -- the retry helper -----------------------------------------------------------------------------


def test_retry_helpers_retry_what_wait_for_allows_and_re_raise_the_last_error() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("vanished")
        return "ok"

    def wait_for(error: Exception, attempt: int) -> float | None:
        return 0.5 * attempt if isinstance(error, OSError) else None

    assert retry_sync(flaky, attempts=3, wait_for=wait_for, sleep=waits.append) == "ok"
    assert waits == [0.5, 1.0]
    calls.clear()
    with pytest.raises(OSError):
        retry_sync(flaky, attempts=2, wait_for=wait_for, sleep=waits.append)
    with pytest.raises(ValueError):  # not worth a retry: at once
        retry_sync(lambda: int("x"), attempts=5, wait_for=wait_for, sleep=waits.append)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> str:
        calls.clear()

        async def call() -> str:
            return flaky()

        return await retry_async(call, attempts=3, wait_for=wait_for, sleep=sleep)

    waits.clear()
    assert asyncio.run(main()) == "ok" and waits == [0.5, 1.0]
    assert Backoff(1.0, 60.0, jitter=False).delay(3) == 4.0
    assert Backoff(1.0, 60.0, jitter=False).delay(10) == 60.0
    assert 0 <= Backoff(1.0, 60.0).delay(2) <= 2.0


# -- the layer's boundaries -----------------------------------------------------------------------

HARVESTER = Path(__file__).resolve().parent.parent / "harvester"


def _runtime_imports(path: Path) -> set[str]:
    """The harvester modules ``path`` imports at run time (``if TYPE_CHECKING:`` blocks aside)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name.startswith("harvester")}


def test_the_api_layer_imports_one_way() -> None:
    """The API layer knows nothing of quotas, scheduling or storage; the store and the gate
    nothing of the API layer but what they share (the item rows; the header readers)."""
    for path in (HARVESTER / "api").glob("*.py"):
        imports = _runtime_imports(path)
        bad = {
            i
            for i in imports
            if i.split(".")[1] in {"scheduler", "fetching", "store", "gate", "cli", "storm"}
        }
        assert not bad, f"{path.name} imports {bad}"
    assert not {i for i in _runtime_imports(HARVESTER / "api/transport.py") if "credentials" in i}
    assert not {i for i in _runtime_imports(HARVESTER / "api/credentials.py") if "client" in i}
    for path in (HARVESTER / "store").glob("*.py"):
        assert not {i for i in _runtime_imports(path) if i.startswith("harvester.api")}, path
    gate = {
        i
        for path in (HARVESTER / "gate").glob("*.py")
        for i in _runtime_imports(path)
        if i.startswith("harvester.api")
    }
    assert {i.rsplit(".", 1)[0] for i in gate} <= {"harvester.api", "harvester.api.headers"}
    for gone in ("client", "credentials", "reply", "rate_headers"):
        assert not (HARVESTER / f"{gone}.py").exists()


def test_the_storm_breaker_with_the_real_pauses_on_virtual_time() -> None:
    """Eight senders against a server that fails everything for an hour (virtual time, the
    policy's real figures): five errors start the storm, then one probe per pause (15 s,
    doubling to 5 minutes), and none while a probe is out; then one success ends it."""
    sends: list[float] = []

    async def main(clock: LoopClock) -> StormBreaker:
        breaker = StormBreaker(StormPolicy(), clock)
        began = clock.monotonic()
        healthy_at = began + 3600

        async def sender() -> None:
            while clock.monotonic() < healthy_at + 600:
                probe = await breaker.wait_to_send()
                sends.append(clock.monotonic() - began)
                await clock.sleep(0.2)  # the request's round trip
                ok = clock.monotonic() >= healthy_at
                breaker.record("ok" if ok else "server error", probe)
                await clock.sleep(1.0)  # the job's own backoff

        await asyncio.gather(*(sender() for _ in range(8)))
        return breaker

    breaker = run_virtual(main)
    first_minute = [t for t in sends if t < 60]
    storm_hour = [t for t in sends if 60 <= t < 3600]
    assert len(first_minute) <= STORM_AFTER + 8 + 2  # the burst, what was on the wire, 2 probes
    assert len(storm_hour) <= 14  # after 60 s, 120 s, 240 s, then every 300 s: ~13 an hour
    assert breaker.storms == 1 and not breaker.in_storm  # healthy again after the hour
    assert len([t for t in sends if t >= 3600]) > 100  # and sending at full pace
