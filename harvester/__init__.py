"""harvester: bulk and incremental harvesting of Plum VoiceTrends Diagnostic Flow data.

The public API, for use from Python as well as through the ``harvester`` command::

    from harvester import load_config, harvest, pull_plan

    config = load_config(Path("config.toml"))
    plan = pull_plan(config.harvest.phones, start, end, config.harvest.window)
    summary = await harvest(config, plan)  # the plan is resolved against the store's ledger

Names are imported lazily (PEP 562) so that ``harvester --help`` does not pay for pyarrow,
duckdb and aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "harvester.config",
    "load_config": "harvester.config",
    "Job": "harvester.jobs",
    "Grain": "harvester.jobs",
    "Plan": "harvester.plan",
    "pull_plan": "harvester.plan",
    "sync_plan": "harvester.plan",
    "harvest": "harvester.scheduler",
    "RunSummary": "harvester.summary",
    "QuotaGate": "harvester.gate",
    "Store": "harvester.store",
    "connect": "harvester.analysis",
    "HarvesterError": "harvester.errors",
}

__all__ = [
    "Config",
    "Grain",
    "HarvesterError",
    "Job",
    "Plan",
    "QuotaGate",
    "RunSummary",
    "Store",
    "__version__",
    "connect",
    "harvest",
    "load_config",
    "pull_plan",
    "sync_plan",
]

if TYPE_CHECKING:
    from harvester.analysis import connect
    from harvester.config import Config, load_config
    from harvester.errors import HarvesterError
    from harvester.gate import QuotaGate
    from harvester.jobs import Grain, Job
    from harvester.plan import Plan, pull_plan, sync_plan
    from harvester.scheduler import harvest
    from harvester.store import Store
    from harvester.summary import RunSummary


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harvester' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
