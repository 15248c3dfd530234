"""How a pull or sync process runs its event loop: uvloop's when it is installed.

A process-wide choice, made once by the CLI when a run starts (:func:`run`); the library's
:func:`~harvester.scheduler.harvest` works on any asyncio loop, and the tests run it with plain
``asyncio.run`` (and virtual time). With the quota lifted, the event loop's thread is what limits
a pull (aiohttp and the socket calls are about 40% of its CPU), and uvloop does the loop's and
the transports' work in C: 6% less CPU per job (docs/benchmarks.md, "Pipeline"). uvloop is a
dependency on Linux and macOS; elsewhere (Windows, PyPy) asyncio's own loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest loop installed."""
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
