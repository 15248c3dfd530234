"""A faithful local stand-in for the VoiceTrends Diagnostic Flow API, with ground truth and faults.

Why it exists: the real service has a 150-request quota shared with the account's other tools,
temporary credentials and no sandbox, so nothing can be tested against it. This simulator
behaves the way the API is documented (``shared/spec/voicetrends-api.md``), traps included:
basic auth with temporary credentials and a rate-limited ``POST /auth``; every documented error
with its ``{"error": ...}`` body and slashes escaped in every JSON body; a fixed quota window on
the *server's* (possibly skewed) clock, stated in ``X-RateLimit-*`` and ``Date`` headers on every
reply; data that satisfies every identity of the API notes by construction, late data for the
most recent days, and deterministic faults (drops, 500s, malformed and truncated bodies).

Three ways to serve: :class:`SimulatorServer` runs it on a free loopback port in a daemon thread
with its own event loop (for sync tests and subprocesses), :func:`build_app` returns the aiohttp
application for in-process use, and :func:`run_simulator` serves it for ``harvester simulate``.

One concept per module:

- :mod:`~harvester.simulator.settings`: :class:`SimulatorSettings` and the documented figures;
- :mod:`~harvester.simulator.sampling`: seeded RNGs and aggregate (multinomial) draws;
- :mod:`~harvester.simulator.flows`: the call-flow graphs (:data:`APPLICATIONS`);
- :mod:`~harvester.simulator.traffic`: the data model, each phone's counts per day;
- :mod:`~harvester.simulator.shapes`: activity shapes (idle, weekdays, starting, sparse, busy);
- :mod:`~harvester.simulator.nonadditive`: range replies that are not the sum of their days;
- :mod:`~harvester.simulator.quota`: fixed windows and the quota accounting rules;
- :mod:`~harvester.simulator.log`: the request log tests read;
- :mod:`~harvester.simulator.wire`: JSON, headers and broken replies as the service sends them;
- :mod:`~harvester.simulator.service`: :class:`Simulator`, which answers requests;
- :mod:`~harvester.simulator.server`: :class:`SimulatorServer` and :func:`run_simulator`.
"""

from __future__ import annotations

# The public API is __all__. The ``X as X`` imports keep importable from here what was before the
# package split without being in __all__: the documented figures, defaults and count types.
from harvester.simulator.flows import APPLICATIONS, MENU, TERMINAL, TRANSFER, Application, FlowItem
from harvester.simulator.log import LogEntry, RequestLog
from harvester.simulator.quota import QuotaState
from harvester.simulator.sampling import Rand as Rand
from harvester.simulator.server import DEFAULT_PORT as DEFAULT_PORT
from harvester.simulator.server import SimulatorServer, run_simulator
from harvester.simulator.service import SIMULATOR_KEY, Simulator, build_app
from harvester.simulator.settings import AUTH_LIMIT as AUTH_LIMIT
from harvester.simulator.settings import BASE_PATH as BASE_PATH
from harvester.simulator.settings import CREDENTIAL_TTL as CREDENTIAL_TTL
from harvester.simulator.settings import DEFAULT_PHONES as DEFAULT_PHONES
from harvester.simulator.settings import DEFAULT_TEMP_LOGIN as DEFAULT_TEMP_LOGIN
from harvester.simulator.settings import DEFAULT_TEMP_PASSWORD as DEFAULT_TEMP_PASSWORD
from harvester.simulator.settings import LIMIT as LIMIT
from harvester.simulator.settings import TOOLS as TOOLS
from harvester.simulator.settings import WINDOW_SECONDS as WINDOW_SECONDS
from harvester.simulator.settings import SimulatorSettings
from harvester.simulator.shapes import Shape
from harvester.simulator.traffic import COUNT_FIELDS as COUNT_FIELDS
from harvester.simulator.traffic import Counts as Counts
from harvester.simulator.traffic import TruthRow
from harvester.simulator.wire import METHOD_NOT_ALLOWED as METHOD_NOT_ALLOWED

__all__ = [
    "APPLICATIONS",
    "MENU",
    "SIMULATOR_KEY",
    "TERMINAL",
    "TRANSFER",
    "Application",
    "FlowItem",
    "LogEntry",
    "QuotaState",
    "RequestLog",
    "Shape",
    "Simulator",
    "SimulatorServer",
    "SimulatorSettings",
    "TruthRow",
    "build_app",
    "run_simulator",
]
