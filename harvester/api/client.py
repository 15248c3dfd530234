"""The API client: one data request for one job, classified into one typed outcome.

This is the API layer's face to the scheduler. It composes the wire (:mod:`.transport`), the
credentials (:mod:`.credentials`) and the body parser (:mod:`.reply`), and it is the one place
that decides what a reply means (:mod:`.outcomes`). Nothing leaves it unredacted: every secret
of the config and every pair ``POST /auth`` issues, whole or as a fragment of
:data:`~harvester.logs.MIN_SECRET_FRAGMENT` characters or more, is removed from error texts and
from the bodies it hands on for the raw archive (a server that echoes the credentials in a 400
must not plant them in the store). A valid data reply is the data itself and is handed on as
received, unless it holds a whole secret: then it is quarantined, redacted.

The server's date (its replies' ``Date``, in the account's time zone) decides when a window is
over: a reply for a window ending on or after it is :class:`~.outcomes.Unfinished` (the day's
counts will still grow), whatever ``--today`` the run was given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import aiohttp

from harvester.api.credentials import Credentials, CredentialSource
from harvester.api.headers import RESET_HEADER, header_date, header_int
from harvester.api.outcomes import (
    REJECTED_STATUSES,
    Head,
    InvalidBody,
    Misconfigured,
    NotSent,
    Outcome,
    RateLimited,
    Rejected,
    Rows,
    ServerError,
    Unauthorized,
    Unfinished,
    Unreachable,
)
from harvester.api.reply import error_message, parse_reply
from harvester.api.transport import RawReply, SendFailed, Transport
from harvester.clock import Clock
from harvester.config import ApiConfig
from harvester.errors import ReplyError
from harvester.logs import RedactSecrets

ACCEPT = "application/json"


def api_secrets(api: ApiConfig) -> Iterable[str]:
    """Every secret an ``[api]`` section holds: the passwords, the fixed temporary login and the
    basic-auth value made of the fixed pair."""
    found = [s.reveal() for s in (api.password, api.account_password) if s is not None]
    if api.login is not None and api.password is not None:
        pair = Credentials(api.login, api.password, 0)
        found += [api.login, pair.authorization.reveal()]
    return found


class ApiClient:
    """Fetches jobs' windows from the API with current credentials; see the module notes.

    ``zone`` is the account's time zone, in which the server's date is read. With
    ``proxy_from_env`` requests go through the proxy the environment names (``HTTPS_PROXY``...):
    right for a session of :func:`~harvester.api.transport.open_session`, not for one a caller
    injected to reach a server of its own (the demo's, a test's).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api: ApiConfig,
        clock: Clock,
        zone: dt.tzinfo = dt.UTC,
        *,
        proxy_from_env: bool = False,
    ) -> None:
        self._transport = Transport(session, api, proxy_from_env=proxy_from_env)
        self._scrubber = RedactSecrets()
        self._scrubber.add(api_secrets(api))
        self._zone = zone
        self._max_bytes = api.max_reply_bytes
        self.credentials = CredentialSource(api, clock, self._transport, self._scrubber)
        #: the server's current date, from the latest reply that had a Date (None before one)
        self.server_today: dt.date | None = None
        self._last_date: str | None = None

    def redact(self, text: str) -> str:
        """``text`` without any secret this client knows, or a fragment of one."""
        return self._scrubber.redact(text)

    async def authorize(self) -> Credentials | NotSent:
        """The credentials to send now (obtained or renewed as needed), or why ``POST /auth``
        could not be sent. Raises CredentialsError when no usable pair can be had."""
        try:
            return await self.credentials.current()
        except SendFailed as exc:
            return _not_sent(exc)

    async def renew(self, stale: Credentials) -> Credentials | NotSent:
        """New credentials after ``stale`` was refused with a 401 (single-flight)."""
        try:
            return await self.credentials.renew(stale)
        except SendFailed as exc:
            return _not_sent(exc)

    async def fetch(self, path: str, window_end: dt.date, credentials: Credentials) -> Outcome:
        """Send one GET of ``path`` (a window ending ``window_end``) and say what it came to."""
        try:
            reply = await self._transport.send(
                "GET",
                path,
                headers={"Accept": ACCEPT, "Authorization": credentials.authorization.reveal()},
            )
        except SendFailed as exc:
            return exc.outcome
        self._learn_date(reply.head)
        if reply.status != 401:  # the server took the credentials
            self.credentials.accepted(credentials)
        return self._classify(reply, window_end)

    def _classify(self, reply: RawReply, window_end: dt.date) -> Outcome:
        head, status = reply.head, reply.status
        if status == 429:
            return RateLimited(head, header_int(head.headers, RESET_HEADER))
        if status == 401:
            return Unauthorized(head)
        if status != 200:
            reason = f"HTTP {status}: {error_message(reply.body, self.redact)}"
            if status in REJECTED_STATUSES:
                return Rejected(head, reason, self._redact_body(reply))
            return ServerError(head, reason, self._redact_body(reply))
        if reply.oversized:
            reason = (
                f"invalid reply: longer than api.max_reply_bytes ({self._max_bytes} bytes); "
                "not read further"
            )
            return InvalidBody(head, reason, self._redact_body(reply))
        try:
            rows = parse_reply(reply.body)
        except ReplyError as exc:
            return InvalidBody(head, self.redact(f"invalid reply: {exc}"), self._redact_body(reply))
        if self._scrubber.holds_a_secret(reply.body):
            reason = "invalid reply: it echoes a credential"
            return InvalidBody(head, reason, self._redact_body(reply))
        if self.server_today is not None and window_end >= self.server_today:
            return Unfinished(head, self.server_today)
        return Rows(head, rows, reply.body)

    def _redact_body(self, reply: RawReply) -> bytes:
        """A body that is not data, as the raw archive may keep it: without any secret."""
        return self._scrubber.redact_bytes(reply.body)

    def _learn_date(self, head: Head) -> None:
        text = head.headers.get("Date")
        if text == self._last_date:  # Date has 1 s resolution: most replies repeat the last one
            return
        self._last_date = text
        date = header_date(head.headers)
        if date is not None:
            today = dt.datetime.fromtimestamp(date, self._zone).date()
            if self.server_today is None or today > self.server_today:
                self.server_today = today


def _not_sent(exc: SendFailed) -> NotSent:
    outcome = exc.outcome
    if isinstance(outcome, Unreachable | Misconfigured):
        return outcome
    raise AssertionError(f"a lost auth reply is retried, not returned: {outcome}")
