"""Logging set-up, with a last line of defence against leaking secrets.

The harvester never logs a credential on purpose: URLs carry none, and no header is ever logged.
The redaction filter is a safety net for what we do not control (a library's exception text):
every record is rendered once and any secret, its base64 form, or any ``Basic <token>`` value
becomes ``***`` -- in the message, in an attached traceback and in stack info alike. The CLI's
one-line errors go through :func:`redact` too.

A secret is redacted in part as well as whole: any run of :data:`MIN_SECRET_FRAGMENT` or more of
its characters, so that a message cut short (a server's error text shortened to 60 characters)
cannot carry a prefix of a password past the filter. :class:`RedactSecrets` is also what the API
layer uses to clean a server's text and bodies before they reach the store.

:func:`format_duration` is here because log lines need it as much as the CLI's displays do.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import AnyStr

LOG_FORMAT = "%(asctime)s harvester %(levelname)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
REDACTED = "***"
# The shortest piece of a secret that is redacted on its own. Six characters of a random password
# are a 1-in-10^9 guess or more, while a shorter run would start to hit ordinary words and dates;
# anything shorter than this of a secret may pass (the whole secret, however short, never does).
MIN_SECRET_FRAGMENT = 6
# An HTTP basic-auth value (RFC 7617) wherever it appears, whatever its login and password were:
# "Basic " and base64 of "login:password" (checked by decoding, so prose is left alone).
_BASIC_AUTH = re.compile(r"\b(Basic\s+)([A-Za-z0-9+/]{4,}={0,2})")


class RedactSecrets(logging.Filter):
    """Replaces every known secret, and every fragment of one, in a record's final message."""

    def __init__(self) -> None:
        super().__init__()
        self.needles: set[str] = set()
        self._needle_bytes: tuple[bytes, ...] = ()  # the needles in UTF-8, for every reply
        self._fragments: set[str] = set()  # every MIN_SECRET_FRAGMENT-long piece of a needle
        self._short: set[str] = set()  # needles shorter than that, matched whole

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if secret:
                for form in _written_forms(secret):
                    self.needles.add(form)
                    if len(form) < MIN_SECRET_FRAGMENT:
                        self._short.add(form)
                    else:
                        self._fragments.update(
                            form[i : i + MIN_SECRET_FRAGMENT]
                            for i in range(len(form) - MIN_SECRET_FRAGMENT + 1)
                        )
        self._needle_bytes = tuple(needle.encode() for needle in self.needles)

    def redact(self, text: str) -> str:
        """``text`` with every known secret (or a piece of one of MIN_SECRET_FRAGMENT characters
        or more) and every basic-auth value replaced by ``***``."""
        text = _replace_spans(text, self._spans(text, self._short, self._fragments), REDACTED)
        return _BASIC_AUTH.sub(_redact_basic_auth, text)

    def redact_bytes(self, data: bytes) -> bytes:
        """Like :meth:`redact` for a body as received (the secrets' UTF-8 bytes)."""
        short = {n.encode() for n in self._short}
        fragments = {f.encode() for f in self._fragments}
        return _replace_spans(data, self._spans(data, short, fragments), REDACTED.encode())

    def holds_a_secret(self, data: bytes) -> bool:
        """Whether ``data`` holds a whole secret (a cheap check: one search per secret)."""
        return any(needle in data for needle in self._needle_bytes)

    @staticmethod
    def _spans(text: AnyStr, short: set[AnyStr], fragments: set[AnyStr]) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for needle in itertools.chain(short, fragments):
            at = text.find(needle)
            while at != -1:
                spans.append((at, at + len(needle)))
                at = text.find(needle, at + 1)
        return spans

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _written_forms(secret: str) -> set[str]:
    """A secret as it may appear in what a server sends back: as is, base64-encoded (a basic-auth
    token), and JSON-escaped (quotes, backslashes, and the slashes PHP escapes)."""
    escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
    return {
        secret,
        base64.b64encode(secret.encode()).decode(),
        escaped,
        escaped.replace("/", "\\/"),
    }


def _replace_spans(text: AnyStr, spans: list[tuple[int, int]], mark: AnyStr) -> AnyStr:
    """``text`` with the union of ``spans`` replaced, each run of overlapping ones by one mark."""
    if not spans:
        return text
    spans.sort()
    pieces: list[AnyStr] = []
    kept = 0
    start, end = spans[0]
    for s, e in spans[1:]:
        if s <= end:
            end = max(end, e)
            continue
        pieces += [text[kept:start], mark]
        kept, (start, end) = end, (s, e)
    pieces += [text[kept:start], mark, text[end:]]
    return text[:0].join(pieces)


def _redact_basic_auth(match: re.Match[str]) -> str:
    try:
        decoded = base64.b64decode(match.group(2), validate=True)
    except ValueError:
        return match.group(0)
    return match.group(1) + REDACTED if b":" in decoded else match.group(0)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


_redactor = RedactSecrets()
_handler: logging.Handler | None = None


def register_secrets(secrets: Iterable[str]) -> None:
    """Make sure these values never appear in a log line."""
    _redactor.add(secrets)


def redact(text: str) -> str:
    """``text`` without any registered secret or basic-auth value (for output outside logging)."""
    return _redactor.redact(text)


def setup_logging(verbose: int = 0, quiet: bool = False, secrets: Iterable[str] = ()) -> None:
    """Log to stderr at INFO (-q: errors only, -v: debug); idempotent."""
    global _handler
    register_secrets(secrets)
    logger = logging.getLogger("harvester")
    if _handler is None:
        _handler = _StderrHandler()
        _handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        _handler.addFilter(_redactor)
        logger.addHandler(_handler)
        logger.propagate = False
    if quiet:
        level = logging.ERROR
    elif verbose:
        level = logging.DEBUG
    else:
        level = logging.INFO
    logger.setLevel(level)


def format_duration(seconds: float) -> str:
    """``3h 05m``, ``4m 10s`` or ``12s``: how a duration reads in a log line, the progress
    display and ``harvester plan`` alike."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
