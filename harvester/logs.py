"""Logging set-up, with a last line of defence against leaking secrets.

The harvester never logs a credential on purpose: URLs carry none, and no header is ever logged.
The redaction filter is a safety net for what we do not control (a library's exception text):
every record is rendered once and any secret, or its basic-auth base64 form, becomes ``***``.
"""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Iterable

LOG_FORMAT = "%(asctime)s harvester %(levelname)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
REDACTED = "***"


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

    def filter(self, record: logging.LogRecord) -> bool:
        if self.needles:
            message = record.getMessage()
            for needle in self.needles:
                message = message.replace(needle, REDACTED)
            record.msg, record.args = message, None
        return True


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
