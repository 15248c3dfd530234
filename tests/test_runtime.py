"""The event loop of a pull or sync: uvloop's when installed, asyncio's otherwise.

The CLI runs every pull and sync through :func:`harvester.runtime.run` (the end-to-end tests run
the real CLI in subprocesses); here, what that loop must give the scheduler: the injectable
clock's time and sleeps, threads for flushes, signal handlers for stop requests.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from harvester import runtime
from harvester.clock import SystemClock


def test_a_run_gets_uvloop_when_it_is_installed() -> None:
    pytest.importorskip("uvloop")

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert runtime.run(loop_module()).startswith("uvloop")


def test_without_uvloop_a_run_gets_asyncio_s_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails as if not installed
    assert runtime.loop_factory() is None

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert runtime.run(loop_module()).startswith("asyncio")


def test_the_loop_serves_the_clock_threads_and_stop_signals() -> None:
    async def main() -> tuple[float, int, bool]:
        clock = SystemClock()
        started = clock.monotonic()
        await clock.sleep(0.05)
        slept = clock.monotonic() - started
        in_thread = await asyncio.to_thread(lambda: 42)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, stop.set)
        try:
            signal.raise_signal(signal.SIGUSR1)
            async with asyncio.timeout(5):
                await stop.wait()
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
        return slept, in_thread, stop.is_set()

    slept, in_thread, stopped = runtime.run(main())
    assert 0.04 <= slept < 2 and in_thread == 42 and stopped
