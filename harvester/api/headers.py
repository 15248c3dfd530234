"""Reading the quota's reply headers: ``X-RateLimit-*``, ``Date`` and ``Retry-After``.

The quota gate believes what the server says in these headers, so how they are read decides
what it believes. The rules live here, apart from the window model: names match
case-insensitively (plain dicts in tests, aiohttp's proxies in runs), and anything missing,
negative or unreadable is ``None``, never an exception, so that a mangled header can only make
the gate fall back, not fail a request.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from email.utils import mktime_tz, parsedate_tz

# The quota headers VoiceTrends sends on every reply (its API notes, "Quota"): the limit,
# what is left of it, and the server time (epoch seconds) at which it resets.
LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RESET_HEADER = "X-RateLimit-Reset"
# ``Date`` is whole seconds (RFC 9110 HTTP-date): the reply was generated in [Date, Date + 1).
DATE_RESOLUTION_SECONDS = 1.0
# Distinct Date values remembered parsed: replies in flight span a few seconds at most.
DATE_CACHE_SIZE = 16


def header_text(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup for plain dicts (aiohttp's proxies already are)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    """A header's non-negative integer value; None if missing, negative or unreadable."""
    value = header_text(headers, name)
    try:
        number = int(value.strip()) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


def retry_after(headers: Mapping[str, str], server_now: float) -> float | None:
    """``Retry-After`` in seconds from now (RFC 9110: delay-seconds or an HTTP date, which is
    judged against ``server_now``: the reply's ``Date``, else our clock); None if missing or
    unreadable."""
    value = header_text(headers, "Retry-After")
    if value is None:
        return None
    seconds = header_int(headers, "Retry-After")
    if seconds is not None:
        return float(seconds)
    try:
        parsed = parsedate_tz(value)
        return max(0.0, mktime_tz(parsed) - server_now) if parsed is not None else None
    except (ValueError, TypeError, IndexError, OverflowError):  # what malformed dates raise
        return None


def header_date(headers: Mapping[str, str]) -> int | None:
    """``Date`` as epoch seconds; None if missing or unreadable."""
    value = header_text(headers, "Date")
    return _http_date(value) if value else None


@functools.lru_cache(maxsize=DATE_CACHE_SIZE)
def _http_date(value: str) -> int | None:
    """An HTTP date's epoch seconds. Cached: ``Date`` changes once a second while a pull reads
    hundreds of replies a second, and parsing one costs ~8 us (email.utils)."""
    try:
        parsed = parsedate_tz(value)
        return mktime_tz(parsed) if parsed is not None else None
    except (ValueError, TypeError, IndexError, OverflowError):  # what malformed dates raise
        return None
