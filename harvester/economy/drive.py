"""Running a planner against an answer function in-process: no HTTP, no quota, no clock.

Why it exists: the planner's request counts are a property of the data alone, so they can be
measured (benchmarks/economy.py), tested against the simulator's ground truth, and estimated for
``plan`` from a model of each number, without any server. Replies are answered in the order they
were sent, with ``concurrency`` requests outstanding, as a scheduler with that many connections
would see them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from harvester.economy.model import DayResolution, Event, Kind, Mismatch, Request
from harvester.economy.planner import EconomyPlanner
from harvester.economy.totals import Row

Answer = Callable[[Request], Iterable[Row] | None]  # None: the server refused it (400)


@dataclass(slots=True)
class Outcome:
    """What a driven run sent and proved."""

    requests: list[Request] = field(default_factory=list)
    days: dict[tuple[str, dt.date], DayResolution] = field(default_factory=dict)  # last wins
    resolutions: list[DayResolution] = field(default_factory=list)  # every one, in order
    events: list[Event] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.requests)

    @property
    def mismatches(self) -> list[Mismatch]:
        return [e for e in self.events if isinstance(e, Mismatch)]

    def kinds(self) -> Counter[Kind]:
        """Days per provenance kind, as finally resolved."""
        return Counter(r.kind for r in self.days.values())


def drive(planner: EconomyPlanner, answer: Answer, *, concurrency: int = 4) -> Outcome:
    """Send what ``planner`` proposes to ``answer`` until it is done; collect what it proves."""
    out = Outcome()
    waiting: deque[Request] = deque()
    while True:
        waiting.extend(planner.next_requests(concurrency - len(waiting)))
        if not waiting:
            break
        request = waiting.popleft()
        out.requests.append(request)
        rows = answer(request)
        if rows is None:
            planner.on_refused(request)
        else:
            planner.on_rows(request, rows)
        for resolution in planner.resolved():
            out.resolutions.append(resolution)
            out.days[resolution.phone, resolution.day] = resolution
        out.events.extend(planner.events())
    return out
