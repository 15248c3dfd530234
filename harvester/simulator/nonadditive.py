"""A server whose ranges are not additive: the failure request economy must detect.

Why it exists: that a range reply is the item-wise sum of its days is inferred, not documented
(``shared/spec/voicetrends-api.md``, "Range arithmetic"). The planner derives days by
subtraction and checks a sample of them by direct fetches; testing that check needs a server that
breaks the rule. With ``non_additive = p``, a seeded share ``p`` of the multi-day, non-empty range
replies is off from the sum of its days on one item: a few calls added to, or taken from, its
``visits`` and ``disconnect`` (so the item still looks plausible). Single days are never touched
(day-by-day truth stays exact) and empty ranges stay empty (counters are never negative, so empty
pruning stays safe, as the issue assumes).
"""

from __future__ import annotations

import datetime as dt

from harvester.simulator.sampling import seeded_rng
from harvester.simulator.traffic import Counts, Key

_MAX_OFFSET = 3  # calls added or removed: small, so only an exact comparison can see it


def perturbed(
    sums: dict[Key, Counts],
    seed: int,
    phones: tuple[str, ...],
    start: dt.date,
    end: dt.date,
    share: float,
) -> dict[Key, Counts]:
    """``sums`` as a non-additive server would report the range ``start..end`` of ``phones``."""
    if share <= 0.0 or start >= end or not sums:
        return sums
    rng = seeded_rng(seed, "non-additive", phones, start.toordinal(), end.toordinal())
    if rng.random() >= share:
        return sums
    keys = sorted(sums)
    key = keys[int(rng.random() * len(keys))]
    v, f, nm, ni, tr, d = sums[key]
    offset = 1 + int(rng.random() * _MAX_OFFSET)
    if rng.random() < 0.5 and min(v, d) > offset:
        offset = -offset
    out = dict(sums)
    out[key] = (v + offset, f, nm, ni, tr, d + offset)
    return out
