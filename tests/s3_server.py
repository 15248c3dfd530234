"""A real S3 API on loopback for the object-storage tests: moto's server, in its own process.

Its own process, not moto's in-process ``ThreadedMotoServer``: some delta-rs calls
(``DeltaTable.is_deltatable``) hold the GIL while they wait for the reply, so a server thread in
the same interpreter could never answer them (measured: a 180 s timeout).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# `python -c MOTO_SERVER ARGS`: moto's own server (`python -m moto.server ARGS`), with the answer
# to "which service serves this host?" remembered. moto works it out again for every request: it
# lists and stats its own package folder twice and tries ~200 URL patterns: remembered, the
# server spends a quarter less CPU on test_s3's big test (11.5 s -> 8.5 s). The answer depends on
# the host alone, and the S3 API itself is untouched. Its request log is left unwritten (it went
# to /dev/null anyway).
# moto is not pinned: a release without that method runs as it is, only slower.
MOTO_SERVER = r"""
import logging, sys
from moto.server import main

try:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication as App
    look_up, known = App.get_backend_for_host, {}
except (ImportError, AttributeError):
    App = None

def get_backend_for_host(self, host):
    if host not in known:
        known[host] = look_up(self, host)
    return known[host]

if App is not None:
    App.get_backend_for_host = get_backend_for_host
logging.getLogger("werkzeug").setLevel(logging.ERROR)
main(sys.argv[1:])
"""

# moto starts in ~1-2 s; far more means it cannot start here.
START_TIMEOUT_SECONDS = 30.0
ACCESS_KEY = "AKIAHARVESTERTEST01"
SECRET_KEY = "harvester-test-secret-Zq81xR"  # never to be seen in an output or a message


class S3Server:
    """One moto server process with one bucket."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = "harvester-test"
        self.process = subprocess.Popen(
            [sys.executable, "-c", MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.05)
        request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=5).close()

    def env(self) -> dict[str, str]:
        """The standard variables delta-rs reads (never the config)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def filesystem(self) -> Any:
        """pyarrow's own S3 client on this server: what a plain Parquet reader sees."""
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region="us-east-1",
            endpoint_override=self.endpoint,
            scheme="http",
        )

    def new_url(self) -> str:
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment pointed at the server (and a private companion folder); the
    same variables for a CLI subprocess."""
    env = {**s3_server.env(), "HARVESTER_STATE_DIR": str(tmp_path / "state")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def environ_with(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env}


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """Run a store test on a local folder (None) and on an s3:// URL of the loopback server."""
    if request.param == "local":
        return None
    request.getfixturevalue("s3_env")
    server: S3Server = request.getfixturevalue("s3_server")
    return server.new_url()
