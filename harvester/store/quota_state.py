"""The quota's state between runs: one small JSON file in the store folder.

A run that starts in a quota window an earlier run of this store spent would otherwise spend a
probe and meet a 429 to learn it. So the harvest layer keeps the last window the gate saw here
(what it is, is the gate's business: :class:`harvester.gate.LastWindow`, plus the API it came from)
and hands it to the next run's gate. The store only keeps a JSON object: written atomically (temp,
fsync, rename, fsync of the folder), read back as a dict or None. It is an optimisation: a file
that is missing, unreadable or not an object reads as None, and a write that fails is logged and
forgotten, never a failed run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harvester.store.files import fsync_dir, temp_path

log = logging.getLogger(__name__)

QUOTA_STATE_FILE = "quota.json"
# Far larger than the few numbers it holds: anything bigger is not ours, and is not read.
MAX_STATE_BYTES = 64 * 1024


def load_quota_state(root: Path) -> dict[str, Any] | None:
    """The object last saved in the store folder ``root``; None if there is none (or junk)."""
    path = root / QUOTA_STATE_FILE
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
        state = json.loads(raw) if len(raw) <= MAX_STATE_BYTES else None
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def save_quota_state(root: Path, state: Mapping[str, object]) -> bool:
    """Replace the saved object atomically; False (logged) if it could not be written."""
    path = root / QUOTA_STATE_FILE
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(state), allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(root)
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning("could not save the quota state to %s: %s", path, exc)
        return False
    return True
