"""``store.json``: what format and grain a store folder holds, read and checked by every command.

Every command that opens a store reads this first, so a store of another format is refused in
one line before anything touches its tables: an older layout names ``harvester migrate``, a newer
one asks for a newer harvester, a damaged file names the field that is wrong.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvester import __version__
from harvester.errors import StoreError
from harvester.jobs import Grain
from harvester.store import schema as s

if TYPE_CHECKING:
    from harvester.store.tables import Tables

# The table properties (Delta table configuration) that repeat store.json in every table, so a
# store without store.json (deleted, or on object storage) still says what it holds.
GRAIN_PROPERTY = "harvester.grain"
FORMAT_PROPERTY = "harvester.format_version"


def read_store_file(layout: s.Layout) -> dict[str, Any] | None:
    """The validated content of ``store.json``, or None if the folder has none.

    Raises StoreError (one line) for an unreadable or malformed file, a format this harvester
    does not write, or the older layout (then naming ``harvester migrate``). A folder without
    ``store.json`` whose ledger is in the older layout is refused the same way.
    """
    path = layout.store_file
    if layout.url is not None:
        # on object storage the data table's description holds it (harvester.store.location)
        from harvester.store.tables import Tables

        described = Tables(layout).description()
        if described is None:
            return None
        where = f"{layout.name}/{s.DATA_DIR}"
        try:
            return _checked(json.loads(described), where, layout)
        except ValueError:
            raise StoreError(f"{where}: its description is not a harvester store's") from None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if layout.legacy_ledger_files():
            raise StoreError(_legacy_message(layout)) from None
        return _rebuild_store_file(layout)
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path} is unreadable: {exc}") from None
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"{path} is not valid JSON: {exc}") from None
    return _checked(info, path, layout)


def _checked(info: Any, path: object, layout: s.Layout) -> dict[str, Any]:
    if not isinstance(info, dict) or info.get("format") != s.FORMAT_NAME:
        raise StoreError(f"{path} is not a harvester store file")
    version = info.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StoreError(
            f"{path}: format_version must be a whole number, found {json.dumps(version)}"
        )
    if version == s.LEGACY_FORMAT_VERSION:
        raise StoreError(_legacy_message(layout))
    if version != s.FORMAT_VERSION:
        raise StoreError(
            f"store.path {layout.name} has format version {version}; this harvester reads and "
            f"writes version {s.FORMAT_VERSION}: use a harvester that knows version {version}"
        )
    grain = info.get("grain")
    if grain not in {g.value for g in Grain}:
        raise StoreError(
            f"{path}: grain must be one of {', '.join(g.value for g in Grain)}, "
            f"found {json.dumps(grain)}"
        )
    return info


def _legacy_message(layout: s.Layout) -> str:
    return (
        f"store.path {layout.root} is in the older layout (format version "
        f"{s.LEGACY_FORMAT_VERSION}): convert it once with `harvester migrate` on this store "
        "(it makes a backup first)"
    )


def _table_properties(tables: Tables) -> dict[str, str] | None:
    """The grain and format the first existing table records (None: no table exists)."""
    for kind in (s.LEDGER_DIR, s.DATA_DIR, s.RAW_DIR):
        table = tables.open(kind) if (tables.layout.root / kind / "_delta_log").is_dir() else None
        if table is not None:
            configuration = table.metadata().configuration
            return {k: configuration.get(k, "") for k in (GRAIN_PROPERTY, FORMAT_PROPERTY)}
    return None


def _rebuild_store_file(layout: s.Layout) -> dict[str, Any] | None:
    """``store.json`` was lost but the tables exist: rebuild it from their own metadata, never
    from a config; a store whose tables do not record it is refused in one line."""
    from harvester.store.tables import Tables

    properties = _table_properties(Tables(layout))
    if properties is None:
        return None
    grain, version = properties[GRAIN_PROPERTY], properties[FORMAT_PROPERTY]
    if not grain or not version:
        raise StoreError(
            f"{layout.store_file} is missing and the store's tables do not record their grain: "
            f"restore {s.STORE_FILE} from a backup"
        )
    if version != str(s.FORMAT_VERSION):
        raise StoreError(
            f"store.path {layout.root} has format version {version}; this harvester reads and "
            f"writes version {s.FORMAT_VERSION}: use a harvester that knows version {version}"
        )
    if grain not in {g.value for g in Grain}:
        raise StoreError(f"store.path {layout.root}: its tables record an unknown grain {grain}")
    with contextlib.suppress(OSError):  # read-only: the tables still say it; a writer rebuilds
        write_store_file(layout.store_file, Grain(grain))
    info = json.loads(layout.store_file.read_text()) if layout.store_file.exists() else None
    return info or {"format": s.FORMAT_NAME, "format_version": s.FORMAT_VERSION, "grain": grain}


def check_table_metadata(tables: Tables, grain: Grain | None) -> list[str]:
    """What the tables' own metadata says against ``store.json`` (empty when they agree)."""
    problems = []
    for kind in s.KINDS:
        table = tables.open(kind)
        if table is None:
            continue
        configuration = table.metadata().configuration
        found, version = configuration.get(GRAIN_PROPERTY), configuration.get(FORMAT_PROPERTY)
        if found is None or version is None:
            problems.append(f"the {kind} table does not record the store's grain and format")
        elif grain is not None and found != grain.value:
            problems.append(f"the {kind} table records {found} windows, {s.STORE_FILE} {grain}")
        elif version != str(s.FORMAT_VERSION):
            problems.append(f"the {kind} table records format version {version}")
    return problems


def record_table_metadata(tables: Tables, grain: Grain) -> None:
    """Write grain and format into each table's configuration (one commit per table, once;
    only under the store's lock or on a store nobody else uses yet)."""
    from harvester.store.tables import _commit

    wanted = table_properties(grain)
    changed = False
    for kind in s.KINDS:
        table = tables.open(kind)
        if table is None:
            continue
        configuration = table.metadata().configuration
        if all(configuration.get(k) == v for k, v in wanted.items()):
            continue
        table.alter.set_table_properties(
            wanted, raise_if_not_exists=False, commit_properties=_commit(None, "configure")
        )
        changed = True
    if changed:  # the tables opened before are old versions now
        tables.forget()


def table_properties(grain: Grain) -> dict[str, str]:
    """The table properties that repeat ``store.json`` (a new table is created with them)."""
    return {GRAIN_PROPERTY: grain.value, FORMAT_PROPERTY: str(s.FORMAT_VERSION)}


def write_store_file(store_file: Path, grain: Grain) -> None:
    """Write ``store.json`` atomically (temp name, fsync, rename, folder fsync)."""
    from harvester.store.files import fsync_dir, temp_path

    tmp = temp_path(store_file)
    tmp.write_text(json.dumps(store_info(grain), indent=2) + "\n")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, store_file)
    fsync_dir(store_file.parent)


def store_info(grain: Grain) -> dict[str, object]:
    """What ``store.json`` holds (and, for every engine to read, the data table's description)."""
    return {
        "format": s.FORMAT_NAME,
        "format_version": s.FORMAT_VERSION,
        "grain": grain.value,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "created_by": f"harvester {__version__}",
    }
