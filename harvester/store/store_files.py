"""The files below a store that ``verify`` lists and ``verify --repair`` moves aside, in a local
folder or on object storage alike.

Why a module of its own: a local store's files are walked and renamed; an object store has
neither folders nor rename, so its objects are listed (one listing per table's prefix) and moved
by copy and delete, through delta-rs's object store (the same storage options and environment
as its commits). Either way a file is named by its *key*, its place below the store
(``data/month=2024-03/part-....parquet``), and shown by its local path or its URL.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harvester.store import schema as s
from harvester.store.parquet_files import target

LOG_DIR = "_delta_log"


def strays(layout: s.Layout, active: Mapping[str, list[str]]) -> list[str]:
    """Files inside the tables' folders that no table's current version names (``active``: per
    table, its files relative to it), as local paths or object URLs."""
    if layout.url is not None:
        return _object_strays(layout, active)
    found: list[Path] = []
    for kind in s.KINDS:
        folder = layout.root / kind
        if not folder.is_dir():
            continue
        held = {folder / path for path in active.get(kind, [])}
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not (dirpath == str(folder) and d == LOG_DIR)]
            found.extend(
                Path(dirpath, name) for name in filenames if Path(dirpath, name) not in held
            )
    return [str(path) for path in sorted(found)]


def _object_strays(layout: s.Layout, active: Mapping[str, list[str]]) -> list[str]:
    import pyarrow.fs as pafs

    filesystem = store_filesystem(layout)
    found: list[str] = []
    for kind in s.KINDS:
        held = {f"{kind}/{path}" for path in active.get(kind, [])}
        below = pafs.FileSelector(kind, recursive=True, allow_not_found=True)
        found += [
            f"{layout.url}/{entry.path}"
            for entry in filesystem.get_file_info(below)
            if entry.type == pafs.FileType.File
            and not entry.path.startswith(f"{kind}/{LOG_DIR}/")
            and entry.path not in held
        ]
    return sorted(found)


def key_of(layout: s.Layout, shown: str) -> str:
    """The key of a file shown by its local path or URL (one of ``strays``)."""
    return shown[len(str(layout.url or layout.root)) + 1 :]


def move_aside(layout: s.Layout, keys: list[str], aside: str) -> list[str]:
    """Move the files ``keys`` to ``aside/<key>`` below the store (a file already gone is
    skipped); where each went."""
    return _move_objects(layout, keys, aside) if layout.url else _move_files(layout, keys, aside)


def _move_files(layout: s.Layout, keys: list[str], aside: str) -> list[str]:
    moved = []
    for key in keys:
        source, place = layout.root / key, layout.root / aside / key
        if not source.exists():
            continue
        place.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, place)
        moved.append(str(place))
    return moved


def _move_objects(layout: s.Layout, keys: list[str], aside: str) -> list[str]:
    import pyarrow.fs as pafs

    filesystem = store_filesystem(layout)
    moved = []
    for key, info in zip(keys, filesystem.get_file_info(keys), strict=True):
        if info.type != pafs.FileType.File:
            continue
        filesystem.move(key, f"{aside}/{key}")
        moved.append(f"{layout.url}/{aside}/{key}")
    return moved


def store_filesystem(layout: s.Layout) -> Any:
    """A pyarrow filesystem rooted at an object store's URL."""
    return target(str(layout.url), layout.storage_options).filesystem
