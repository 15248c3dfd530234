"""CLI runs for the tests without paying the CLI's imports each time: a fork server.

Why: the suite runs ``python -m harvester ...`` some 500 times, and each start imports aiohttp,
DuckDB, click, rich and the harvester's own modules again: ~0.75 s of CPU per run on this kind of
machine, a quarter of the whole suite's CPU on 2 cores. This server imports them once, then forks
one process per run. The run is still a process of its own, as a user's would be: its own stdin,
stdout and stderr (the caller's pipes, passed over a Unix socket), environment, working folder,
exit code and interpreter shutdown (atexit, thread joins); it runs ``harvester/__main__.py``
through ``runpy`` as ``python -m harvester`` does, with ``sys.argv`` and ``sys.path[0]`` as
that sets them. It runs ``python -c CODE ARGS`` the same way (a fresh ``__main__``), for tests
whose child does store work and is killed (tests/test_store_crash.py: a dozen starts that each
imported pyarrow and deltalake).

What differs from a fresh interpreter, and how that is kept out of the results:

* Modules imported here are not imported again. Only modules that start no thread are (forking a
  process with threads is unsafe). Environment variables that these imports set with
  ``setdefault`` (the harvester's import-time defaults) are set again in each run, over the
  run's own environment, the same way.
* pyarrow and deltalake read some variables once, when they load, so they load here as a run
  would have them: delta-rs's log level as ``harvester.cli.main`` sets it, jemalloc's settings
  as ``harvester.store.tables`` sets them. With one change: each bundles jemalloc, whose
  background thread (it returns freed pages to the system) would start at the import, so the
  server turns it off, and in a run the allocating threads return those pages themselves.
  Nothing a test checks depends on that: Arrow allocates from the system's allocator anyway
  (``ARROW_DEFAULT_MEMORY_POOL=system``, as the CLI sets it), and the tests that measure a run's
  memory start their own interpreter. A run whose environment sets any of these otherwise than
  the server's gets a fresh interpreter (:func:`needs_fresh_interpreter`). Importing the two
  here saves every run that touches a store ~0.1 s of CPU (measured: 20 ``status`` runs of a
  small store, 0.36 s -> 0.25 s each).
* Interpreter start-up reads ``PYTHON*`` variables and the locale once: a run whose environment
  differs from the server's in any of those (``PYTHONPATH`` for an injected sitecustomize, say)
  gets a fresh interpreter instead (:func:`needs_fresh_interpreter`); so does every run when
  ``HARVESTER_TEST_FRESH_CLI=1`` (the whole suite the old way, to compare).
* Every run shares the server's string-hash seed (one random seed per server, not per run).

Tests that time start-up or signal the process (``subprocess.Popen``) start their own
interpreter, as before.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from harvester.cli import RUST_LOG_LEVEL
from harvester.store.tables import JEMALLOC_CONF, JEMALLOC_ENV

FRESH_ENV = "HARVESTER_TEST_FRESH_CLI"
# The start of a server: imports of ~1 s; far more means it cannot start here.
START_TIMEOUT_SECONDS = 60.0
# A request's header: the JSON body's length, then the body.
_HEADER = struct.Struct("!I")
# Variables read once when an interpreter starts: a run that sets them otherwise needs its own.
_STARTUP_PREFIXES = ("PYTHON", "LC_", "LANG")
# Variables read once when the server's imports load, with the value a fresh run loads them with
# when its environment lacks them (the harvester's defaults): a run whose value differs from the
# server's needs an interpreter of its own too.
_LOAD_TIME_DEFAULTS = {
    JEMALLOC_ENV: JEMALLOC_CONF,  # delta-rs's jemalloc, set by harvester.store.tables
    "JE_ARROW_MALLOC_CONF": None,  # pyarrow's jemalloc
    "RUST_LOG": RUST_LOG_LEVEL,  # delta-rs's log level, set by harvester.cli.main
}

# The server itself: `python -c SERVER SOCKET_PATH`. Runs the forked CLI through runpy, exits
# when its stdin closes (the test process is gone).
SERVER = r"""
import gc, json, os, runpy, selectors, socket, struct, sys, time, types

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as harvester.cli.main does
before = dict(os.environ)
# What the commands import (pull, sync, status, query, verify, compact, report, export, plan):
# first what loads neither pyarrow nor deltalake,
import aiohttp, click, duckdb, rich.console, rich.progress, rich.table, uvloop  # noqa
import harvester.analysis, harvester.api.client, harvester.cli, harvester.cli.render_plan  # noqa
import harvester.cli.render_query, harvester.cli.render_status, harvester.forecast  # noqa
import harvester.plan, harvester.report, harvester.store, harvester.store.tables  # noqa
assert not {"pyarrow", "deltalake"} & set(sys.modules), "loaded before its settings"
# then pyarrow, deltalake and the rest, with what those two read once, when they load, set as a
# run would have it (see the module notes): jemalloc's settings (the harvester's, from
# harvester.store.tables) with the background thread off, and delta-rs's log level as
# harvester.cli.main sets it before any command runs.
JEMALLOC = ("JE_ARROW_MALLOC_CONF", "_RJEM_MALLOC_CONF")
LOAD_TIME = {k: os.environ.get(k) for k in (*JEMALLOC, "RUST_LOG")}
for key in JEMALLOC:
    os.environ[key] = ",".join(filter(None, (LOAD_TIME[key], "background_thread:false")))
