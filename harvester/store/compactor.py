"""The compaction child's side: compact under the lock the parent handed over, print the result.

See :mod:`harvester.store.compact_child` for why and how; run as
``python -m harvester.store.compactor`` with the request as JSON on stdin.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import resource
import signal
import sys

from harvester.errors import HarvesterError
from harvester.logs import setup_logging
from harvester.store import Store

# prctl(2): deliver this signal to the child when the thread that spawned it exits.
_PR_SET_PDEATHSIG = 1
# ru_maxrss is in KiB on Linux, in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
# The signals a child ignores (what the scheduler's stop handlers catch in the parent).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main() -> int:
    """The child: read the request, compact under the inherited lock, print the result."""
    request = json.loads(sys.stdin.buffer.read())
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _die_with(int(request["parent"]))
    setup_logging()  # the parent's format and redaction; its warnings only (it logs the result)
    logging.getLogger("harvester").setLevel(logging.WARNING)
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
