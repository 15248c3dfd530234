"""Temporary credentials: a fixed pair from the config, or one obtained (and renewed) for the
account.

VoiceTrends data calls take HTTP basic auth with *temporary* credentials from ``POST {base}/auth``.
They expire 24 hours after their last use, and Plum advises re-authenticating every 24 hours. The
auth call has its own limit (15 per 15 minutes), so renewals are paced and single-flight: when
several requests fail with 401 at once, the first one renews and the others reuse its result.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from dataclasses import dataclass
from functools import cached_property

import aiohttp

from harvester.clock import Clock
from harvester.config import ApiConfig, Secret
from harvester.errors import CredentialsError

# Plum: "re-authenticate every 24 hours"; renew an hour early so a long run never hits expiry.
RENEW_AFTER_SECONDS = 23 * 3600
# The auth endpoint's own limit (API notes): 15 calls per 15 minutes.
AUTH_LIMIT = 15
AUTH_WINDOW_SECONDS = 900.0


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


class CredentialSource:
    """Hands out the current credentials and renews them when the API rejects them."""

    def __init__(self, api: ApiConfig, clock: Clock) -> None:
        self._api = api
        self._clock = clock
        self._current: Credentials | None = None
        self._obtained_at = 0.0
        self._lock = asyncio.Lock()
        self._auth_calls: deque[float] = deque()
        if api.login is not None and api.password is not None:
            self._current = Credentials(api.login, api.password, 0)

    @property
    def renewable(self) -> bool:
        """True when the config has the account login, so a 401 can be healed."""
        return self._api.uses_account

    async def current(self, session: aiohttp.ClientSession) -> Credentials:
        """The credentials to use now; obtains or proactively renews them when needed."""
        cur = self._current
        if cur is not None and not (
            self.renewable and self._clock.monotonic() - self._obtained_at > RENEW_AFTER_SECONDS
        ):
            return cur
        return await self.renew(session, stale=cur)

    async def renew(self, session: aiohttp.ClientSession, stale: Credentials | None) -> Credentials:
        """Replace ``stale`` after a 401. Raises CredentialsError when that is impossible."""
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
            await self._respect_auth_limit()
            fresh = await self._authenticate(session, 0 if cur is None else cur.generation + 1)
            self._current = fresh
            self._obtained_at = self._clock.monotonic()
            return fresh

    async def _respect_auth_limit(self) -> None:
        now = self._clock.monotonic()
        while self._auth_calls and now - self._auth_calls[0] >= AUTH_WINDOW_SECONDS:
            self._auth_calls.popleft()
        if len(self._auth_calls) >= AUTH_LIMIT:
            await self._clock.sleep(AUTH_WINDOW_SECONDS - (now - self._auth_calls[0]))
        self._auth_calls.append(self._clock.monotonic())

    async def _authenticate(self, session: aiohttp.ClientSession, generation: int) -> Credentials:
        api = self._api
        assert api.account_login is not None and api.account_password is not None
        form = {
            "tool": api.tool or "",
            "login": api.account_login,
            "password": api.account_password.reveal(),
        }
        try:
            async with session.post(
                f"{api.base_url}/auth",
                data=form,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=api.timeout_seconds),
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CredentialsError(
                f"could not reach {api.base_url}/auth to renew credentials: {type(exc).__name__}"
            ) from None
        if status != 200:
            raise CredentialsError(
                f"POST {api.base_url}/auth answered {status}: {_error_text(body)} "
                "(check [api] tool, account_login and the account password)"
            )
        try:
            data = json.loads(body)
            login, password = str(data["login"]), str(data["password"])
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"POST {api.base_url}/auth returned no login/password") from None
        return Credentials(login, Secret(password), generation)


def _error_text(body: bytes) -> str:
    """The API's ``{"error": ...}`` message, shortened; never echoes anything we sent."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    return str(message)[:200] if message else "no error message"
