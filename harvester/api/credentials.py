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
from functools import cached_property

from harvester.api.headers import RESET_HEADER, header_date, header_int
from harvester.api.outcomes import NoReply
from harvester.api.reply import error_message
from harvester.api.transport import SendFailed, Transport
from harvester.clock import Clock
from harvester.config import ApiConfig, Secret
from harvester.errors import CredentialsError
from harvester.logs import RedactSecrets, register_secrets
from harvester.retrying import Backoff, retry_async

log = logging.getLogger("harvester")

# Plum: "re-authenticate every 24 hours"; renew an hour early so a long run never hits expiry.
RENEW_AFTER_SECONDS = 23 * 3600
# A failed renewal ahead of time is not fatal (the pair still works for an hour): try again later.
RENEW_RETRY_SECONDS = 300.0
# The auth endpoint's own limit (API notes): 15 calls per 15 minutes.
AUTH_LIMIT = 15
AUTH_WINDOW_SECONDS = 900.0
# Tries of one renewal when the auth call answers 429 or 5xx or its reply is lost.
AUTH_MAX_ATTEMPTS = 3
# Backoff between auth tries after a 5xx or a lost reply: 1 s, then 2 s (no jitter: one caller,
# renewals are single-flight).
AUTH_BACKOFF = Backoff(base=1.0, cap=60.0, jitter=False)
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


