"""The simulator behaves like the documented VoiceTrends API, over real loopback HTTP.

Every test talks to a real server (``http.client`` for exact control of methods, headers and
broken replies; aiohttp where concurrency matters). Quota tests pin the *server's* clock with the
``clock_skew`` knob, so windows start where the test wants without waiting for the wall clock.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from harvester.jobs import Job, ymd
from harvester.simulator import (
    APPLICATIONS,
    DEFAULT_TEMP_LOGIN,
    DEFAULT_TEMP_PASSWORD,
    MENU,
    SIMULATOR_KEY,
    TERMINAL,
    TRANSFER,
    Shape,
    Simulator,
    SimulatorServer,
    SimulatorSettings,
    build_app,
    run_simulator,
)

MakeSimulator = Callable[..., SimulatorServer]  # the conftest fixture's type

TODAY = dt.date(2024, 7, 1)  # a fixed "today" so that ground truth never moves under a test
DAY = dt.date(2024, 6, 3)  # a Monday well before TODAY: every default phone has traffic
PHONE = "6175550101"
KIND = {(a.url, i.page, i.form, i.item): i.kind for a in APPLICATIONS for i in a.items}
COUNTS = ("visits", "filled", "nomatch", "noinput", "transfer", "disconnect")
QUOTA_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Date")


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def call(
    server: SimulatorServer,
    path: str,
    *,
    method: str = "GET",
    auth: tuple[str, str] | bool | None = True,
    form: dict[str, str] | None = None,
    raw: bool = False,
) -> Reply:
    """One request on a fresh connection. ``path`` is below the base URL unless ``raw``."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    headers = {"Accept": "application/json"}
    if auth is True:
        headers["Authorization"] = basic(*server.credentials)
    elif isinstance(auth, tuple):
        headers["Authorization"] = basic(*auth)
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path if raw else "/api" + path, body=body, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def data_path(phone: str, start: dt.date, end: dt.date | None = None) -> str:
    return f"/path/{ymd(start)}/{ymd(end or start)}/{phone}"


def client_outcome(server: SimulatorServer, path: str) -> str:
    """What the client saw, in the server log's vocabulary."""
    try:
        reply = call(server, path)
    except http.client.RemoteDisconnected:
        return "dropped"
    except http.client.IncompleteRead:
        return "truncated"
    if reply.status != 200:
        return str(reply.status)
    return "ok" if is_valid_reply(reply.body) else "malformed"


