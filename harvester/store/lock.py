"""The store's write lock: one harvester writes one store at a time.

Mechanism: an exclusive ``fcntl.flock`` on ``harvester.lock``, held for the whole run, with the
holder's pid, host, start time and run id written inside for humans and for the error message.
The kernel drops a flock when its process dies (Ctrl-C, OOM, ``kill -9``), so a lock file whose
flock can be taken is stale by construction: no pid-liveness guessing, no pid-reuse false alarm.

Two subtleties:

* After taking the flock we check that the path still names the inode we locked. Release unlinks
  the file before closing it, so a process that opened the old file and then got its flock
  would otherwise believe it holds a lock that no longer exists on disk.
* A lock file written by *another host* is never recovered automatically: over a network file
  system we cannot tell whether that process is alive (flock may not be shared across hosts).
  The error says how to remove it by hand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harvester.errors import StoreError, StoreLockedError

log = logging.getLogger(__name__)

# Re-check rounds when the lock file is replaced under us between open and flock: each round
# means another process released or recovered the lock in that instant, so a few suffice.
_RACE_ROUNDS = 5


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) the lock, as written in the lock file."""

    pid: int | None
    host: str
    since: str
    run_id: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since} (run {self.run_id})"


@dataclass(frozen=True)
class HeldLock:
    """The lock as its holder has it: who, and the descriptor of the open file that holds the
    flock. A child process given ``fd`` (``pass_fds``) holds the lock too: the kernel releases
    a flock when the last descriptor of its open file is closed, so the lock outlives whichever
    of the two processes dies first (see :func:`adopt_lock`)."""

    holder: LockHolder
    fd: int


@contextlib.contextmanager
def hold_lock(path: Path, run_id: str, store: str | None = None) -> Iterator[LockHolder]:
    """Hold the store's lock for the ``with`` block; StoreLockedError if another process has it.

    ``store`` is how messages name the store (default: the lock file's folder; a store on object
    storage passes its URL, its lock file being in a local companion folder)."""
    with held_lock(path, run_id, store) as held:
        yield held.holder


@contextlib.contextmanager
def held_lock(path: Path, run_id: str, store: str | None = None) -> Iterator[HeldLock]:
    """:func:`hold_lock`, with the descriptor a child process may share it through."""
    fd, me = _acquire(path, run_id, store or str(path.parent))
    try:
        yield HeldLock(me, fd)
    finally:
        # Unlink before close: a waiter that opened this inode fails the inode check and retries.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def adopt_lock(path: Path, fd: int) -> None:
    """Check that ``fd``, inherited from the process holding the lock on ``path``, holds it.

    A flock taken again through the open file that holds it succeeds at once; through any other
    open file it would fail. And the path must still name that file: a lock file unlinked by a
    release is no lock. StoreError otherwise; nothing is changed either way (never unlock: the
    lock is the parent's).
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise StoreError(f"the store {path.parent} lock was not handed over ({exc})") from None
    if not _same_inode(path, fd):
        raise StoreError(f"the store {path.parent} lock was released before it was handed over")


def _acquire(path: Path, run_id: str, store: str) -> tuple[int, LockHolder]:
    host = socket.gethostname()
    for _ in range(_RACE_ROUNDS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreLockedError(
                f"the store {store} is locked by another harvester: {holder.describe()}"
            ) from None
        if not _same_inode(path, fd):
            os.close(fd)
            continue
        previous = _read_holder(fd)
        if previous.pid is not None:
            if previous.host != host:
                os.close(fd)
                raise StoreLockedError(
                    f"the store {store} is locked by {previous.describe()}; it cannot be "
                    f"checked from {host}. If that process is gone, delete {path}"
                )
            log.warning(
                "recovered a stale lock on %s left by %s (the process is gone)",
                store,
                previous.describe(),
            )
        me = LockHolder(
            pid=os.getpid(),
            host=host,
            since=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            run_id=run_id,
        )
        payload = json.dumps(me.__dict__).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        os.fsync(fd)
        return fd, me
    raise StoreLockedError(f"the store {store} lock keeps changing hands; try again")


def _same_inode(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> LockHolder:
    """The lock file's content; an empty or garbled file (crash while writing it) reads as none."""
    try:
        size = os.fstat(fd).st_size
        data = json.loads(os.pread(fd, size, 0)) if size else {}
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid = data.get("pid")
    return LockHolder(
        pid=pid if isinstance(pid, int) else None,
        host=str(data.get("host", "?")),
        since=str(data.get("since", "?")),
        run_id=str(data.get("run_id", "?")),
    )


def read_lock(path: Path) -> LockHolder | None:
    """Who holds the lock right now, for ``harvester status``; None when nobody does.

    Deliberately takes no flock, not even briefly: a probe could make a harvester starting at
    that instant fail with "locked". A holder on this host whose pid is gone reads as None.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        holder = _read_holder(fd)
    finally:
        os.close(fd)
    if holder.pid is None:
        return None
    if holder.host == socket.gethostname() and not _alive(holder.pid):
        return None
    return holder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
