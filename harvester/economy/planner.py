"""The run-wide planner: every phone's range tree behind one queue of requests.

Why it exists: the scheduler wants one object to ask "what next?" and to tell "this came back",
whatever the phone; the safety rules (verification sample, derivation off after a mismatch,
the server's range limit) span phones. See the package docstring for the protocol.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping

from harvester.economy.model import (
    DayResolution,
    EconomyPolicy,
    Event,
    RangeLimits,
    Request,
)
from harvester.economy.phone import PhonePlanner
from harvester.economy.run import RunState
from harvester.economy.totals import Row, Totals


class EconomyPlanner:
    """Plans the requests of one run (a pull or a sync) over any number of phones."""

    def __init__(
        self, policy: EconomyPolicy | None = None, limits: RangeLimits | None = None
    ) -> None:
        self._run = RunState(policy or EconomyPolicy(), limits or RangeLimits())
        self._phones: dict[str, PhonePlanner] = {}
        self._serials = itertools.count(1)
        self._turn = 0  # round robin: every phone streams results from the start
        self.sent = 0  # requests handed out

    def add_phone(
        self,
        phone: str,
        days: Iterable[dt.date],
        *,
        density: float | None = None,
        recheck: Mapping[dt.date, Iterable[Row]] | None = None,
    ) -> None:
        """Plan ``days`` (not yet stored) and ``recheck`` (stored day -> its rows: a sync's
        lookback) of ``phone``. ``density``: the share of non-empty days the store knows of
        this number, or None; a dense number goes straight to days."""
        if phone in self._phones:
            raise ValueError(f"{phone} is already planned in this run")
        stored = {day: Totals.from_rows(rows) for day, rows in (recheck or {}).items()}
        self._phones[phone] = PhonePlanner(
            phone, days, self._run, self._serials, density=density, recheck=stored
        )

    def next_requests(self, limit: int = 1) -> list[Request]:
        """Up to ``limit`` requests to send now (fewer, or none, while replies are awaited).

        Ask again after every reply: what is handed out late can still be dropped when a
        subtraction makes it unnecessary."""
        out: list[Request] = []
        planners = list(self._phones.values())
        idle = 0
        while len(out) < limit and planners and idle < len(planners):
            planner = planners[self._turn % len(planners)]
            self._turn += 1
            got = planner.next_requests(1)
            idle = 0 if got else idle + 1
            out.extend(got)
        self.sent += len(out)
        return out

    def on_rows(self, request: Request, rows: Iterable[Row] | Totals) -> None:
        """A 200 reply for ``request``: its rows (``harvester.items.COLUMNS`` order; none for
        an empty reply). Store the reply (the raw archive) before recording what it resolves."""
        totals = rows if isinstance(rows, Totals) else Totals.from_rows(rows)
        self._phone(request).on_totals(request, totals)
        self._after()

    def on_refused(self, request: Request) -> None:
        """A 400 for ``request``: a long range is taken as too long and asked again shorter."""
        self._phone(request).on_refused(request)
        self._after()

    def on_failed(self, request: Request) -> None:
        """No usable reply in the end (retries spent): the range is derived from its parent
        once its sibling is fetched instead; failing that, its days stay unresolved this run."""
        self._phone(request).on_failed(request)
        self._after()

    def resolved(self) -> list[DayResolution]:
        """Days proven since the last call, in the order they were proven."""
        return [r for planner in self._phones.values() for r in planner.drain()]

    def events(self) -> list[Event]:
        """Mismatches, verifications and refusals since the last call."""
        out, self._run.events = self._run.events, []
        return out

    @property
    def done(self) -> bool:
        """Nothing left to send and nothing awaited."""
        return not any(planner.busy for planner in self._phones.values())

    @property
    def derivation_on(self) -> bool:
        """False once a mismatch was seen (or the policy said so): record it in the store."""
        return self._run.derive

    @property
    def limits(self) -> RangeLimits:
        """What the server said about range lengths, to keep for the next run."""
        return self._run.limits

    def unresolved(self) -> dict[str, list[dt.date]]:
        """Days left without proof (their requests failed), per phone."""
        return {p: days for p, planner in self._phones.items() if (days := planner.unresolved())}

    def _phone(self, request: Request) -> PhonePlanner:
        planner = self._phones.get(request.phone)
        if planner is None:
            raise ValueError(f"{request.phone} is not planned in this run")
        return planner

    def _after(self) -> None:
        if self._run.switch_pending:
            self._run.switch_pending = False
            for planner in self._phones.values():
                planner.rebuild()
