"""A pull's closing compaction in a child process, under the lock the pull holds.

Why a child: a compaction loads DuckDB, its sorts and three tables' file lists, ~130-180 MB on
top of the pull's own resident set at 100,000 jobs (peak 414-427 MB against ~285 MB for the
run); in a process of its own that memory is returned to the system when it exits, and the
pull's peak is the pull's. ``harvester compact`` still compacts in its own process.

How it stays safe (the store's lock is an ``flock``, :mod:`harvester.store.lock`):

- The parent passes the descriptor of its lock file to the child (``pass_fds``): the child's
  copy refers to the same open file, so the child holds the lock too (checked by
  :func:`~harvester.store.lock.adopt_lock` before anything is written) and never takes it again,
  which would deadlock on the parent's flock. The kernel drops the lock only when the last
  descriptor of that open file is closed, i.e. when both processes are gone: no other writer
  can start while a compaction still runs, whichever of the two dies first.
- The child dies with the parent (Linux: ``PR_SET_PDEATHSIG``), so a ``kill -9`` of the pull
  stops the whole harvest as it did when the compaction was a thread. Elsewhere it finishes its
  compaction under the lock it still holds, then exits.
- Each step of a compaction is one Delta commit, so a child killed anywhere leaves a consistent
  store (``tests/test_store_crash.py``); the next lock holder sweeps what it wrote uncommitted.
- The parent waits for the child, then forgets its open tables (a vacuum through a stale one
  would delete the child's new files).
- The child ignores SIGINT, SIGTERM and SIGHUP: a stop request does not cut a compaction short
  in a thread either (the run has ended when it starts).

Protocol: the request (store location, storage options, run id, descriptor) as one JSON object
on the child's stdin, so that credentials in storage options never appear in a process list;
the result (a :class:`~harvester.store.compact.CompactionResult` and the child's peak RSS) as
one JSON line on its stdout, or ``{"error": ...}`` with exit status 1. Its log lines go to the
parent's stderr.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import resource
import signal
import subprocess
import sys
from typing import Any

from harvester.errors import HarvesterError, StoreError
from harvester.store.compact import CompactionResult

log = logging.getLogger("harvester")

# prctl(2): deliver this signal to the child when the thread that spawned it exits.
_PR_SET_PDEATHSIG = 1
# ru_maxrss is in KiB on Linux, in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
# The signals a child ignores (what the scheduler's stop handlers catch in the parent).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ChildNotStarted(StoreError):
    """No child process could be started (no interpreter path, no memory, no process slot):
    nothing was done, the caller may compact in its own process."""


def compact_in_child(
    location: str, storage_options: dict[str, str] | None, lock_fd: int, run_id: str
) -> CompactionResult:
    """Run the compaction of the store at ``location`` in a child process that shares the lock
    held through ``lock_fd``; wait for it. StoreError if it fails or is killed, ChildNotStarted
    if it could not be started."""
    request = {
        "location": location,
        "storage_options": storage_options,
        "run_id": run_id,
        "fd": lock_fd,
        "parent": os.getpid(),
    }
    if not sys.executable:
        raise ChildNotStarted("no Python interpreter to start a compaction process with")
    try:
        child = subprocess.run(
            [sys.executable, "-m", __name__],
            input=json.dumps(request).encode(),
            stdout=subprocess.PIPE,
            pass_fds=(lock_fd,),
            check=False,
        )
    except OSError as exc:
        raise ChildNotStarted(f"cannot start a compaction process: {exc.strerror}") from None
    answer = _answer(child.stdout)
    if child.returncode < 0:
        raise StoreError(
            f"the compaction process was stopped by signal {-child.returncode}; the store is "
            "consistent (run `harvester compact` to finish compacting it)"
        )
    if "error" in answer or child.returncode != 0:
        raise StoreError(str(answer.get("error", f"compaction exited {child.returncode}")))
    peak = answer.pop("peak_rss_bytes", 0)
    result = CompactionResult(**answer)
    log.info("%s (in a child process, peak RSS %.0f MB)", result, peak / 2**20)
    return result


def _answer(stdout: bytes) -> dict[str, Any]:
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    return answer if isinstance(answer, dict) else {}


def main() -> int:
    """The child: read the request, compact under the inherited lock, print the result."""
    request = json.loads(sys.stdin.buffer.read())
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _die_with(int(request["parent"]))
    from harvester.logs import setup_logging

    setup_logging()  # the parent's format and redaction; its warnings only (it logs the result)
    logging.getLogger("harvester").setLevel(logging.WARNING)
    from harvester.store import Store

    store = Store(request["location"], request["storage_options"])
    try:
        with store.adopted_lock(int(request["fd"]), str(request["run_id"])):
            result = store.compact()
    except HarvesterError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    answer = dataclasses.asdict(result)
    answer["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT
    print(json.dumps(answer), flush=True)
    return 0


def _die_with(parent: int) -> None:
    """Be killed when the parent dies (Linux), and exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl: nobody waits for this compaction
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
