"""Expected requests for ``plan``: the planner run against a synthetic number of a given density.

Why it exists: ``plan`` must show the requests a pull would send with economy on, and the ETA
that follows, before sending anything. What the store knows of a number is its share of
non-empty days; a synthetic number whose days are non-empty with that chance (seeded by the
day, so the estimate is stable) is run through the real planner in-process, which costs no
request and a few milliseconds per year of days. Real data clusters (a number starts, a line is
closed at weekends), which ranges exploit better than independent days: the estimate errs high.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable

from harvester.economy.drive import drive
from harvester.economy.model import EconomyPolicy, Request
from harvester.economy.planner import EconomyPlanner
from harvester.economy.totals import Row

_PHONE = "0"  # the synthetic number's name: never sent anywhere
_ITEM = ("synthetic", "page", "form", "item")


def expected_requests(
    days: Iterable[dt.date], density: float | None, *, policy: EconomyPolicy | None = None
) -> int:
    """Requests the planner would send for ``days`` of a number with this share of non-empty
    days (None: unknown, taken as every day busy, the dearest case)."""
    wanted = list(days)
    share = 1.0 if density is None else min(1.0, max(0.0, density))
    busy = {d for d in wanted if random.Random(d.toordinal()).random() < share}

    def answer(request: Request) -> list[Row]:
        calls = sum(1 for d in request.span.days() if d in busy)
        return [(*_ITEM, calls, calls, 0, 0, 0, calls)] if calls else []

    planner = EconomyPlanner(policy)
    planner.add_phone(_PHONE, wanted, density=density)
    return drive(planner, answer).sent
