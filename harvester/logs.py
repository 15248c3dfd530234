"""Logging set-up, with a last line of defence against leaking secrets.

The harvester never logs a credential on purpose: URLs carry none, and no header is ever logged.
The redaction filter is a safety net for what we do not control (a library's exception text):
every record is rendered once and any secret, its base64 form, or any ``Basic <token>`` value
becomes ``***`` -- in the message, in an attached traceback and in stack info alike. The CLI's
one-line errors go through :func:`redact` too.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
from collections.abc import Iterable

LOG_FORMAT = "%(asctime)s harvester %(levelname)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
REDACTED = "***"
# An HTTP basic-auth value (RFC 7617) wherever it appears, whatever its login and password were:
# "Basic " and base64 of "login:password" (checked by decoding, so prose is left alone).
_BASIC_AUTH = re.compile(r"\b(Basic\s+)([A-Za-z0-9+/]{4,}={0,2})")


class RedactSecrets(logging.Filter):
    """Replaces every known secret in a record's final message."""

    def __init__(self) -> None:
        super().__init__()
        self.needles: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if secret:
                self.needles.add(secret)
                self.needles.add(base64.b64encode(secret.encode()).decode())

    def redact(self, text: str) -> str:
        """``text`` with every known secret and basic-auth value replaced by ``***``."""
        # longest first: a secret's base64 form may contain a shorter secret
        for needle in sorted(self.needles, key=len, reverse=True):
            text = text.replace(needle, REDACTED)
        return _BASIC_AUTH.sub(_redact_basic_auth, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


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