def is_valid_reply(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    apps = payload.get("applications") if isinstance(payload, dict) else None
    if not isinstance(apps, dict):
        return False
    return all(
        isinstance(items, list)
        and all(
            isinstance(it, dict)
            and all(isinstance(it.get(k), str) for k in ("page", "form", "item"))
            and all(isinstance(it.get(k), int) and it[k] >= 0 for k in COUNTS)
            for it in items
        )
        for items in apps.values()
    )


def pin_clock(server: SimulatorServer, epoch: float) -> None:
    """Set the server's clock to ``epoch`` now (it keeps ticking in real time from there)."""
    server.settings.clock_skew = epoch - time.time()


def window_start(length: float) -> float:
    """An epoch a little after the next window boundary: a fresh window for the test."""
    return (int(time.time() // length) + 10) * length + 0.02


def check_identities(applications: dict[str, list[dict[str, Any]]]) -> int:
    """Assert every identity of the API notes; return the number of calls."""
    total = 0
    for url, items in applications.items():
        assert items, f"{url}: an application without calls must be omitted"
        entry = next(a for a in APPLICATIONS if a.url == url).items[0]
        for it in items:
            v, f, nm, ni, tr, d = (it[k] for k in COUNTS)
            assert min(v, f, nm, ni, tr, d) >= 0 and v > 0
            kind = KIND[url, it["page"], it["form"], it["item"]]
            if kind == MENU:
                assert v == f + nm + ni + d and tr == 0, it
            elif kind == TRANSFER:
                assert d == v and f == tr <= v and nm == ni == 0, it
            else:
                assert kind == TERMINAL and d == v == f and tr == nm == ni == 0, it
        calls = sum(it["disconnect"] for it in items)
        first = items[0]
        assert (first["page"], first["form"], first["item"]) == (entry.page, entry.form, entry.item)
        assert first["visits"] == calls  # the entry menu never re-prompts
        total += calls
    return total


def item_sum(replies: list[dict[str, list[dict[str, Any]]]]) -> dict[tuple[str, ...], list[int]]:
    sums: dict[tuple[str, ...], list[int]] = {}
    for applications in replies:
        for url, items in applications.items():
            for it in items:
                total = sums.setdefault((url, it["page"], it["form"], it["item"]), [0] * 6)
                for j, k in enumerate(COUNTS):
                    total[j] += it[k]
    return sums


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(n) for n in range((end - start).days + 1)]


# --- routes, auth, errors ------------------------------------------------------------------------


def test_data_reply_is_truth_with_escaped_slashes_and_headers(
    make_simulator: MakeSimulator,
) -> None:
    server = make_simulator(today=TODAY)
    reply = call(server, data_path(PHONE, DAY))
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert b"https:\\/\\/demos.plumgroup.com\\/vxml\\/" in reply.body
    assert re.search(rb"(?<!\\)/", reply.body) is None  # no slash left unescaped
    assert reply.json() == {"applications": server.truth(PHONE, DAY, DAY)}
    compact = json.dumps(reply.json(), separators=(",", ":")).replace("/", "\\/").encode()
    assert reply.body == compact  # compact, in graph order, slashes escaped
    assert reply.headers["X-RateLimit-Limit"] == "1000"
    assert reply.headers["X-RateLimit-Remaining"] == "999"
    assert int(reply.headers["X-RateLimit-Reset"]) % 60 == 0


def test_auth_issues_a_working_pair(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY, temp_login=None, temp_password=None)
    s = server.settings
    reply = call(
        server,
        "/auth",
        method="POST",
        auth=None,
        form={"tool": "insight", "login": s.account_login, "password": s.account_password},
    )
    assert reply.status == 200
    pair = reply.json()
    assert set(pair) == {"login", "password"}
    assert all(re.fullmatch("[0-9a-f]{32}", v) for v in pair.values())
    assert call(server, data_path(PHONE, DAY), auth=(pair["login"], pair["password"])).status == 200
    assert reply.headers["X-RateLimit-Limit"] == "15"  # the auth call's own limit
    assert server.simulator.quota().used == 1  # ... and it did not spend the data quota


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"tool": "dev", "login": "demo@example.com", "password": "wrong"}, 401),
        ({"tool": "dev", "login": "someone@example.com", "password": "demo-password"}, 401),
        ({"tool": "voicetrends", "login": "demo@example.com", "password": "demo-password"}, 400),
        ({"tool": "dev", "login": "demo@example.com"}, 400),
    ],
)
def test_auth_rejections(simulator: SimulatorServer, form: dict[str, str], status: int) -> None:
    reply = call(simulator, "/auth", method="POST", auth=None, form=form)
    assert reply.status == status
    assert set(reply.json()) == {"error"}


def test_auth_has_its_own_limit(make_simulator: MakeSimulator) -> None:
    server = make_simulator(auth_limit=3)
    pin_clock(server, window_start(60))
    bad = {"tool": "dev", "login": "demo@example.com", "password": "guess"}
    statuses = [call(server, "/auth", method="POST", auth=None, form=bad).status for _ in range(4)]
    assert statuses == [401, 401, 401, 429]  # failed attempts count: that is what it is for
    good = {"tool": "dev", "login": "demo@example.com", "password": "demo-password"}
    reply = call(server, "/auth", method="POST", auth=None, form=good)
    assert reply.status == 429
    assert reply.headers["X-RateLimit-Limit"] == "3"
    assert reply.headers["X-RateLimit-Remaining"] == "0"
    assert call(server, data_path(PHONE, DAY)).status == 200  # data quota untouched


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/path/20240230/20240301/ALL", "no such day"),
        ("/path/20241301/20241301/ALL", "no such day"),
        ("/path/2024060/20240603/ALL", "YYYYMMDD"),
        ("/path/2024-06-03/20240603/ALL", "YYYYMMDD"),
        ("/path/20240603/tomorrow/ALL", "YYYYMMDD"),
        ("/path/20240604/20240603/ALL", "after"),
        ("/path/20240603/20240603/617555O101", "invalid phone"),
        ("/path/20240603/20240603/all", "invalid phone"),
        ("/path/20240603/20240603/6175559999", "not found"),
    ],
)
def test_bad_parameters_are_400_and_count(
    simulator: SimulatorServer, path: str, message: str
) -> None:
    reply = call(simulator, path)
    assert reply.status == 400
    assert message in reply.json()["error"]
    assert reply.headers["X-RateLimit-Remaining"] == "999"  # authenticated, so it counted