os.environ.setdefault("RUST_LOG", harvester.cli.RUST_LOG_LEVEL)
import deltalake, deltalake.exceptions, pyarrow, pyarrow.compute, pyarrow.dataset  # noqa
import pyarrow.fs, pyarrow.parquet  # noqa
import harvester.scheduler, harvester.store.compact, harvester.store.verify  # noqa
import harvester.store.writer  # noqa
assert len(os.listdir("/proc/self/task")) == 1, "an import started a thread: fork is unsafe"
for key, value in LOAD_TIME.items():  # a run's environment is as the harvester's imports left it
    if value is None:
        os.environ.pop(key)
    else:
        os.environ[key] = value
# The imports' objects out of every collection, in the runs too: an exiting run's collections
# would otherwise touch (and so copy) every page of them, ~0.15 s a run (the gc docs' advice for
# a process that forks without exec).
gc.collect()
gc.freeze()
set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}
HEADER = struct.Struct("!I")

def receive(conn):
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
        more = conn.recv(65536)
        if not more:
            raise EOFError
        data += more
    return json.loads(data[HEADER.size:]), fds

def run(request, fds):
    # the run's own stdio, folder and environment, then `python -m harvester ARGS` (or, given
    # code, `python -c CODE ARGS`: sys.argv[0] "-c", sys.path[0] "", a fresh __main__)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in set_by_imports.items():
        os.environ.setdefault(key, value)
    time.tzset()
    if request.get("code") is None:
        sys.path[0] = request["cwd"]
        sys.argv = ["-m", *request["args"]]
        runpy.run_module("harvester", run_name="__main__", alter_sys=True)
    else:
        sys.path[0] = ""
        sys.argv = ["-c", *request["args"]]
        main = sys.modules["__main__"] = types.ModuleType("__main__")
        exec(compile(request["code"], "<string>", "exec"), main.__dict__)
    raise SystemExit(0)

def wait_for(conn, listener):
    # this process waits for the run and reports its exit code as subprocess would
    request, fds = receive(conn)
    listener.close()
    child = os.fork()
    if child == 0:
        conn.close()
        run(request, fds)  # raises SystemExit: the interpreter ends as any CLI process does
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"{child}\n".encode())
    except OSError:  # the caller is gone
        pass
    _, status = os.waitpid(child, 0)
    try:
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    except OSError:  # the caller gave up on it (its timeout): nobody to tell
        pass
    os._exit(0)

listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(64)
events = selectors.DefaultSelector()
events.register(listener, selectors.EVENT_READ)
events.register(sys.stdin, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    ready = {key.fileobj for key, _ in events.select()}
    if sys.stdin in ready:
        break  # the test process closed its end: it is gone
    conn, _ = listener.accept()
    if os.fork() == 0:
        events.close()
        wait_for(conn, listener)
    conn.close()
    while True:  # reap the finished waiters
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
"""


class CliServer:
    """One server process (per test process), started on first use, stopped at exit."""

    def __init__(self) -> None:
        self._folder = tempfile.mkdtemp(prefix="harvester-cli-")
        self.path = str(Path(self._folder) / "server.sock")
        # the environment the server started with, less what cli_env leaves out of every run
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            text=True,
        )
        assert self.process.stdout is not None
        ready = _read_line(self.process.stdout, START_TIMEOUT_SECONDS)
        if ready != "ready":
            self.stop()
            raise RuntimeError(f"the CLI fork server did not start ({ready!r})")

    def needs_fresh_interpreter(self, env: Mapping[str, str]) -> bool:
        """Whether ``env`` sets a variable that only interpreter start-up (or the server's
        imports) read otherwise."""
        keys = {k for k in (*env, *self.env) if k.startswith(_STARTUP_PREFIXES)}
        if any(env.get(k) != self.env.get(k) for k in keys):
            return True
        return any(env.get(k, d) != self.env.get(k, d) for k, d in _LOAD_TIME_DEFAULTS.items())

    def run(
        self, args: Sequence[str], env: Mapping[str, str], cwd: Path | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """``python -m harvester ARGS`` forked from the server: what ``subprocess.run`` with
        ``capture_output=True, text=True`` returns, TimeoutExpired after ``timeout`` seconds."""
        command = [sys.executable, "-m", "harvester", *args]
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            conn = self._send(args, env, cwd, [0, out_write, err_write])
        finally:
            os.close(out_write)
            os.close(err_write)
        try:
            code, out, err, pid = _collect(conn, out_read, err_read, timeout)
        finally:
            os.close(out_read)
            os.close(err_read)
            conn.close()
        stdout, stderr = _text(out), _text(err)
        if code is None:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, code, stdout, stderr)

    def start(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None,
        stdout: int,
        stderr: int,
        code: str | None = None,
    ) -> ForkedRun:
        """``python -m harvester ARGS`` (``python -c CODE ARGS`` given ``code``) forked from the
        server, running on: what ``subprocess.Popen(..., text=True)`` returns, for
        ``stdout``/``stderr`` each ``subprocess.DEVNULL`` or ``subprocess.PIPE``."""
        ends: list[int] = []
        readers: list[int | None] = []
        for kind in (stdout, stderr):
            if kind == subprocess.PIPE:
                read, write = os.pipe()
                ends.append(write)
                readers.append(read)
            elif kind == subprocess.DEVNULL:
                ends.append(os.open(os.devnull, os.O_WRONLY))
                readers.append(None)
            else:
                raise ValueError("stdout and stderr: DEVNULL or PIPE")
        try:
            conn = self._send(args, env, cwd, [0, *ends], code)
        finally:
            for fd in ends:
                os.close(fd)
        command = ["-m", "harvester"] if code is None else ["-c", code]
        return ForkedRun([sys.executable, *command, *args], conn, *readers)

    def _send(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None,
        fds: list[int],
        code: str | None = None,
    ) -> socket.socket:
        """A connection to the server carrying one run's request and its stdio."""
        request = {"args": list(args), "env": dict(env), "cwd": str(cwd or os.getcwd())}
        body = json.dumps({**request, "code": code}).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            socket.send_fds(conn, [_HEADER.pack(len(body)) + body], fds)
        except BaseException:
            conn.close()
            raise
        return conn

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        Path(self.path).unlink(missing_ok=True)
        os.rmdir(self._folder)


class ForkedRun:
    """A run forked from the server, driven as the ``subprocess.Popen`` of one: ``pid``,
    ``poll``, ``wait``, ``send_signal``, ``kill``, ``communicate``, ``returncode``, and
    ``stdout``/``stderr`` text streams where they were PIPE."""

    def __init__(
        self, args: list[str], conn: socket.socket, out_fd: int | None, err_fd: int | None
    ) -> None:
        self.args = args
        self._conn = conn
        self._lines = b""
        self.stdout = None if out_fd is None else open(out_fd, encoding=_encoding())  # noqa: SIM115
        self.stderr = None if err_fd is None else open(err_fd, encoding=_encoding())  # noqa: SIM115
        self.returncode: int | None = None
        pid = self._line(START_TIMEOUT_SECONDS)
        if pid is None:
            raise RuntimeError("the CLI fork server started no run")
        self.pid = pid

    def _line(self, timeout: float | None) -> int | None:
        """The waiter's next number (the pid, then the exit code), None if not in time."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._lines:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            with selectors.DefaultSelector() as events:
                events.register(self._conn, selectors.EVENT_READ)
                if not events.select(left):
                    return None
            data = self._conn.recv(64)
            if not data:
                raise RuntimeError("the CLI fork server's waiter ended without an exit code")
            self._lines += data
        line, self._lines = self._lines.split(b"\n", 1)
        return int(line)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._line(0)
            if self.returncode is not None:
                self._conn.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self._line(timeout)
            if code is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = code
            self._conn.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Both streams read to their end, then the exit code (TimeoutExpired if not in time:
        the run is left running, as Popen leaves it)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        streams = [s for s in (self.stdout, self.stderr) if s is not None]
        data, ended = _drain([s.fileno() for s in streams], deadline)
        if not ended:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        texts = {fd: _text(raw) for fd, raw in data.items()}
        out = None if self.stdout is None else texts[self.stdout.fileno()]
        err = None if self.stderr is None else texts[self.stderr.fileno()]
        for stream in streams:
            stream.close()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(left)
        return out, err


def _read_line(stream: object, timeout: float) -> str:
    """One line from the server's stdout, or "" after ``timeout`` seconds."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)  # type: ignore[attr-defined]
    reader.start()
    reader.join(timeout)
    return found[0].strip() if found else ""


def _collect(
    conn: socket.socket, out_fd: int, err_fd: int, timeout: float
) -> tuple[int | None, bytes, bytes, int | None]:
    """Read the run's stdout and stderr to their end and the waiter's two lines (the run's pid,
    its exit code) until ``timeout``; exit code None if it did not end in time."""
    import time

    data, ended = _drain([out_fd, err_fd, conn.fileno()], time.monotonic() + timeout)
    lines = data[conn.fileno()].decode().split()
    pid = int(lines[0]) if lines else None
    code = int(lines[1]) if len(lines) > 1 and ended else None
    return code, data[out_fd], data[err_fd], pid


def _drain(fds: list[int], deadline: float | None) -> tuple[dict[int, bytes], bool]:
    """Each descriptor read to its end, or until ``deadline`` (``time.monotonic()``; None: no
    limit): the bytes read from each, and whether every one ended."""
    import time

    chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
    ended = True
    with selectors.DefaultSelector() as events:
        for fd in chunks:
            events.register(fd, selectors.EVENT_READ)
        while events.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                ended = False
                break
            for key, _ in events.select(left):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    events.unregister(key.fd)
    return {fd: b"".join(parts) for fd, parts in chunks.items()}, ended


def _encoding() -> str:
    """The encoding ``subprocess`` decodes text with (the locale's)."""
    import locale

    return locale.getpreferredencoding(False)


def _text(data: bytes) -> str:
    """Bytes as ``subprocess.run(text=True)`` decodes them (locale encoding, universal
    newlines)."""
    text = data.decode(_encoding())
    return text.replace("\r\n", "\n").replace("\r", "\n")


_server: CliServer | None = None
_server_lock = threading.Lock()


def cli_server() -> CliServer | None:
    """This process's server (started now if need be), or None when runs must be fresh."""
    global _server
    if os.environ.get(FRESH_ENV) == "1" or not hasattr(socket, "send_fds"):
        return None
    with _server_lock:
        if _server is None or _server.process.poll() is not None:
            _server = CliServer()
            atexit.register(_server.stop)
        return _server
