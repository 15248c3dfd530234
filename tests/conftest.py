"""Fixtures for the whole suite: a live VoiceTrends simulator on a free loopback port.

Keep this file small and general; fixtures that only one test module needs live in that module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harvester.simulator import SimulatorServer, SimulatorSettings
from tests.s3_server import backend, s3_env, s3_server

# The object-storage fixtures, defined once here so that the whole session (each xdist worker)
# shares one moto server: a test module importing them would start a server of its own.
__all__ = ["backend", "s3_env", "s3_server"]

# Tests get a roomy quota and a short window unless they ask for less: the real 150 per 900 s
# would make every multi-request test about the quota.
TEST_LIMIT = 1000
TEST_WINDOW_SECONDS = 60.0

MakeSimulator = Callable[..., SimulatorServer]


@pytest.fixture
def make_simulator() -> Iterator[MakeSimulator]:
    """``make_simulator(**knobs)``: start a simulator with these ``SimulatorSettings`` fields.

    Every simulator started this way is stopped when the test ends.
    """
    servers: list[SimulatorServer] = []

    def make(**knobs: Any) -> SimulatorServer:
        knobs.setdefault("limit", TEST_LIMIT)
        knobs.setdefault("window_seconds", TEST_WINDOW_SECONDS)
        server = SimulatorServer(SimulatorSettings(**knobs))
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def simulator(request: pytest.FixtureRequest, make_simulator: MakeSimulator) -> SimulatorServer:
    """A running simulator; knobs via ``@pytest.mark.parametrize("simulator", [{...}],
    indirect=True)``."""
    knobs: dict[str, Any] = getattr(request, "param", {})
    return make_simulator(**knobs)
