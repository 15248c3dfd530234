"""Real servers on loopback for the API layer's tests: any aiohttp app (the simulator's, or a
scripted one that answers what a test needs), over plain HTTP or TLS with a certificate the test
makes, and a CONNECT proxy that counts the tunnels it carried.

Everything runs in a daemon thread with its own event loop, so synchronous tests and CLI
subprocesses can use it; nothing here is a mock: the harvester talks to these over real sockets.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from harvester.simulator import Simulator, SimulatorSettings
from harvester.simulator.traffic import TruthRow

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _LoopThread:
    """An event loop in a daemon thread; ``call`` runs a coroutine on it and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class ServedApp:
    """``app`` served on a free loopback port (TLS when ``tls`` is given) until :meth:`stop`."""

    def __init__(self, app: web.Application, tls: ssl.SSLContext | None = None) -> None:
        self._thread = _LoopThread("served-app")
        self._tls = tls

        async def start() -> tuple[web.AppRunner, int]:
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
            await site.start()
            server = site._server
            assert server is not None
            return runner, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

        self._runner, self.port = self._thread.call(start())

    def base_url(self, path: str = "/api", host: str = "127.0.0.1") -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        self._thread.call(self._runner.cleanup())
        self._thread.close()


class SimulatorApp(ServedApp):
    """The simulator served by :class:`ServedApp` (so: over TLS too), with its truth."""

    def __init__(self, settings: SimulatorSettings, tls: ssl.SSLContext | None = None) -> None:
        self.simulator = Simulator(settings)
        super().__init__(self.simulator.build_app(), tls)

    def truth_rows(self, phone: str, start: dt.date, end: dt.date) -> set[TruthRow]:
        return self.simulator.truth_rows(phone, start, end)


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


class ScriptedApi(ServedApp):
    """A VoiceTrends stand-in that answers each data GET with what ``answer(path)`` returns
    (status, body), with the quota headers of a roomy quota; it records every request."""

    LIMIT = 100_000

    def __init__(self, answer: Callable[[str], tuple[int, bytes]], chunked: bool = False) -> None:
        self.seen: list[Seen] = []
        self._answer = answer
        self._chunked = chunked  # no Content-Length: the body streams in 1 MB chunks
        app = web.Application()
        app.router.add_route("*", "/api/{tail:.*}", self._handle)
        super().__init__(app)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        self.seen.append(Seen(request.method, path, request.headers.get("Authorization")))
        status, body = self._answer(path)
        reset = int(time.time()) // 900 * 900 + 900
        headers = {
            "Content-Type": "application/json",
            "X-RateLimit-Limit": str(self.LIMIT),
            "X-RateLimit-Remaining": str(self.LIMIT - len(self.seen)),
            "X-RateLimit-Reset": str(reset),
        }
        if not self._chunked:
            return web.Response(status=status, body=body, headers=headers)
        stream = web.StreamResponse(status=status, headers=headers)
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        for at in range(0, len(body), 2**20):
            await stream.write(body[at : at + 2**20])
        await stream.write_eof()
        return stream


def empty_reply() -> bytes:
    return json.dumps({"applications": {}}).encode()


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback (what ``HTTPS_PROXY`` names in a company network): it
    opens a tunnel per CONNECT and pipes bytes both ways, counting the tunnels and bytes."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []  # the "host:port" of each CONNECT
        self.other_requests: list[str] = []  # request lines that were not CONNECT
        self.bytes_carried = 0
        self._thread = _LoopThread("connect-proxy")

        async def start() -> asyncio.AbstractServer:
            return await asyncio.start_server(self._serve, "127.0.0.1", 0)

        self._server = self._thread.call(start())
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readline()).decode("latin-1").strip()
            while (await reader.readline()).strip():
                pass  # the request's headers
            method, target, _ = request.split(" ", 2)
            if method != "CONNECT":
                self.other_requests.append(request)
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        except (OSError, ValueError):
            pass
        finally:
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.bytes_carried += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def stop(self) -> None:
        self._server.close()
        self._thread.close()


def make_certificate(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (``openssl``), and its key."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def scripted_config(
    folder: Path,
    base_url: str,
    *,
    phones: list[str],
    start: dt.date,
    end: dt.date,
    api_extra: str = "",
    max_attempts: int = 1,
    concurrency: int = 2,
) -> Path:
    """A config for a server that takes the simulator's preset temporary pair; the password
    comes from ``support.PASSWORD_ENV``."""
    from harvester.simulator.settings import DEFAULT_TEMP_LOGIN
    from tests.support import PASSWORD_ENV

    text = f"""
[api]
base_url = "{base_url}"
login = "{DEFAULT_TEMP_LOGIN}"
password_env = "{PASSWORD_ENV}"
concurrency = {concurrency}
timeout_seconds = 10
max_attempts = {max_attempts}
{api_extra}

[quota]
limit = 1000
window_seconds = 900

[harvest]
phones = {json.dumps(phones)}
start = {start.isoformat()}
end = {end.isoformat()}
timezone = "UTC"
economy = "off"  # one request per job: what these servers and counts assume

[store]
path = "store"
flush_jobs = 10
flush_seconds = 0.5
"""
    path = folder / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path
