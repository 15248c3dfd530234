"""``store.json``: what format and grain a store folder holds, read and checked by every command.

Every command that opens a store reads this first, so a store of another format is refused in
one line before anything touches its tables: an older layout names ``harvester migrate``, a newer
one asks for a newer harvester, a damaged file names the field that is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from harvester.errors import StoreError
from harvester.jobs import Grain
from harvester.store import schema as s


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
        where = f"{layout.url}/{s.DATA_DIR}"
        try:
            return _checked(json.loads(described), where, layout)
        except ValueError:
            raise StoreError(f"{where}: its description is not a harvester store's") from None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if layout.legacy_ledger_files():
            raise StoreError(_legacy_message(layout)) from None
        return None
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
        f"{s.LEGACY_FORMAT_VERSION}): convert it once with `harvester migrate --store "
        f"{layout.root}` (it makes a backup first)"
    )
