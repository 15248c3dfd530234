"""Temporary credentials: a fixed pair from the config, or one obtained (and renewed) for the
account.

VoiceTrends data calls take HTTP basic auth with *temporary* credentials from ``POST {base}/auth``.
They expire 24 hours after their last use, and Plum advises re-authenticating every 24 hours.

- A fixed pair (``[api] login``) is used as it is; a 401 is final (the caller stops, exit 3).
- With the account's login (``[api] account_login``) the pair is obtained at the first request,
  renewed ahead of time every :data:`RENEW_AFTER_SECONDS`, and renewed after a 401.

Renewal is single-flight: when several requests fail with 401 at once, the first renews and the
others reuse its pair (they pass the pair they used as ``stale``; a newer one means someone else
already renewed). While a renewal is under way :meth:`CredentialSource.current` waits for it rather
than hand out a pair about to be replaced. The auth call has its own limit (15 per 15 minutes), so
calls are counted locally and a 429 from it waits for the reset it names. A pair fresh from
``/auth`` that the API rejects before accepting any request is not renewed again: the account is
inactive or lacks access, and looping on the auth call would not change that.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import mktime_tz, parsedate_tz
from functools import cached_property

import aiohttp

from harvester.clock import Clock
from harvester.config import ApiConfig, Secret
from harvester.errors import CredentialsError
from harvester.logs import register_secrets

log = logging.getLogger("harvester")

# Plum: "re-authenticate every 24 hours"; renew an hour early so a long run never hits expiry.
RENEW_AFTER_SECONDS = 23 * 3600
# A failed renewal ahead of time is not fatal (the pair still works for an hour): try again later.
RENEW_RETRY_SECONDS = 300.0
# The auth endpoint's own limit (API notes): 15 calls per 15 minutes.
AUTH_LIMIT = 15
AUTH_WINDOW_SECONDS = 900.0
# Tries of one renewal when the auth call answers 429 or 5xx or cannot be reached.
AUTH_MAX_ATTEMPTS = 3
# Backoff between auth tries after a 5xx or a transport error (doubled each time).
AUTH_BACKOFF_SECONDS = 1.0
# Sent this long after the reset a 429 from /auth names: the Date header has 1 s resolution.
AUTH_RESET_MARGIN_SECONDS = 1.0


@dataclass(frozen=True, eq=False)
class Credentials:
    """One basic-auth pair; ``generation`` tells callers whether someone renewed it meanwhile."""

    login: str
    password: Secret
    generation: int

    @cached_property
    def authorization(self) -> Secret:
        """The ``Authorization`` header value, computed once per credential pair."""
        token = base64.b64encode(f"{self.login}:{self.password.reveal()}".encode()).decode()
        return Secret(f"Basic {token}")


class _AuthRefused(Exception):
    """One auth call failed in a way worth retrying; ``wait`` is how long to wait first."""

    def __init__(self, reason: str, wait: float) -> None:
        super().__init__(reason)
        self.wait = wait


class CredentialSource:
    """Hands out the current credentials and renews them ahead of expiry and after a 401."""

    def __init__(self, api: ApiConfig, clock: Clock) -> None:
        self._api = api
        self._clock = clock
        self._current: Credentials | None = None
        self._renew_at: float | None = None  # monotonic time of the next renewal ahead of time
        self._unproven = False  # the current pair came from /auth and no request accepted it yet
        self._lock = asyncio.Lock()
        self._auth_calls: deque[float] = deque()
        self.auth_calls = 0  #: calls to POST /auth made (for summaries and tests)
        self.renewals = 0  #: pairs replaced by a new one (ahead of time or after a 401)
        if api.login is not None and api.password is not None:
            self._current = Credentials(api.login, api.password, 0)

    @property
    def renewable(self) -> bool:
        """True when the config has the account login, so a 401 can be healed."""
        return self._api.uses_account

    async def current(self, session: aiohttp.ClientSession) -> Credentials:
        """The credentials to use now; obtains or renews them ahead of time when needed."""
        if self._lock.locked():  # a renewal is under way: wait for its pair
            async with self._lock:
                pass
        cur = self._current
        if cur is None:
            return await self.renew(session, stale=None)
        if not self.renewable:
            return cur
        now = self._clock.monotonic()
        if self._renew_at is None:  # a configured pair of unknown age: count from its first use
            self._renew_at = now + RENEW_AFTER_SECONDS
        elif now >= self._renew_at:
            try:
                return await self._renew(session, stale=cur, rejected=False)
            except CredentialsError as exc:
                self._renew_at = now + RENEW_RETRY_SECONDS
                log.warning(
                    "could not renew the temporary credentials ahead of time (%s); "
                    "using the current ones and trying again in %.0f s",
                    exc,
                    RENEW_RETRY_SECONDS,
                )
        return self._current or cur

    def accepted(self, credentials: Credentials) -> None:
        """A request with ``credentials`` was not refused with a 401: they are proven good."""
        if credentials is self._current:
            self._unproven = False

    async def renew(self, session: aiohttp.ClientSession, stale: Credentials | None) -> Credentials:
        """Replace ``stale`` after a 401. Raises CredentialsError when that is impossible."""
        return await self._renew(session, stale=stale, rejected=stale is not None)

    async def _renew(
        self, session: aiohttp.ClientSession, *, stale: Credentials | None, rejected: bool
    ) -> Credentials:
        async with self._lock:
            cur = self._current
            if cur is not None and (stale is None or cur.generation != stale.generation):
                return cur  # someone else renewed while we waited: reuse theirs
            if not self.renewable:
                raise CredentialsError(
                    "the API rejected the credentials (401): they are invalid or expired; "
                    "get new temporary credentials (POST /auth) and re-run, or configure "
                    "[api] account_login to renew them automatically"
                )
            if rejected and self._unproven:
                raise CredentialsError(
                    "the API rejected (401) the temporary credentials that POST /auth has just "
                    "issued: the account is inactive or has no access to this data"
                )
            fresh = await self._obtain(session, 0 if cur is None else cur.generation + 1)
            self.renewals += cur is not None
            self._current = fresh
            self._unproven = True
            self._renew_at = self._clock.monotonic() + RENEW_AFTER_SECONDS
            log.info("obtained new temporary credentials from POST /auth")
            return fresh

    async def _obtain(self, session: aiohttp.ClientSession, generation: int) -> Credentials:
        """Call POST /auth until it answers, within its limit and AUTH_MAX_ATTEMPTS tries."""
        for attempt in range(1, AUTH_MAX_ATTEMPTS + 1):
            await self._respect_auth_limit()
            try:
                return await self._authenticate(session, generation, attempt)
            except _AuthRefused as exc:
                if attempt == AUTH_MAX_ATTEMPTS:
                    raise CredentialsError(f"{exc} ({attempt} attempts)") from None
                log.info("%s; trying again in %.0f s", exc, exc.wait)
                await self._clock.sleep(exc.wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _respect_auth_limit(self) -> None:
        now = self._clock.monotonic()
        while self._auth_calls and now - self._auth_calls[0] >= AUTH_WINDOW_SECONDS:
            self._auth_calls.popleft()
        if len(self._auth_calls) >= AUTH_LIMIT:
            await self._clock.sleep(AUTH_WINDOW_SECONDS - (now - self._auth_calls[0]))
        self._auth_calls.append(self._clock.monotonic())
        self.auth_calls += 1

    async def _authenticate(
        self, session: aiohttp.ClientSession, generation: int, attempt: int
    ) -> Credentials:
        api = self._api
        assert api.account_login is not None and api.account_password is not None
        url = f"{api.base_url}/auth"
        backoff = AUTH_BACKOFF_SECONDS * 2 ** (attempt - 1)
        try:
            async with session.post(
                url,
                data={  # inline, so no local variable holds the password
                    "tool": api.tool or "",
                    "login": api.account_login,
                    "password": api.account_password.reveal(),
                },
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=api.timeout_seconds),
            ) as resp:
                body = await resp.read()
                status, headers = resp.status, resp.headers
        except aiohttp.ClientConnectorError as exc:  # nothing reached the server
            from harvester.client import TransportError  # (client imports this module)

            self._auth_calls.pop()  # so it costs nothing of the auth call's own limit either
            self.auth_calls -= 1
            raise TransportError(
                f"cannot connect to {url} ({type(exc).__name__})", unreachable=True
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _AuthRefused(f"could not reach {url}: {type(exc).__name__}", backoff) from None
        if status == 429:
            raise _AuthRefused(f"POST {url} answered 429 (its own limit)", _reset_wait(headers))
        if status >= 500:
            raise _AuthRefused(f"POST {url} answered {status}: {_error_text(body)}", backoff)
        if status != 200:
            raise CredentialsError(
                f"POST {url} answered {status}: {_error_text(body)} "
                "(check [api] tool, account_login and the account password)"
            )
        try:
            data = json.loads(body)
            login, password = str(data["login"]), str(data["password"])
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"POST {url} returned no login/password") from None
        fresh = Credentials(login, Secret(password), generation)
        register_secrets([password, fresh.authorization.reveal()])
        return fresh


def _reset_wait(headers: Mapping[str, str]) -> float:
    """Seconds until the auth window a 429 names has surely reset (server clock, via Date)."""
    try:
        reset = float(headers.get("X-RateLimit-Reset", ""))
        parsed = parsedate_tz(headers.get("Date", ""))
        date = float(mktime_tz(parsed)) if parsed is not None else None
    except (ValueError, TypeError, OverflowError):
        return AUTH_WINDOW_SECONDS
    if date is None or not 0 <= reset - date <= AUTH_WINDOW_SECONDS:
        return AUTH_WINDOW_SECONDS
    return reset - date + AUTH_RESET_MARGIN_SECONDS


def _error_text(body: bytes) -> str:
    """The API's ``{"error": ...}`` message, shortened; never echoes anything we sent."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    return str(message)[:200] if message else "no error message"