class CredentialSource:
    """Hands out the current credentials and renews them ahead of expiry and after a 401.

    Renewing sends ``POST /auth`` through ``transport``; when it cannot be sent at all (no
    connection, or a misconfigured base URL) :class:`SendFailed` propagates with that outcome.
    Every pair it obtains is added to ``scrubber`` (and the log filter) before it is used.
    """

    def __init__(
        self, api: ApiConfig, clock: Clock, transport: Transport, scrubber: RedactSecrets
    ) -> None:
        self._api = api
        self._clock = clock
        self._transport = transport
        self._scrubber = scrubber
        self._current: Credentials | None = None
        self._renew_at: float | None = None  # monotonic time of the next renewal ahead of time
        self._unproven = False  # the current pair came from /auth and no request accepted it yet
        # why replacing a refused pair failed for good: every later 401 gets the same answer
        # (without this, each request refused at the same time would call /auth again)
        self._refused: CredentialsError | None = None
        self._lock = asyncio.Lock()
        self._auth_calls: deque[float] = deque()
        self.renewals = 0  #: pairs replaced by a new one (ahead of time or after a 401)
        if api.login is not None and api.password is not None:
            self._current = Credentials(api.login, api.password, 0)

    @property
    def renewable(self) -> bool:
        """True when the config has the account login, so a 401 can be healed."""
        return self._api.uses_account

    async def current(self) -> Credentials:
        """The credentials to use now; obtains or renews them ahead of time when needed."""
        if self._lock.locked():  # a renewal is under way: wait for its pair
            async with self._lock:
                pass
        cur = self._current
        if cur is None:
            return await self.renew(stale=None)
        if not self.renewable:
            return cur
        now = self._clock.monotonic()
        if self._renew_at is None:  # a configured pair of unknown age: count from its first use
            self._renew_at = now + RENEW_AFTER_SECONDS
        elif now >= self._renew_at:
            try:
                return await self._renew(stale=cur, rejected=False)
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

    async def renew(self, stale: Credentials | None) -> Credentials:
        """Replace ``stale`` after a 401. Raises CredentialsError when that is impossible."""
        return await self._renew(stale=stale, rejected=stale is not None)

    async def _renew(self, *, stale: Credentials | None, rejected: bool) -> Credentials:
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
            if rejected and self._refused is not None:
                raise self._refused
            try:
                fresh = await self._obtain(0 if cur is None else cur.generation + 1)
            except CredentialsError as exc:
                if rejected:
                    self._refused = exc
                raise
            self.renewals += cur is not None
            self._current = fresh
            self._unproven = True
            self._renew_at = self._clock.monotonic() + RENEW_AFTER_SECONDS
            log.info("obtained new temporary credentials from POST /auth")
            return fresh

    async def _obtain(self, generation: int) -> Credentials:
        """Call POST /auth until it answers, within its limit and AUTH_MAX_ATTEMPTS tries."""

        def wait_for(error: Exception, attempt: int) -> float | None:
            return error.wait(attempt) if isinstance(error, _AuthRefused) else None

        def on_retry(error: Exception, wait: float) -> None:
            log.info("%s; trying again in %.0f s", error, wait)

        try:
            return await retry_async(
                lambda: self._authenticate(generation),
                attempts=AUTH_MAX_ATTEMPTS,
                wait_for=wait_for,
                sleep=self._clock.sleep,
                on_retry=on_retry,
            )
        except _AuthRefused as exc:
            raise CredentialsError(f"{exc} ({AUTH_MAX_ATTEMPTS} attempts)") from None

    async def _respect_auth_limit(self) -> None:
        now = self._clock.monotonic()
        while self._auth_calls and now - self._auth_calls[0] >= AUTH_WINDOW_SECONDS:
            self._auth_calls.popleft()
        if len(self._auth_calls) >= AUTH_LIMIT:
            await self._clock.sleep(AUTH_WINDOW_SECONDS - (now - self._auth_calls[0]))
        self._auth_calls.append(self._clock.monotonic())

    async def _authenticate(self, generation: int) -> Credentials:
        """One auth call, within the auth limit; _AuthRefused when worth another try."""
        await self._respect_auth_limit()
        api = self._api
        assert api.account_login is not None and api.account_password is not None
        url = self._transport.url("/auth")
        try:
            reply = await self._transport.send(
                "POST",
                "/auth",
                headers={"Accept": "application/json"},
                data={  # inline, so no local variable holds the password
                    "tool": api.tool or "",
                    "login": api.account_login,
                    "password": api.account_password.reveal(),
                },
            )
        except SendFailed as exc:
            if not isinstance(exc.outcome, NoReply):  # nothing reached the server
                self._auth_calls.pop()  # so it costs nothing of the auth call's own limit either
                raise
            raise _AuthRefused(f"could not reach {url}: {exc.outcome.reason}") from None
        status, headers = reply.head.status, reply.head.headers
        error = error_message(reply.body, self._scrubber.redact)
        if status == 429:
            raise _AuthRefused(f"POST {url} answered 429 (its own limit)", _reset_wait(headers))
        if status >= 500:
            raise _AuthRefused(f"POST {url} answered {status}: {error}")
        if status != 200:
            raise CredentialsError(
                f"POST {url} answered {status}: {error} "
                "(check [api] tool, account_login and the account password)"
            )
        try:
            data = json.loads(reply.body)
            login, password = str(data["login"]), str(data["password"])
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"POST {url} returned no login/password") from None
        fresh = Credentials(login, Secret(password), generation)
        issued = [login, password, fresh.authorization.reveal()]
        self._scrubber.add(issued)
        register_secrets(issued)
        return fresh


class _AuthRefused(Exception):
    """One auth call failed in a way worth retrying: after ``wait`` seconds if the reply said
    how long, else after the auth backoff."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self._wait = wait

    def wait(self, attempt: int) -> float:
        return self._wait if self._wait is not None else AUTH_BACKOFF.delay(attempt)


def _reset_wait(headers: Mapping[str, str]) -> float:
    """Seconds until the auth window a 429 names has surely reset (server clock, via Date)."""
    reset, date = header_int(headers, RESET_HEADER), header_date(headers)
    if reset is None or date is None or not 0 <= reset - date <= AUTH_WINDOW_SECONDS:
        return AUTH_WINDOW_SECONDS
    return reset - date + AUTH_RESET_MARGIN_SECONDS
