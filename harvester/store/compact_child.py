"""A pull's closing compaction in a child process, under the lock the pull holds: the parent's
side (the child's is :mod:`harvester.store.compactor`).

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

import json
import logging
import os
import subprocess
import sys
from typing import Any

from harvester.errors import StoreError
from harvester.store.compact import CompactionResult

log = logging.getLogger("harvester")

# The child's entry point (run with ``python -m``; it imports the store, which this module must
# not: the store imports this one).
CHILD_MODULE = "harvester.store.compactor"


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
            [sys.executable, "-m", CHILD_MODULE],
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
