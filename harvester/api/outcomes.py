"""What one exchange with the API came to: exactly one of a few typed outcomes.

Why typed outcomes instead of statuses and exceptions: every caller of the API asks the same
questions (did the request reach the server? did it cost quota? is it worth trying again? what
goes into the store?), and answering them from status codes in each caller is how counts end up
corrected after the fact. Here the API layer answers them once; the scheduler matches on the
class. Every outcome is frozen, and every text in it has already been redacted (no secret, nor a
fragment of one, leaves the API layer).

    outcome          reached the server   the job                      the store gets
    Rows             yes                  done (rows may be empty)     rows + raw body
    Unfinished       yes                  left pending: the server's   nothing
                                          day has not passed its end
    RateLimited      yes (429)            sent again after the reset   nothing
    Unauthorized     yes (401)            sent again after a renewal   nothing
    Rejected         yes (400/404/405)    failed for good              reason + raw body
    ServerError      yes (5xx, other)     retried, then failed         reason + raw body
    InvalidBody      yes (200)            retried, then failed         reason + body, quarantined
    NoReply          maybe (timeout...)   retried, then failed         reason
    Unreachable      no (no connection)   waits for the API            nothing
    Misconfigured    no (DNS, TLS)        the run stops: exit 2        nothing
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from harvester.items import ItemRows

# Replies that will not change on a retry: the request itself is wrong (a bad date, a phone not
# on the account, a method the endpoint does not take).
REJECTED_STATUSES = frozenset({400, 404, 405})


@dataclass(frozen=True, slots=True)
class Head:
    """A reply's status line and headers: what the quota gate learns from every reply."""

    status: int
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Rows:
    """A valid 200 reply: its rows (possibly none) and the body as received."""

    head: Head
    rows: ItemRows
    body: bytes


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A 200 reply for a window that ends on or after the server's current date: the day is not
    over, so its counts will still grow. Nothing is recorded; a later run fetches it again."""

    head: Head
    server_today: dt.date


@dataclass(frozen=True, slots=True)
class RateLimited:
    """429: the window's quota is spent. ``reset`` is the server time (epoch seconds) its reply
    names, if any; the quota gate has already learned when to send again."""

    head: Head
    reset: int | None


@dataclass(frozen=True, slots=True)
class Unauthorized:
    """401: the credentials used were refused (expired, or never valid)."""

    head: Head


@dataclass(frozen=True, slots=True)
class Rejected:
    """400/404/405: the server refuses this request; a retry gets the same answer."""

    head: Head
    reason: str
    body: bytes


@dataclass(frozen=True, slots=True)
class ServerError:
    """5xx (or any status with no meaning of its own): the server failed; worth a retry."""

    head: Head
    reason: str
    body: bytes


@dataclass(frozen=True, slots=True)
class InvalidBody:
    """A 200 whose body is not a valid reply (or too large): quarantined with its bytes."""

    head: Head
    reason: str
    body: bytes


@dataclass(frozen=True, slots=True)
class NoReply:
    """The request left but no whole reply came back (timeout, dropped connection, body cut
    short). ``head`` is set when the status line and headers arrived before the failure."""

    head: Head | None
    reason: str


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No connection could be made (refused, no route): the request never left, cost nothing."""

    reason: str


@dataclass(frozen=True, slots=True)
class Misconfigured:
    """The configured ``api.base_url`` cannot work: its host does not resolve, or TLS with it
    fails (a plain-HTTP server, a certificate not trusted). Waiting will not fix it."""

    reason: str


Outcome = (
    Rows
    | Unfinished
    | RateLimited
    | Unauthorized
    | Rejected
    | ServerError
    | InvalidBody
    | NoReply
    | Unreachable
    | Misconfigured
)
NotSent = Unreachable | Misconfigured
