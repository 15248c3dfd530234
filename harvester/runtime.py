"""How a pull or sync process runs: its event loop, and glibc's malloc arenas.

Both are process-wide choices, made once by the CLI before a run starts (:func:`run`); the
library's :func:`~harvester.scheduler.harvest` works on any asyncio loop, and the tests run it
with plain ``asyncio.run``.

- The event loop is uvloop's when it is installed (a dependency on Linux and macOS): with the
  quota lifted, the event loop's thread is what limits a pull (aiohttp and socket calls are a
  third of its CPU), and uvloop does that work in C. Measured in docs/benchmarks.md, "Pipeline".
  Elsewhere (Windows) asyncio's own loop.
- glibc gives every thread that allocates its own arena (up to 8 per core) and keeps freed
  memory in each; Arrow allocates through malloc (``ARROW_DEFAULT_MEMORY_POOL=system``) in the
  flush threads, so a long pull's resident set grew by each new arena's leftovers. Capped at
  MALLOC_ARENAS before the run's first thread starts (``MALLOC_ARENA_MAX`` in the environment
  wins); a no-op off glibc.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# glibc's mallopt(3) parameter number for the arena cap.
M_ARENA_MAX = -8
# The main arena and one for every other thread together: a pull allocates in the event loop's
# thread and one flush thread at a time. 2 took a 20,000-job pull's peak from 269 to 258 MB and
# kept it flat (docs/benchmarks.md); no CPU cost measured (threads rarely allocate at once).
MALLOC_ARENAS = 2


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest loop installed, with malloc's arenas capped."""
    limit_malloc_arenas()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory if it is installed, else None (asyncio's default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; False where it cannot (not
    glibc, or ``MALLOC_ARENA_MAX`` already set, which glibc read at start-up)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl has no mallopt
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