@pytest.mark.parametrize(
    "auth",
    [None, ("0123456789abcdef0123456789abcdef", "wrong"), ("ffff", "ffff"), "Bearer abc"],
)
def test_bad_credentials_are_401_and_do_not_count(simulator: SimulatorServer, auth: Any) -> None:
    if isinstance(auth, str):
        conn = http.client.HTTPConnection(simulator.host, simulator.port, timeout=10)
        conn.request("GET", "/api" + data_path(PHONE, DAY), headers={"Authorization": auth})
        resp = conn.getresponse()
        reply = Reply(resp.status, resp.headers, resp.read())
        conn.close()
    else:
        reply = call(simulator, data_path(PHONE, DAY), auth=auth)
    assert reply.status == 401
    assert set(reply.json()) == {"error"}
    assert reply.headers["X-RateLimit-Remaining"] == "1000"
    assert simulator.log.count(status=401) == 1


def test_inactive_account_is_401_everywhere(make_simulator: MakeSimulator) -> None:
    server = make_simulator(account_active=False)
    assert call(server, data_path(PHONE, DAY)).status == 401
    form = {"tool": "dev", "login": "demo@example.com", "password": "demo-password"}
    assert call(server, "/auth", method="POST", auth=None, form=form).status == 401


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_only_post_allowed(simulator: SimulatorServer, method: str) -> None:
    reply = call(simulator, data_path(PHONE, DAY), method=method)
    assert reply.status == 405
    assert reply.json() == {"error": "invalid HTTP method supplied (only POST allowed)"}
    assert reply.headers["X-RateLimit-Remaining"] == "1000"
    assert call(simulator, "/auth", method="GET", auth=None).status == 405


def test_unknown_paths_are_json_404s(simulator: SimulatorServer) -> None:
    for path in ("/api/performance/20240603/20240603/ALL", "/api/path/20240603/ALL", "/"):
        reply = call(simulator, path, raw=True)
        assert reply.status == 404
        assert reply.json() == {"error": "not found"}
        assert all(h in reply.headers for h in QUOTA_HEADERS)


# --- quota ---------------------------------------------------------------------------------------


def test_429_when_spent_and_a_new_window_resets(make_simulator: MakeSimulator) -> None:
    server = make_simulator(limit=3, window_seconds=1)
    start = window_start(1)
    pin_clock(server, start)
    replies = [call(server, data_path(PHONE, DAY)) for _ in range(4)]
    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in replies] == ["2", "1", "0", "0"]
    assert {r.headers["X-RateLimit-Reset"] for r in replies} == {str(int(start) + 1)}
    assert replies[3].json() == {"error": "rate limit exceeded"}
    time.sleep(max(0.0, int(start) + 1 - server.simulator.server_time()) + 0.02)
    reply = call(server, data_path(PHONE, DAY))
    assert reply.status == 200
    assert reply.headers["X-RateLimit-Remaining"] == "2"
    assert reply.headers["X-RateLimit-Reset"] == str(int(start) + 2)


