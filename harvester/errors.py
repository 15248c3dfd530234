"""The one exception tree of the harvester, and what each branch means to a user.

    HarvesterError                 base; exit code 1 unless a subclass says otherwise
    ├── UsageError                 bad flag, config value or SQL: exit 2, nothing sent or written
    │   └── ConfigError            a config file problem (names the key)
    ├── StoreError                 the store cannot be used as asked: exit 2
    │   └── StoreLockedError       another harvester holds the store's lock (names its pid/host)
    ├── StoreWriteError            a write failed mid-run (disk full): exit 1, flushed data kept
    ├── StoreDamagedError          a file the store's tables name is missing or unreadable: exit 1
    ├── CredentialsError           the API rejected the credentials (401) or they expired: exit 3
    ├── QuotaStalled               the API refuses every request (429) for windows on end: exit 1
    └── ReplyError                 invalid reply body (inside the API layer: it becomes an
                                   InvalidBody outcome, retried, then quarantined)

A misconfigured ``api.base_url`` found by the first request (its host does not resolve, TLS
fails) is a ConfigError. What happens to single jobs is not an exception at all: the API layer
classifies every exchange into a typed outcome (:mod:`harvester.api.outcomes`), and a stop on
SIGINT/SIGTERM/SIGHUP is a summary that says so (exit 130), not an error.

Library code raises these; only the CLI (``harvester.cli``) turns them into exit codes and one-line
messages. Messages never contain secrets: credentials are redacted where they are produced.
"""

from __future__ import annotations


class HarvesterError(Exception):
    """Base of every error the harvester raises on purpose."""

    exit_code: int = 1


class UsageError(HarvesterError):
    """The user asked for something impossible; detected before any request or write."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file key or value is wrong. The message names the key."""


class StoreError(HarvesterError):
    """The store folder cannot be used (not a directory, not writable, wrong grain...)."""

    exit_code = 2


class StoreLockedError(StoreError):
    """Another live harvester process holds the store's write lock."""


class StoreWriteError(HarvesterError):
    """Writing to the store failed mid-run (disk full): exit 1; what was flushed stays."""


class StoreDamagedError(HarvesterError):
    """A file the store's tables name is missing, truncated or unreadable (a disk, a backup tool
    or a sync client damaged it): exit 1. The message names the file; the CLI adds how to heal
    it (``harvester verify``), since library messages name no flag."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class CredentialsError(HarvesterError):
    """The API answered 401: credentials invalid, expired or the account inactive."""

    exit_code = 3


class QuotaStalled(HarvesterError):
    """The API refused every request for several quota windows, or until far beyond one (a
    suspended account, a broken proxy): waiting longer is pointless. The message says what the
    server answered."""


class ReplyError(HarvesterError):
    """A reply body is not a valid Diagnostic Flow answer (not JSON, wrong shape, bad counts)."""
