"""Serving the simulator over real HTTP: from a background thread, or until cancelled.

Why it exists: tests and subprocesses need a real server on a loopback port that they can start,
stop and start again (a service that goes away and comes back) while they run synchronously, and
``harvester simulate`` needs one to run in the foreground. Both wrap one
:class:`~harvester.simulator.service.Simulator`, whose state outlives the socket.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from typing import Any

from aiohttp import web

from harvester.simulator.log import RequestLog
from harvester.simulator.service import Simulator
from harvester.simulator.settings import SimulatorSettings
from harvester.simulator.traffic import TruthRow

DEFAULT_PORT = 8765  # run_simulator's default, and the README's; arbitrary unprivileged port
# (`harvester simulate` has its own default, 8080: see harvester/cli/sandbox.py)
_SHUTDOWN_TIMEOUT = 0.25  # seconds stop() waits for in-flight replies: going away is abrupt


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket; SO_REUSEADDR lets a restarted server take its old port back at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


class SimulatorServer:
    """The simulator on a loopback port, served from a daemon thread with its own event loop.

    State (quota, credentials, log) lives in :attr:`simulator` and survives :meth:`stop` and
    :meth:`start`, which binds the same port again: a server that goes away and comes back.
    """

    def __init__(
        self, settings: SimulatorSettings | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.simulator = Simulator(settings)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def settings(self) -> SimulatorSettings:
        return self.simulator.settings

    @property
    def log(self) -> RequestLog:
        return self.simulator.log

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.settings.base_path.rstrip('/')}"

    @property
    def credentials(self) -> tuple[str, str]:
        """The preset temporary ``(login, password)`` pair."""
        s = self.settings
        if s.temp_login is None or s.temp_password is None:
            raise ValueError("this simulator has no preset temporary credentials")
        return s.temp_login, s.temp_password

    @property
    def running(self) -> bool:
        return self._thread is not None

    def truth(self, phone: str, start: dt.date, end: dt.date) -> dict[str, list[dict[str, Any]]]:
        return self.simulator.truth(phone, start, end)

    def truth_rows(self, phone: str, start: dt.date, end: dt.date) -> set[TruthRow]:
        return self.simulator.truth_rows(phone, start, end)

    def daily_rows(self, phone: str, day: dt.date) -> set[TruthRow]:
        return self.simulator.daily_rows(phone, day)

    def start(self) -> SimulatorServer:
        """Serve (again); returns once the port accepts connections."""
        if self._thread is not None:
            return self
        sock = _listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            runner = web.AppRunner(
                self.simulator.build_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
            )
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._runner = runner

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"simulator:{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            loop.close()
            sock.close()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the port and every open connection; in-flight requests get no reply."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def run_simulator(
    settings: SimulatorSettings | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT
) -> None:
    """Serve the simulator until cancelled; print where and with which credentials first."""
    simulator = Simulator(settings)
    s = simulator.settings
    sock = _listening_socket(host, port)
    runner = web.AppRunner(
        simulator.build_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        bound = sock.getsockname()[1]
        print(f"VoiceTrends simulator at http://{host}:{bound}{s.base_path.rstrip('/')}")
        if s.temp_login is not None:
            print(f"  temporary login {s.temp_login} password {s.temp_password}")
        print(f"  account login {s.account_login} password {s.account_password}")
        print(f"  phones {', '.join(s.phones)}; quota {s.limit} per {s.window_seconds:g} s")
        print("  Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