@pytest.mark.parametrize(("count_429", "used"), [(True, 5), (False, 2)])
def test_count_429_knob(make_simulator: MakeSimulator, count_429: bool, used: int) -> None:
    server = make_simulator(limit=2, count_429=count_429)
    pin_clock(server, window_start(60))
    statuses = [call(server, data_path(PHONE, DAY)).status for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    assert server.simulator.quota().used == used


def test_windows_follow_the_skewed_server_clock(make_simulator: MakeSimulator) -> None:
    server = make_simulator(window_seconds=900)
    epoch = 1_609_459_230.0  # 2021-01-01 00:00:30 UTC, years away from the real clock
    pin_clock(server, epoch)
    reply = call(server, data_path(PHONE, DAY))
    served_at = email.utils.parsedate_to_datetime(reply.headers["Date"]).timestamp()
    assert epoch - 1 <= served_at <= epoch + 5
    assert int(reply.headers["X-RateLimit-Reset"]) == 1_609_459_200 + 900


def test_quota_headers_and_date_on_every_reply(make_simulator: MakeSimulator) -> None:
    server = make_simulator(limit=3, window_seconds=60)
    pin_clock(server, window_start(60))
    login = {"tool": "dev", "login": "demo@example.com", "password": "demo-password"}
    replies = [
        call(server, data_path(PHONE, DAY)),  # 200
        call(server, "/path/20240230/20240230/ALL"),  # 400
        call(server, data_path(PHONE, DAY), auth=None),  # 401
        call(server, data_path(PHONE, DAY), method="POST"),  # 405
        call(server, "/nowhere", raw=True),  # 404
        call(server, "/auth", method="POST", auth=None, form=login),  # 200
        call(server, "/auth", method="POST", auth=None, form={}),  # 400
        call(server, data_path(PHONE, DAY)),  # 200 (the last of 3)
        call(server, data_path(PHONE, DAY)),  # 429
    ]
    assert [r.status for r in replies] == [200, 400, 401, 405, 404, 200, 400, 200, 429]
    server.settings.error_rate = 1.0
    server.settings.limit = 10
    replies.append(call(server, data_path(PHONE, DAY)))
    assert replies[-1].status == 500
    for reply in replies:
        assert all(h in reply.headers for h in QUOTA_HEADERS), reply
        assert int(reply.headers["X-RateLimit-Reset"]) % 60 == 0
        assert email.utils.parsedate_to_datetime(reply.headers["Date"]) is not None
        assert "error" in reply.json() or reply.status == 200


@pytest.mark.parametrize(
    "simulator", [{"other_client_spend": 7, "other_client_at": 0.0}], indirect=True
)
def test_another_tool_spends_the_same_quota_at_a_fixed_moment(simulator: SimulatorServer) -> None:
    reply = call(simulator, data_path(PHONE, DAY))
    assert reply.headers["X-RateLimit-Remaining"] == str(1000 - 7 - 1)


def test_another_tool_spends_at_seeded_random_moments(make_simulator: MakeSimulator) -> None:
    server = make_simulator(limit=100, window_seconds=60, other_client_spend=20, seed=4)
    start = 1_700_000_040.0  # a fixed window, so the seeded moments are always the same
    pin_clock(server, start)
    early = int(call(server, data_path(PHONE, DAY)).headers["X-RateLimit-Remaining"])
    pin_clock(server, start + 30)
    middle = int(call(server, data_path(PHONE, DAY)).headers["X-RateLimit-Remaining"])
    pin_clock(server, start + 59.95)
    late = int(call(server, data_path(PHONE, DAY)).headers["X-RateLimit-Remaining"])
    assert early >= 100 - 1 - 2  # hardly anything spent a few ms into the window
    assert late < middle < early  # spread over the window ...
    assert late == 100 - 3 - 20  # ... and all of it spent by the end


def test_the_quota_is_shared_by_all_credentials_of_the_account(
    make_simulator: MakeSimulator,
) -> None:
    server = make_simulator(limit=3)
    pin_clock(server, window_start(60))
    login = {"tool": "fuseplus", "login": "demo@example.com", "password": "demo-password"}
    pair = call(server, "/auth", method="POST", auth=None, form=login).json()
    other = (pair["login"], pair["password"])
    statuses = [call(server, data_path(PHONE, DAY), auth=a).status for a in (True, other, True)]
    assert statuses == [200, 200, 200]
    assert call(server, data_path(PHONE, DAY), auth=other).status == 429


# --- data ----------------------------------------------------------------------------------------


def test_identities_hold_on_every_phone_and_day() -> None:
    sim = Simulator(SimulatorSettings(today=TODAY))
    daily_calls = []
    for phone in sim.settings.phones:
        for day in days(dt.date(2024, 1, 1), dt.date(2024, 6, 30)):
            calls = check_identities(sim.truth(phone, day, day))
            assert calls == sim.calls(phone, day, day)
            if day.weekday() < 5 and calls:
                daily_calls.append(calls)
    daily_calls.sort()
    assert 20 <= daily_calls[len(daily_calls) // 2] <= 400  # tens to a few hundred a day
    for phone in (*sim.settings.phones, "ALL"):
        check_identities(sim.truth(phone, dt.date(2024, 1, 1), dt.date(2024, 6, 30)))


def test_a_range_is_the_sum_of_its_days_and_all_the_sum_of_phones(
    make_simulator: MakeSimulator,
) -> None:
    server = make_simulator(today=TODAY)
    start, end = dt.date(2024, 5, 27), dt.date(2024, 6, 9)
    for phone in (PHONE, "ALL"):
        reply = call(server, data_path(phone, start, end)).json()["applications"]
        assert reply == server.truth(phone, start, end)
        per_day = [server.truth(phone, d, d) for d in days(start, end)]
        assert item_sum([reply]) == item_sum(per_day)
    everything = server.truth("ALL", start, end)
    by_phone = [server.truth(p, start, end) for p in server.settings.phones]
    assert item_sum([everything]) == item_sum(by_phone)
    assert call(server, data_path("ALL", DAY)).json()["applications"] == server.truth(
        "ALL", DAY, DAY
    )


def test_days_without_traffic(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY)
    christmas = dt.date(2023, 12, 25)  # every line is closed
    assert call(server, data_path("ALL", christmas)).json() == {"applications": {}}
    for day in (TODAY, TODAY + dt.timedelta(days=30)):  # no data for today or the future
        assert call(server, data_path("ALL", day)).json() == {"applications": {}}
    june = days(dt.date(2024, 6, 1), dt.date(2024, 6, 30))
    quiet = [(p, d) for d in june for p in server.settings.phones if not server.truth(p, d, d)]
    assert quiet, "some phone has no traffic on some day"
    phone, day = quiet[0]
    assert server.truth("ALL", day, day)
    assert call(server, data_path(phone, day)).json() == {"applications": {}}


def test_an_application_without_calls_is_omitted() -> None:
    sim = Simulator(SimulatorSettings(today=TODAY))
    found = False
    for phone in sim.settings.phones:
        apps_by_day = [set(sim.truth(phone, d, d)) for d in days(dt.date(2023, 1, 1), TODAY)]
        used = set().union(*apps_by_day)
        found |= any(apps and apps < used for apps in apps_by_day)
    assert found


def test_late_data_settles_over_settle_days(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY, settle_days=3)
    final = Simulator(SimulatorSettings(today=TODAY + dt.timedelta(days=30)))
    for age in (1, 2, 3, 4):
        day = TODAY - dt.timedelta(days=age)
        partial = server.truth("ALL", day, day)
        assert call(server, data_path("ALL", day)).json()["applications"] == partial
        check_identities(partial)
        settled = final.truth("ALL", day, day)
        if age >= 3:
            assert partial == settled
            continue
        expected = sum(final.calls(p, day, day) * age // 3 for p in server.settings.phones)
        assert server.simulator.calls("ALL", day, day) == expected
        final_items = item_sum([settled])
        for key, counts in item_sum([partial]).items():  # a subset of the final day, item-wise
            assert all(a <= b for a, b in zip(counts, final_items[key], strict=True))
    yesterday = TODAY - dt.timedelta(days=1)
    server.settings.today = TODAY + dt.timedelta(days=2)  # two days later it has settled
    reply = call(server, data_path("ALL", yesterday)).json()["applications"]
    assert reply == final.truth("ALL", yesterday, yesterday)


def test_data_is_deterministic_per_seed(make_simulator: MakeSimulator) -> None:
    a, b = make_simulator(today=TODAY, seed=11), make_simulator(today=TODAY, seed=11)
    c = make_simulator(today=TODAY, seed=12)
    path = data_path("ALL", dt.date(2024, 3, 4), dt.date(2024, 3, 10))
    assert call(a, path).body == call(b, path).body != call(c, path).body
    script = (
        "import datetime as dt, json; from harvester.simulator import Simulator, "
        "SimulatorSettings as S; print(json.dumps(Simulator(S(seed=11)).truth("
        "'ALL', dt.date(2024, 3, 4), dt.date(2024, 3, 10))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    assert json.loads(out) == a.truth("ALL", dt.date(2024, 3, 4), dt.date(2024, 3, 10))


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "outcome", "status"),
    [
        ("error_rate", "500", 500),
        ("drop_rate", "dropped", None),
        ("malformed_rate", "malformed", 200),
        ("truncate_rate", "truncated", 200),
    ],
)
def test_each_fault_knob(
    make_simulator: MakeSimulator, knob: str, outcome: str, status: Any
) -> None:
    server = make_simulator(today=TODAY, **{knob: 1.0})
    pin_clock(server, window_start(60))
    seen = [client_outcome(server, data_path(PHONE, DAY + dt.timedelta(n))) for n in range(12)]
    assert seen == [outcome] * 12
    entries = server.log.entries()
    assert [e.outcome for e in entries] == [outcome] * 12
    assert {e.status for e in entries} == {status}
    assert [e.remaining for e in entries] == list(range(999, 987, -1))  # faults count
    assert not server.log.successes_by_path()


def test_truncated_reply_promises_more_than_it_sends(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY, truncate_rate=1.0)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request(
        "GET", "/api" + data_path(PHONE, DAY), headers={"Authorization": basic(*server.credentials)}
    )
    resp = conn.getresponse()
    assert resp.status == 200 and all(h in resp.headers for h in QUOTA_HEADERS)
    with pytest.raises(http.client.IncompleteRead) as caught:
        resp.read()
    conn.close()
    assert 0 < len(caught.value.partial) < int(resp.headers["Content-Length"])


def test_faults_are_deterministic_per_seed(make_simulator: MakeSimulator) -> None:
    rates = {"error_rate": 0.2, "drop_rate": 0.2, "malformed_rate": 0.2, "truncate_rate": 0.2}
    runs = []
    for _ in range(2):
        server = make_simulator(today=TODAY, seed=5, **rates)
        runs.append([client_outcome(server, data_path(PHONE, DAY)) for _ in range(40)])
        assert [e.outcome for e in server.log.entries()] == runs[-1]
    assert runs[0] == runs[1]
    assert set(runs[0]) == {"ok", "500", "dropped", "malformed", "truncated"}


def test_latency_and_jitter(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY, latency=0.2, jitter=0.1)
    started = time.monotonic()
    assert call(server, data_path(PHONE, DAY)).status == 200
    assert 0.2 <= time.monotonic() - started < 1.0


# --- credentials ---------------------------------------------------------------------------------


def test_credentials_expire_after_their_last_use(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY, credential_ttl=0.5)
    for _ in range(3):  # used every 0.25 s: alive well past 0.5 s since it was issued
        assert call(server, data_path(PHONE, DAY)).status == 200
        time.sleep(0.25)
    time.sleep(0.5)
    reply = call(server, data_path(PHONE, DAY))
    assert (reply.status, reply.json()) == (401, {"error": "temporary credentials expired"})
    assert call(server, data_path(PHONE, DAY)).status == 401  # and it stays dead
    login = {"tool": "dev", "login": "demo@example.com", "password": "demo-password"}
    pair = call(server, "/auth", method="POST", auth=None, form=login).json()
    assert call(server, data_path(PHONE, DAY), auth=(pair["login"], pair["password"])).status == 200


def test_expire_credentials_revokes_every_pair(simulator: SimulatorServer) -> None:
    assert call(simulator, data_path(PHONE, DAY)).status == 200
    simulator.simulator.expire_credentials()
    assert call(simulator, data_path(PHONE, DAY)).status == 401


# --- serving -------------------------------------------------------------------------------------


def test_stop_and_start_again_on_the_same_port(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY)
    pin_clock(server, window_start(60))  # both requests in one window
    port = server.port
    assert call(server, data_path(PHONE, DAY)).status == 200
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        call(server, data_path(PHONE, DAY))
    server.start()
    assert server.port == port and server.base_url == f"http://127.0.0.1:{port}/api"
    reply = call(server, data_path(PHONE, DAY))
    assert reply.status == 200
    assert reply.headers["X-RateLimit-Remaining"] == "998"  # state survived the restart
    assert len(server.log) == 2


def test_stop_cuts_off_requests_in_flight(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY, latency=3.0)
    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(client_outcome(server, data_path(PHONE, DAY)))
    )
    worker.start()
    while not server.simulator.quota().used:  # the request has arrived and is being delayed
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    worker.join()
    assert time.monotonic() - started < 2.0
    assert outcome == ["dropped"]


def test_request_log(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY)
    job = Job(PHONE, DAY, DAY, DAY)
    call(server, job.path)
    call(server, job.path)
    call(server, "/path/20240230/20240230/ALL")
    call(server, job.path, auth=None)
    assert server.log.successes_by_path() == Counter({job.path: 2})
    assert server.log.count(status=200) == 2
    assert server.log.count(outcome="400") == 1
    assert server.log.count(status=401, path=job.path) == 1
    first = server.log.entries()[0]
    assert (first.method, first.phone, first.start, first.end) == ("GET", PHONE, ymd(DAY), ymd(DAY))
    assert first.remaining == 999 and first.t <= time.monotonic()


def test_build_app_serves_in_process() -> None:
    async def main() -> None:
        app = build_app(SimulatorSettings(today=TODAY))
        async with TestServer(app) as ts, aiohttp.ClientSession() as session:
            settings = app[SIMULATOR_KEY].settings
            headers = {"Authorization": basic(DEFAULT_TEMP_LOGIN, DEFAULT_TEMP_PASSWORD)}
            assert (settings.temp_login, settings.temp_password) == (
                DEFAULT_TEMP_LOGIN,
                DEFAULT_TEMP_PASSWORD,
            )
            async with session.get(
                ts.make_url("/api" + data_path(PHONE, DAY)), headers=headers
            ) as r:
                assert r.status == 200
                body = await r.json()
        assert body["applications"] == app[SIMULATOR_KEY].truth(PHONE, DAY, DAY)
        assert len(app[SIMULATOR_KEY].log) == 1

    asyncio.run(main())


def test_run_simulator_prints_where_it_serves(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        task = asyncio.create_task(run_simulator(SimulatorSettings(today=TODAY), port=0))
        out = ""
        while "http://" not in out:
            await asyncio.sleep(0.01)
            out += capsys.readouterr().out
        url = re.search(r"http://\S+", out)
        assert url and url.group().endswith("/api")
        assert DEFAULT_TEMP_LOGIN in out and DEFAULT_TEMP_PASSWORD in out
        headers = {"Authorization": basic(DEFAULT_TEMP_LOGIN, DEFAULT_TEMP_PASSWORD)}
        async with (
            aiohttp.ClientSession() as session,
            session.get(url.group() + data_path(PHONE, DAY), headers=headers) as r,
        ):
            assert r.status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


# --- activity shapes and range arithmetic (request economy) --------------------------------------

QUARTER = (dt.date(2024, 4, 1), dt.date(2024, 6, 30))
P1, P2, P3 = "6175550101", "6175550103", "6175550108"


def test_shapes_close_days_and_ranges_stay_sums(make_simulator: MakeSimulator) -> None:
    start = dt.date(2024, 5, 15)
    shapes = {P1: Shape.weekdays(), P2: Shape.never(), P3: Shape.starting(start)}
    server = make_simulator(today=TODAY, shapes=shapes)
    plain = Simulator(SimulatorSettings(today=TODAY))
    first, last = QUARTER
    assert call(server, data_path(P2, first, last)).json() == {"applications": {}}
    assert call(server, data_path(P3, first, start - dt.timedelta(1))).json() == {
        "applications": {}
    }
    for d in days(first, last):
        for phone in (P1, P2, P3):
            open_ = shapes[phone].is_open(0, phone, d)
            assert server.truth_rows(phone, d, d) == (
                plain.truth_rows(phone, d, d) if open_ else set()
            )
        assert not server.truth_rows(P1, d, d) or d.weekday() < 5
    assert any(server.truth_rows(P3, d, d) for d in days(start, last))
    for phone in (P1, P3, "ALL"):  # a range is the item-wise sum of its days, ALL of its phones
        reply = call(server, data_path(phone, first, last)).json()["applications"]
        assert reply == server.truth(phone, first, last)
        assert item_sum([reply]) == item_sum([server.truth(phone, d, d) for d in days(first, last)])
    by_phone = [server.truth(p, first, last) for p in server.settings.phones]
    assert item_sum([server.truth("ALL", first, last)]) == item_sum(by_phone)


def test_sparse_and_busy_shapes() -> None:
    shapes = {P1: Shape.sparse(0.2), P2: Shape.busy()}
    sim = Simulator(SimulatorSettings(today=TODAY, shapes=shapes))
    again = Simulator(SimulatorSettings(today=TODAY, shapes=shapes))
    year = list(days(dt.date(2023, 7, 1), dt.date(2024, 6, 30)))
    sparse = [d for d in year if sim.truth_rows(P1, d, d)]
    assert 0.12 * len(year) < len(sparse) < 0.28 * len(year)  # ~20%, seeded
    assert sparse == [d for d in year if again.truth_rows(P1, d, d)]  # the same days every time
    for d in year:  # busy: calls every day, Christmas and Sundays included, identities intact
        assert check_identities(sim.truth(P2, d, d)) > 0


def test_shapes_compose_with_late_data(make_simulator: MakeSimulator) -> None:
    yesterday = TODAY - dt.timedelta(days=1)  # a Sunday: TODAY is Monday 2024-07-01
    friday = TODAY - dt.timedelta(days=3)
    shapes = {P1: Shape.weekdays(), P3: Shape.starting(friday)}
    server = make_simulator(today=TODAY, settle_days=5, shapes=shapes)
    late = Simulator(SimulatorSettings(today=TODAY, settle_days=5))
    final = Simulator(SimulatorSettings(today=TODAY + dt.timedelta(days=30), shapes=shapes))
    assert server.truth_rows(P1, yesterday, yesterday) == set()  # closed stays closed
    for phone in (P1, P3):
        assert call(server, data_path(phone, friday)).json()["applications"] == server.truth(
            phone, friday, friday
        )
        assert server.truth_rows(phone, friday, friday) == late.truth_rows(phone, friday, friday)
        assert server.simulator.calls(phone, friday, friday) < final.calls(phone, friday, friday)
    assert server.truth_rows(P3, friday - dt.timedelta(1), friday - dt.timedelta(1)) == set()


def test_non_additive_ranges_are_off_on_one_item(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY, non_additive=1.0, shapes={P2: Shape.never()})
    first, last = dt.date(2024, 6, 3), dt.date(2024, 6, 9)
    reply = call(server, data_path(P1, first, last)).json()["applications"]
    assert reply == server.truth(P1, first, last)  # ground truth is what the server says
    summed = item_sum([server.truth(P1, d, d) for d in days(first, last)])
    got = item_sum([reply])
    off = {
        k: [a - b for a, b in zip(got[k], summed[k], strict=True)]
        for k in got
        if got[k] != summed[k]
    }
    assert len(off) == 1 and got.keys() == summed.keys()
    (delta,) = off.values()
    assert delta[0] == delta[5] != 0 and abs(delta[0]) <= 3 and delta[1:5] == [0, 0, 0, 0]
    plain = Simulator(SimulatorSettings(today=TODAY))
    for d in days(first, last):  # single days are exact
        assert call(server, data_path(P1, d)).json()["applications"] == plain.truth(P1, d, d)
    assert call(server, data_path(P2, first, last)).json() == {"applications": {}}
    server.settings.non_additive = 0.0  # live, like every knob: the cached body is not reused
    assert call(server, data_path(P1, first, last)).json()["applications"] != reply


def test_long_ranges_refused_with_max_range_days(make_simulator: MakeSimulator) -> None:
    server = make_simulator(today=TODAY, max_range_days=31)
    first = dt.date(2024, 5, 1)
    assert call(server, data_path(P1, first, dt.date(2024, 5, 31))).status == 200
    reply = call(server, data_path(P1, first, dt.date(2024, 6, 1)))
    assert reply.status == 400 and reply.json() == {"error": "date range too long"}


def test_economy_knobs_are_validated() -> None:
    with pytest.raises(ValueError, match="not a phone"):
        SimulatorSettings(shapes={"999": Shape.never()})
    with pytest.raises(ValueError, match="share"):
        SimulatorSettings(shapes={P1: Shape.sparse(1.5)})
    with pytest.raises(ValueError, match="non_additive"):
        SimulatorSettings(non_additive=2.0)
    with pytest.raises(ValueError, match="max_range_days"):
        SimulatorSettings(max_range_days=0)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        SimulatorSettings(error_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError):
        SimulatorSettings(phones=("ALL",))
    with pytest.raises(ValueError):
        SimulatorSettings(window_seconds=0)


def test_throughput_smoke(make_simulator: MakeSimulator) -> None:
    """2,000 distinct single-day replies over loopback: a smoke test with a generous bound."""
    server = make_simulator(today=TODAY, limit=10_000)
    paths = [
        data_path(phone, dt.date(2022, 1, 1) + dt.timedelta(n))
        for n in range(500)
        for phone in (*server.settings.phones, "ALL")
    ]

    async def fetch_all() -> float:
        headers = {"Authorization": basic(*server.credentials)}
        gate = asyncio.Semaphore(8)
        async with aiohttp.ClientSession(headers=headers) as session:

            async def one(path: str) -> None:
                async with gate, session.get(server.base_url + path) as r:
                    assert r.status == 200
                    await r.read()

            started = time.perf_counter()
            await asyncio.gather(*(one(p) for p in paths))
            return time.perf_counter() - started

    elapsed = asyncio.run(fetch_all())
    assert len(paths) == 2000
    assert server.log.count(outcome="ok") == 2000
    assert elapsed < 15.0, f"2,000 replies took {elapsed:.1f} s"
