"""Durable, atomic writes of the store's small local files (``store.json``).

The recipe (write a temp name, fsync it, rename over the final name, fsync the folder) is what
makes a crash leave either the whole file or nothing. The tables' own files are written by
delta-rs, whose commit (a new log entry, created only if absent) is the atomic step.
"""

from __future__ import annotations

import os
from pathlib import Path

from harvester.store.schema import TMP_SUFFIX


def temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{TMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (renames, new files, deletions) durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
