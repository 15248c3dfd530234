"""Opening a Delta table's current version: reading its log (again, when a writer's log clean-up
raced the read), and the versions a read-only command reuses.

Why a module of its own: every open lists and reads the table's log (~10 ms on a local disk,
~50-250 ms against a loopback S3 server, several round trips on a real one), and a read-only
command (``status``, ``query``, ``report``, ...) used to list each table 4 to 13 times: the file
check, the views, the ledger, the sizes. Within :func:`cached_reads` every
:class:`~harvester.store.tables.Tables` of the process opens each table once and shares it. The
versions are dropped (:func:`drop_cached_reads`) when the lock is taken (``Tables.forget``),
before every commit, vacuum and log clean-up of this process, and before a read retries after a
vanished file (another process vacuumed: the cached version is gone). Outside the block nothing
is cached, so a long-lived caller (a pull, a library user) always reads the newest version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from harvester.errors import StoreError
from harvester.retrying import retry_sync
from harvester.store.location import one_line

if TYPE_CHECKING:
    from deltalake import DeltaTable

# Reads of a table's log that lost a race with a writer's log clean-up (a checkpoint every 10
# commits deletes the entries before it): a fresh read finds the new checkpoint at once; the
# pause only spaces out a second loss. The same tries as the views' reads (views.retry_read).
OPEN_ATTEMPTS = 5
OPEN_RETRY_DELAY_SECONDS = 0.05

# A table is known by its URI and storage options.
Key = tuple[str, tuple[tuple[str, str], ...]]
# The versions opened within cached_reads() (None outside it).
_versions: dict[Key, DeltaTable] | None = None


def load(uri: str, options: dict[str, str] | None, what: str) -> DeltaTable | None:
    """The table's current version, read from its log now; None if there is no table there.
    StoreError naming ``what`` (``the data table of <store>``) if it cannot be read."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return retry_sync(
            lambda: DeltaTable(uri, storage_options=options),
            attempts=OPEN_ATTEMPTS,
            wait_for=_log_moved_wait,
        )
    except TableNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {what}: {one_line(exc)}") from None


def _log_moved_wait(exc: Exception, attempt: int) -> float | None:
    """A log entry or checkpoint that a writer's log clean-up deleted while delta-rs read the
    log (its DeltaError "... not found") is worth reading the log again; nothing else is."""
    from deltalake.exceptions import DeltaError, TableNotFoundError

    moved = (
        isinstance(exc, DeltaError)
        and not isinstance(exc, TableNotFoundError)
        and "not found" in str(exc).lower()
    )
    return OPEN_RETRY_DELAY_SECONDS * attempt if moved else None


@contextlib.contextmanager
def cached_reads() -> Iterator[None]:
    """Within this block, each table's current version is opened once and shared (see the
    module notes). Re-entrant."""
    global _versions
    if _versions is not None:
        yield
        return
    _versions = {}
    try:
        yield
    finally:
        _versions = None


def drop_cached_reads() -> None:
    """Forget the versions ``cached_reads()`` kept: the next read opens the newest one."""
    if _versions is not None:
        _versions.clear()


def cached(key: Key, open_now: Callable[[], DeltaTable | None]) -> DeltaTable | None:
    """``open_now()``, or within :func:`cached_reads` the version it returned first for ``key``
    (a missing table is never remembered: a writer may create it)."""
    if _versions is None:
        return open_now()
    table = _versions.get(key)
    if table is None:
        table = open_now()
        if table is not None:
            _versions[key] = table
    return table


def is_cached(key: Key) -> bool:
    return bool(_versions) and key in (_versions or {})
