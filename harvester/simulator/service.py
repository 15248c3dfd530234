"""The service: one account's state (quota, credentials, log) and how it answers each request.

Why it exists: this is the simulated VoiceTrends API itself, independent of any socket, so the
same :class:`Simulator` can be served from a thread, mounted in-process (:func:`build_app`) or
asked for ground truth directly. Routes, as documented (``shared/spec/voicetrends-api.md``):

- ``GET {base}/path/{start}/{end}/{phone}`` with basic auth (temporary credentials) and
  ``POST {base}/auth`` (account login -> temporary pair, its own limit of 15 per window);
- 400 / 401 / 405 ("only POST allowed", copied from the real document) / 429 / 500, each with a
  ``{"error": ...}`` body; any other path is a 404.

A counted data request's fate (drop, 500, malformed, truncated or ok) and its jitter come from an
RNG seeded by ``(seed, n)`` for the n-th such request, so the same requests meet the same faults.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from harvester.simulator.flows import APPLICATIONS
from harvester.simulator.log import LogEntry, RequestLog
from harvester.simulator.nonadditive import perturbed
from harvester.simulator.quota import AccountQuota, QuotaState
from harvester.simulator.sampling import seeded_rng
from harvester.simulator.settings import TOOLS, SimulatorSettings
from harvester.simulator.shapes import shaped_day_counts, shapes_key
from harvester.simulator.traffic import (
    COUNT_FIELDS,
    Counts,
    DayCounts,
    Key,
    TruthRow,
    add_counts,
)
from harvester.simulator.wire import (
    METHOD_NOT_ALLOWED,
    BadRequest,
    basic_auth,
    encode_json,
    malformed_body,
    parse_day,
    render_body,
    reply_headers,
    send_truncated,
)

_BODY_CACHE_SIZE = 4_096  # encoded reply bodies kept per simulator

_Parts = tuple[str | None, str | None, str | None]  # a data request's (start, end, phone)


@dataclass(frozen=True, slots=True)
class _Exchange:
    """A request being answered: what its log entry needs besides the outcome."""

    request: web.Request
    path: str  # below the base path
    t: float  # monotonic, at arrival
    now: float  # server clock, at arrival
    parts: _Parts


class Simulator:
    """The service's state (quota, credentials, log) and behaviour, independent of any socket."""

    def __init__(self, settings: SimulatorSettings | None = None) -> None:
        self.settings = settings if settings is not None else SimulatorSettings()
        self.log = RequestLog()
        self._quota = AccountQuota()
        self._requests = 0  # counted data requests: the fault RNG's sequence number
        self._issued = 0
        self._credentials: dict[str, tuple[str, float]] = {}  # login -> (password, last use)
        self._bodies: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()  # credentials are also touched by test threads
        s = self.settings
        if s.temp_login is not None and s.temp_password is not None:
            self._credentials[s.temp_login] = (s.temp_password, time.monotonic())

    # clocks -------------------------------------------------------------------------------------

    def server_time(self) -> float:
        """The server's clock: real epoch seconds plus ``clock_skew``."""
        return time.time() + self.settings.clock_skew

    def today(self) -> dt.date:
        """The server's today: ``settings.today``, or else the server clock's UTC date."""
        if self.settings.today is not None:
            return self.settings.today
        return dt.datetime.fromtimestamp(self.server_time(), dt.UTC).date()

    # ground truth ---------------------------------------------------------------------------------

    def truth(self, phone: str, start: dt.date, end: dt.date) -> dict[str, list[dict[str, Any]]]:
        """``applications`` exactly as a 200 reply for this request carries it right now."""
        return self._applications(self._phones_of(phone), start, end)

    def truth_rows(self, phone: str, start: dt.date, end: dt.date) -> set[TruthRow]:
        """``(application, page, form, item, visits, filled, nomatch, noinput, transfer,
        disconnect)`` for every item of :meth:`truth`."""
        rows: set[TruthRow] = set()
        sums = self._sums(self._phones_of(phone), start, end)
        for (app_index, item_index), counts in sums.items():
            app = APPLICATIONS[app_index]
            it = app.items[item_index]
            rows.add((app.url, it.page, it.form, it.item, *counts))
        return rows

    def daily_rows(self, phone: str, day: dt.date) -> set[TruthRow]:
        return self.truth_rows(phone, day, day)

    def calls(self, phone: str, start: dt.date, end: dt.date) -> int:
        """Calls in the window as the API would report them: ``sum(disconnect)``."""
        return sum(r[9] for r in self.truth_rows(phone, start, end))

    def _phones_of(self, phone: str) -> tuple[str, ...]:
        if phone == "ALL":
            return self.settings.phones
        if phone in self.settings.phones:
            return (phone,)
        raise ValueError(f"{phone!r} is not a phone of this account")

    def _day_view(self, phone: str, day: dt.date, today: dt.date) -> DayCounts:
        age = (today - day).days
        if age <= 0:
            return ()
        settle = self.settings.settle_days
        settled, parts = (age, settle) if age < settle else (1, 1)
        return shaped_day_counts(
            self.settings.shapes, self.settings.seed, phone, day, settled, parts
        )

    def _sums(self, phones: Sequence[str], start: dt.date, end: dt.date) -> dict[Key, Counts]:
        """Item-wise sums over the days and phones of a request, as the server sees them now."""
        today = self.today()
        sums: dict[Key, Counts] = {}
        for ordinal in range(start.toordinal(), end.toordinal() + 1):
            day = dt.date.fromordinal(ordinal)
            for phone in phones:
                for app_index, items in self._day_view(phone, day, today):
                    for item_index, counts in items:
                        key = (app_index, item_index)
                        before = sums.get(key)
                        sums[key] = counts if before is None else add_counts(before, counts)
        return self._range_reply(sums, tuple(phones), start, end)

    def _range_reply(
        self, sums: dict[Key, Counts], phones: tuple[str, ...], start: dt.date, end: dt.date
    ) -> dict[Key, Counts]:
        """What the server reports for the sums of a range: off from them if not additive."""
        s = self.settings
        return perturbed(sums, s.seed, phones, start, end, s.non_additive)

    def _applications(
        self, phones: Sequence[str], start: dt.date, end: dt.date
    ) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for (app_index, item_index), counts in sorted(self._sums(phones, start, end).items()):
            app = APPLICATIONS[app_index]
            it = app.items[item_index]
            row: dict[str, Any] = {"page": it.page, "form": it.form, "item": it.item}
            row.update(zip(COUNT_FIELDS, counts, strict=True))
            out.setdefault(app.url, []).append(row)
        return out

    def _body(self, phones: tuple[str, ...], start: dt.date, end: dt.date) -> bytes:
        """The encoded 200 body, from a bounded LRU: harvests and retries ask for the same again."""
        s = self.settings
        key = (s.seed, phones, start, end, self.today(), s.settle_days, *self._economy_key())
        body = self._bodies.get(key)
        if body is None:
            body = render_body(self._sums(phones, start, end))
            self._bodies[key] = body
            if len(self._bodies) > _BODY_CACHE_SIZE:
                self._bodies.popitem(last=False)
        else:
            self._bodies.move_to_end(key)
        return body

    def _economy_key(self) -> tuple[object, ...]:
        """The knobs of shapes.py and nonadditive.py a cached reply body depends on."""
        s = self.settings
        return (shapes_key(s.shapes), s.non_additive)

    # quota ----------------------------------------------------------------------------------------

    def quota(self) -> QuotaState:
        """The data quota right now, without spending any of it."""
        return self._data_quota(self.server_time(), spend=False)[0]

    def _data_quota(self, now: float, *, spend: bool) -> tuple[QuotaState, bool]:
        """Count a data request at ``now`` if ``spend``; return the state and whether it may go."""
        return self._quota.data(self.settings, now, spend=spend)

    def _auth_quota(self, now: float, *, spend: bool) -> tuple[QuotaState, bool]:
        """Like :meth:`_data_quota` for ``POST /auth``: its own counter, limit and no other tool."""
        return self._quota.auth(self.settings, now, spend=spend)

    # credentials ----------------------------------------------------------------------------------

    def issue_credentials(self) -> tuple[str, str]:
        """A new temporary pair, as ``POST /auth`` hands out (deterministic given the seed)."""
        with self._lock:
            self._issued += 1
            rng = seeded_rng(self.settings.seed, "auth", self._issued)
            pair = (f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}")
            self._credentials[pair[0]] = (pair[1], time.monotonic())
        return pair

    def expire_credentials(self) -> None:
        """Forget every temporary pair, as if all had passed their time to live."""
        with self._lock:
            self._credentials.clear()

    def _check_credentials(self, request: web.Request) -> str | None:
        """None if the request's basic auth is a live temporary pair, else why it is not."""
        if not self.settings.account_active:
            return "authentication parameters invalid or the account is inactive"
        pair = basic_auth(request.headers.get("Authorization", ""))
        if pair is None:
            return "authentication parameters invalid or the account is inactive"
        with self._lock:
            known = self._credentials.get(pair[0])
            if known is None or known[0] != pair[1]:
                return "authentication parameters invalid or the account is inactive"
            now = time.monotonic()
            if now - known[1] > self.settings.credential_ttl:
                del self._credentials[pair[0]]
                return "temporary credentials expired"
            self._credentials[pair[0]] = (known[0], now)
        return None

    # HTTP -----------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app[SIMULATOR_KEY] = self
        base = self.settings.base_path.rstrip("/")
        app.router.add_route("*", base + "/path/{start}/{end}/{phone}", self._handle_data)
        app.router.add_route("*", base + "/auth", self._handle_auth)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        return app

    def _begin(self, request: web.Request, parts: _Parts = (None, None, None)) -> _Exchange:
        base = self.settings.base_path.rstrip("/")
        path = request.path[len(base) :] if request.path.startswith(base + "/") else request.path
        return _Exchange(request, path, time.monotonic(), self.server_time(), parts)

    def _answer(
        self, ex: _Exchange, quota: QuotaState, status: int | None, outcome: str, body: bytes = b""
    ) -> web.Response:
        """Log the exchange and build its reply (``status`` None: the reply is never sent)."""
        start, end, phone = ex.parts
        self.log.append(
            LogEntry(ex.t, ex.now, ex.request.method, ex.path, phone, start, end, status, outcome,
                     quota.remaining)
        )  # fmt: skip
        headers = reply_headers(quota, ex.now)
        if not self.settings.quota_headers:
            headers = {k: v for k, v in headers.items() if not k.startswith("X-RateLimit-")}
        elif self.settings.reset_ahead:
            headers["X-RateLimit-Reset"] = str(quota.reset + self.settings.reset_ahead)
        if status == 405:
            headers["Allow"] = "GET" if ex.parts[0] is not None else "POST"
        return web.Response(status=status or 200, body=body, headers=headers)

    def _error(self, ex: _Exchange, quota: QuotaState, status: int, message: str) -> web.Response:
        return self._answer(ex, quota, status, str(status), encode_json({"error": message}))

    async def _delay(self, rng: random.Random | None = None) -> None:
        s = self.settings
        seconds = s.latency + (rng.uniform(0.0, s.jitter) if rng and s.jitter else 0.0)
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        ex = self._begin(request)
        return self._error(ex, self._data_quota(ex.now, spend=False)[0], 404, "not found")

    async def _handle_data(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        ex = self._begin(request, (m["start"], m["end"], m["phone"]))
        if request.method != "GET":
            await self._delay()
            return self._error(ex, self.quota(), 405, METHOD_NOT_ALLOWED)
        problem = self._check_credentials(request)
        if problem is not None:
            await self._delay()
            return self._error(ex, self.quota(), 401, problem)
        quota, allowed = self._data_quota(ex.now, spend=True)
        if not allowed:
            await self._delay()
            return self._error(ex, quota, 429, "rate limit exceeded")
        self._requests += 1
        rng = seeded_rng(self.settings.seed, "request", self._requests)
        try:
            phones, start, end = self._parse(m["start"], m["end"], m["phone"])
        except BadRequest as exc:
            await self._delay(rng)
            return self._error(ex, quota, 400, str(exc))
        body = self._body(phones, start, end)
        await self._delay(rng)
        s = self.settings
        fate = rng.random()  # drop, 500, malformed, truncated, ok: consecutive slices of [0, 1)
        if fate < s.drop_rate:
            if request.transport is not None:
                request.transport.abort()  # no status line, no headers: the connection just ends
            return self._answer(ex, quota, None, "dropped")
        if (fate := fate - s.drop_rate) < s.error_rate:
            return self._error(ex, quota, 500, "unknown error")
        if (fate := fate - s.error_rate) < s.malformed_rate:
            return self._answer(ex, quota, 200, "malformed", malformed_body(rng, body))
        if fate - s.malformed_rate < s.truncate_rate:
            self._answer(ex, quota, 200, "truncated")
            return await send_truncated(request, body, reply_headers(quota, ex.now))
        return self._answer(ex, quota, 200, "ok", body)

    def _parse(self, start: str, end: str, phone: str) -> tuple[tuple[str, ...], dt.date, dt.date]:
        first, last = parse_day(start, "start"), parse_day(end, "end")
        if first > last:
            raise BadRequest("start date is after end date")
        self._check_range_length(first, last)
        if phone != "ALL" and not phone.isdigit():
            raise BadRequest("invalid phone number")
        try:
            return self._phones_of(phone), first, last
        except ValueError:
            raise BadRequest("phone number not found on this account") from None

    def _check_range_length(self, first: dt.date, last: dt.date) -> None:
        """A server that refuses long ranges (``max_range_days``): a 400, as the spec allows."""
        longest = self.settings.max_range_days
        if longest is not None and (last - first).days + 1 > longest:
            raise BadRequest("date range too long")

    async def _handle_auth(self, request: web.Request) -> web.StreamResponse:
        ex = self._begin(request)
        if request.method != "POST":
            await self._delay()
            return self._error(
                ex, self._auth_quota(ex.now, spend=False)[0], 405, METHOD_NOT_ALLOWED
            )
        quota, allowed = self._auth_quota(ex.now, spend=True)
        await self._delay()
        if not allowed:
            return self._error(ex, quota, 429, "rate limit exceeded")
        form = await request.post()
        tool, login, password = (form.get(k) for k in ("tool", "login", "password"))
        if not all(isinstance(v, str) and v for v in (tool, login, password)):
            return self._error(ex, quota, 400, "tool, login and password are required")
        if tool not in TOOLS:
            return self._error(ex, quota, 400, "invalid tool")
        s = self.settings
        if not s.account_active or (login, password) != (s.account_login, s.account_password):
            message = "authentication parameters invalid or the account is inactive"
            return self._error(ex, quota, 401, message)
        temp_login, temp_password = self.issue_credentials()
        return self._answer(
            ex, quota, 200, "ok", encode_json({"login": temp_login, "password": temp_password})
        )


SIMULATOR_KEY = web.AppKey("simulator", Simulator)  # build_app's app[SIMULATOR_KEY]


def build_app(settings: SimulatorSettings | None = None) -> web.Application:
    """The simulator as an aiohttp application; ``app[SIMULATOR_KEY]`` is its :class:`Simulator`."""
    return Simulator(settings).build_app()
