"""``harvester demo``: the whole product in under a minute, with no config and no network.

It serves the simulator in-process on a loopback port with a short quota window (so the quota
gate visibly paces the pull), pulls three weeks for the simulator's numbers and ``ALL`` into a
fresh store, and runs a few bundled views over it. This module does the work and returns data;
:mod:`harvester.cli.sandbox` prints it and the commands to explore further.

The demo replaces its store on every run, so it marks each store it makes (``DEMO_MARKER``) and
replaces nothing else: a folder holding anything without the mark (a copy of a real store, a
user's files) is refused, and so is a demo store another harvester holds the lock of.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from harvester.config import ApiConfig, Config, HarvestConfig, QuotaConfig, Secret, StoreConfig
from harvester.errors import StoreError, StoreLockedError
from harvester.jobs import Grain
from harvester.plan import pull_plan
from harvester.progress import ProgressSink
from harvester.scheduler import RunSummary, harvest

# Small enough to finish in seconds, long enough that the gate has to wait for two resets.
DEMO_DAYS = 21
DEMO_LIMIT = 40
DEMO_WINDOW_SECONDS = 3.0
# Views shown after the pull, with the query that shows each best.
SHOWCASE = (
    (
        "Calls per application (all numbers merged)",
        "SELECT regexp_extract(application, '[^/]*$') AS app, days, calls, transferred, "
        "transfer_failed, self_service, abandoned, round(transfer_rate, 3) AS transfer_rate, "
        "round(self_service_rate, 3) AS self_service_rate, "
        "round(abandon_rate, 3) AS abandon_rate FROM calls_all_summary",
    ),
    (
        "Where callers hang up or fail recognition",
        "SELECT regexp_extract(application, '[^/]*$') AS app, form, item, kind, visits, "
        "hangups, round(hangup_share, 3) AS hangup_share, errors, "
        "round(error_share, 3) AS error_share, round(error_rate, 3) AS error_rate "
        "FROM hotspots LIMIT 8",
    ),
)
# Written into every store the demo makes, before its pull starts (so an interrupted demo's store
# is still the demo's): the only stores ``harvester demo`` ever replaces.
DEMO_MARKER = ".harvester-demo"
_MARKER_TEXT = "made by 'harvester demo', which replaces this folder on every run\n"
FALLBACK_QUERY = (
    "SELECT phone, count(*) AS items, sum(visits) AS visits, sum(disconnect) AS calls "
    "FROM diagnostic_flow GROUP BY phone ORDER BY phone"
)


def replace_store(store: Path, *, flag: str = "store") -> None:
    """Empty ``store`` for a new demo pull and mark it; only a folder that is new, empty or a
    store the demo made, and only while no other harvester holds its lock. Errors name
    ``store`` as ``flag`` (the CLI passes ``--store``)."""
    from harvester.store import Store
    from harvester.store.location import object_url
    from harvester.store.lock import hold_lock
    from harvester.store.schema import LOCK_FILE

    if object_url(store):
        raise StoreError(f"{flag}: the demo writes a local folder, not object storage")
    if store.exists() and not store.is_dir():
        raise StoreError(f"{flag}: {store} is a file")
    if store.is_dir() and any(store.iterdir()) and not (store / DEMO_MARKER).is_file():
        raise StoreError(
            f"{flag}: {store} holds data the demo did not create; not replacing it "
            "(name a new or empty folder, or delete this one yourself)"
        )
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{flag}: cannot create {store}: {exc.strerror}") from None
    try:
        with hold_lock(store / LOCK_FILE, "demo"):
            for entry in store.iterdir():
                if entry.name == LOCK_FILE:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            Store(store).ensure_writable(Grain.DAY)
            (store / DEMO_MARKER).write_text(_MARKER_TEXT)
    except StoreLockedError as exc:
        raise StoreLockedError(f"{flag}: {store} is in use, not replacing it: {exc}") from None


async def pull(store: Path, progress: ProgressSink | None = None) -> RunSummary:
    """Serve the simulator on a free loopback port and pull the demo's days into ``store``."""
    from harvester.simulator import SimulatorSettings, build_app

    settings = SimulatorSettings(
        limit=DEMO_LIMIT, window_seconds=DEMO_WINDOW_SECONDS, latency=0.02, jitter=0.03
    )
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        today = dt.datetime.now(dt.UTC).date()
        end = today - dt.timedelta(days=1)
        start = end - dt.timedelta(days=DEMO_DAYS - 1)
        assert settings.temp_login is not None and settings.temp_password is not None
        phones = (*settings.phones, "ALL")
        config = Config(
            api=ApiConfig(
                base_url=f"http://127.0.0.1:{port}/api",
                login=settings.temp_login,
                password=Secret(settings.temp_password),
                concurrency=4,
                timeout_seconds=10,
            ),
            quota=QuotaConfig(limit=DEMO_LIMIT, window_seconds=DEMO_WINDOW_SECONDS),
            harvest=HarvestConfig(phones=phones, start=start, end=end, window=Grain.DAY),
            store=StoreConfig(path=store),
        )

        plan = pull_plan(phones, start, end, Grain.DAY)
        return await harvest(config, plan, progress=progress)
    finally:
        await runner.cleanup()


Shown = tuple[str, list[str], list[tuple[Any, ...]]]


def showcase(store: Path) -> list[Shown]:
    """``(title, columns, rows)`` of each ``SHOWCASE`` query over ``store``; a view not bundled
    yet is skipped, and if none ran, the ``FALLBACK_QUERY`` (rows per phone) is shown instead."""
    shown = []
    for title, sql in SHOWCASE:
        try:
            columns, rows = _rows(store, sql)
        except Exception:  # a view not bundled yet: the fallback below still shows data
            continue
        shown.append((title, columns, rows))
    if not shown:
        shown.append(("Rows per phone", *_rows(store, FALLBACK_QUERY)))
    return shown


def _rows(store: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    from harvester.analysis import connect, prepare_sql, run_query

    checked = prepare_sql(store, sql)
    with connect(store) as con:
        result = run_query(con, store, checked)
        return result.columns, [row for batch in result.batches for row in batch]
