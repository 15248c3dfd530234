"""The networks users really have: HTTPS, a company proxy, a private CA; and the misconfigured
ones (a host that does not resolve, TLS that cannot work), which stop a run at once (exit 2).

Everything is real: the simulator served over TLS with a certificate each test makes
(``openssl``), a CONNECT proxy on loopback that counts its tunnels, the CLI in a subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvester.simulator import SimulatorServer, SimulatorSettings
from harvester.simulator.settings import DEFAULT_PHONES, DEFAULT_TEMP_PASSWORD
from tests.conftest import MakeSimulator
from tests.scripted_api import (
    ConnectProxy,
    SimulatorApp,
    make_certificate,
    scripted_config,
    server_tls,
)
from tests.support import PASSWORD_ENV, assert_store_matches_truth, cli_env, run_cli

TODAY = dt.date(2024, 3, 15)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 5)
PHONES = [DEFAULT_PHONES[0], "ALL"]
CLI_TODAY = ("--today", TODAY.isoformat())
# A misconfiguration is found by the first request, so it must end the run at once: well within
# this, where the outage wait it used to be took ten minutes.
AT_ONCE_SECONDS = 30.0


def net_env(**more: str) -> dict[str, str]:
    """The CLI's environment without any proxy or CA setting of the machine, plus ``more``."""
    proxy_vars = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ssl_cert_file"}
    env = {k: v for k, v in cli_env().items() if k.lower() not in proxy_vars}
    return {**env, PASSWORD_ENV: DEFAULT_TEMP_PASSWORD, **more}


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


@pytest.fixture
def tls_simulator(certificate: tuple[Path, Path]) -> Iterator[SimulatorApp]:
    settings = SimulatorSettings(today=TODAY, limit=1000, window_seconds=60)
    server = SimulatorApp(settings, tls=server_tls(*certificate))
    yield server
    server.stop()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    server = ConnectProxy()
    yield server
    server.stop()


def data_requests(sim: SimulatorApp) -> int:
    return sum(1 for e in sim.simulator.log.entries() if e.path.startswith("/path/"))


def test_a_pull_over_tls_through_a_connect_proxy_with_a_private_ca(
    tmp_path: Path,
    tls_simulator: SimulatorApp,
    proxy: ConnectProxy,
    certificate: tuple[Path, Path],
) -> None:
    """``HTTPS_PROXY`` names the proxy, ``api.ca_bundle`` the CA: every request goes through a
    tunnel to the server, and the store equals the simulator's truth."""
    config = scripted_config(
        tmp_path,
        tls_simulator.base_url(),
        phones=PHONES,
        start=START,
        end=END,
        api_extra=f'ca_bundle = "{certificate[0]}"',
    )
    done = run_cli(
        ["pull", "-c", str(config), "--json", *CLI_TODAY], env=net_env(HTTPS_PROXY=proxy.url)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["done"] == len(PHONES) * 5
    assert proxy.tunnels and set(proxy.tunnels) == {f"127.0.0.1:{tls_simulator.port}"}
    assert proxy.other_requests == [] and proxy.bytes_carried > 0
    assert data_requests(tls_simulator) == len(PHONES) * 5
    assert_store_matches_truth(tmp_path / "store", tls_simulator, PHONES, START, END)  # type: ignore[arg-type]


def test_ssl_cert_file_is_trusted_and_no_proxy_goes_direct(
    tmp_path: Path,
    tls_simulator: SimulatorApp,
    proxy: ConnectProxy,
    certificate: tuple[Path, Path],
) -> None:
    config = scripted_config(
        tmp_path, tls_simulator.base_url(), phones=PHONES, start=START, end=END
    )
    env = net_env(
        HTTPS_PROXY=proxy.url, NO_PROXY="127.0.0.1,localhost", SSL_CERT_FILE=str(certificate[0])
    )
    done = run_cli(["pull", "-c", str(config), *CLI_TODAY], env=env)
    assert done.returncode == 0, done.stderr
    assert proxy.tunnels == [] and proxy.other_requests == []  # NO_PROXY: straight to the server
    assert_store_matches_truth(tmp_path / "store", tls_simulator, PHONES, START, END)  # type: ignore[arg-type]


def _assert_config_error(done_rc: int, stderr: str, elapsed: float, *words: str) -> None:
    lines = stderr.strip().splitlines()
    assert done_rc == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("harvester: error: "), stderr
    assert "[api] base_url" in lines[0], stderr
    for word in words:
        assert word in lines[0], stderr
    assert elapsed < AT_ONCE_SECONDS


def test_a_certificate_no_trusted_ca_signed_is_a_config_error(
    tmp_path: Path, tls_simulator: SimulatorApp
) -> None:
    config = scripted_config(
        tmp_path, tls_simulator.base_url(), phones=PHONES, start=START, end=END
    )
    began = time.monotonic()
    done = run_cli(["-q", "pull", "-c", str(config), *CLI_TODAY], env=net_env())
    _assert_config_error(
        done.returncode, done.stderr, time.monotonic() - began, "certificate", "ca_bundle"
    )
    assert data_requests(tls_simulator) == 0


def test_https_against_a_plain_http_server_is_a_config_error(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim: SimulatorServer = make_simulator(today=TODAY)
    url = sim.base_url.replace("http://", "https://")
    config = scripted_config(tmp_path, url, phones=PHONES, start=START, end=END)
    began = time.monotonic()
    done = run_cli(["-q", "pull", "-c", str(config), *CLI_TODAY], env=net_env())
    _assert_config_error(done.returncode, done.stderr, time.monotonic() - began, "TLS")
    assert sim.log.count() == 0


def test_a_host_that_does_not_resolve_is_a_config_error(tmp_path: Path) -> None:
    config = scripted_config(
        tmp_path, "http://no-such-host.invalid/api", phones=PHONES, start=START, end=END
    )
    began = time.monotonic()
    done = run_cli(["-q", "pull", "-c", str(config), *CLI_TODAY], env=net_env())
    _assert_config_error(
        done.returncode, done.stderr, time.monotonic() - began, "no-such-host.invalid", "DNS"
    )


def test_a_ca_bundle_that_does_not_exist_is_named(tmp_path: Path) -> None:
    config = scripted_config(
        tmp_path,
        "https://127.0.0.1:9/api",
        phones=PHONES,
        start=START,
        end=END,
        api_extra='ca_bundle = "missing.pem"',
    )
    done = run_cli(["-q", "pull", "-c", str(config), *CLI_TODAY], env=net_env())
    assert done.returncode == 2 and "[api] ca_bundle" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
