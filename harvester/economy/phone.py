"""One phone's range tree: which ranges to ask for next, and what each reply proves.

Why it exists: this is the arithmetic of issue 14 for a single number. The requested days that
are not yet resolved form runs; each run is the root of a tree of day ranges. A node whose
totals are known (fetched, or derived by subtraction) is resolved at once when it is empty or a
single day; otherwise it is split and all its children but the newest are fetched, the newest
being the node minus its fetched siblings. Hence every split costs one request less than it has
pieces, and a tree with ``L`` leaves costs ``L`` requests: never more than one per day, and far
fewer where whole ranges are empty. Modes of a node:

- ``TREE``: cut in two on calendar boundaries (:func:`~harvester.economy.split.halves`), so
  where history starts is found in about log2(days) probes and empty weekends stay whole;
- ``FLAT``: a month of a dense number, cut straight into days (month minus days);
- ``RECHECK``: sync: a stored run fetched again; equal to the stored sum means unchanged, else
  its newest day is fetched and the rest compared again by subtraction;
- ``PLAIN``: derivation off: ranges are fetched only to prune empty ones, every piece fetched.

A subtraction whose remainder is zero resolves every unfetched sibling as empty at once. A
reply that arrives for a range already derived is compared with it for free. Requests go out
oldest days first (depth first through the calendar), so days are proven in date order and the
share of non-empty days is known early: once it looks dense, a month goes straight to days.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from harvester.economy.model import (
    DayRange,
    DayResolution,
    Kind,
    Mismatch,
    Proof,
    Purpose,
    RangeRefused,
    Request,
    Verified,
)
from harvester.economy.run import RunState
from harvester.economy.split import calendar_pieces, chunks, halves, months, runs, single_days
from harvester.economy.totals import EMPTY, Totals

# A week or less of data is fetched day by day when derivation is off: splitting it further
# costs more requests than the empty days it could prune.
_PLAIN_DAYS_UPTO = 7
# Days resolved before the share of non-empty ones says whether the number is dense: two weeks
# tell a weekday-only line (5/7) from a busy one.
_DENSITY_AFTER_DAYS = 14


class Mode(Enum):
    TREE = "tree"
    FLAT = "flat"
    RECHECK = "recheck"
    PLAIN = "plain"


@dataclass(eq=False, slots=True)
class _Node:
    span: DayRange
    mode: Mode
    parent: _Node | None = None
    totals: Totals | None = None
    proof: Proof | None = None
    fetched: bool = False
    failed: bool = False
    children: list[_Node] = field(default_factory=list)
    task: _Task | None = None  # queued or in flight


@dataclass(eq=False, slots=True)
class _Task:
    request: Request
    node: _Node
    epoch: int
    withdrawn: bool = False


class PhonePlanner:
    """The range tree of one phone; see :class:`harvester.economy.EconomyPlanner` for the API."""

    def __init__(
        self,
        phone: str,
        days: Iterable[dt.date],
        run: RunState,
        serials: Iterable[int],
        *,
        density: float | None = None,
        recheck: Mapping[dt.date, Totals] | None = None,
    ) -> None:
        self.phone = phone
        self._run = run
        self._serials = iter(serials)
        self._dense = density is not None and density >= run.policy.dense_share
        self._seen = self._seen_nonempty = 0  # days resolved in this run, and those with data
        self._recheck = dict(recheck or {})
        self._open: set[dt.date] = set(days) | set(self._recheck)
        self._queue: list[tuple[dt.date, int, _Task]] = []  # a heap: oldest days first
        self._inflight: dict[Request, _Task] = {}
        self._outbox: list[DayResolution] = []
        self._by_additivity: set[dt.date] = set()  # resolved here as derived or unchanged
        self._epoch = 0
        self._plan()

    # the caller's verbs (through EconomyPlanner) --------------------------------------------------

    def next_requests(self, limit: int) -> list[Request]:
        out: list[Request] = []
        while self._queue and len(out) < limit:
            task = heapq.heappop(self._queue)[2]
            if not task.withdrawn:
                self._inflight[task.request] = task
                out.append(task.request)
        return out

    def on_totals(self, request: Request, totals: Totals) -> None:
        task = self._take(request)
        self._run.limits.accepted(len(request.span))
        node = task.node
        if task.epoch != self._epoch:
            self._loose(request.span, totals)
        elif request.purpose is Purpose.VERIFY:
            self._verified(node, totals)
        elif node.totals is not None:  # derived while the request was in flight: a free check
            if node.totals != totals:
                self._mismatch(node.span, node.totals, totals)
        else:
            node.totals, node.proof, node.fetched = totals, Proof(node.span), True
            self._known(node)
            if node.parent is not None:
                self._after_child(node.parent)

    def on_refused(self, request: Request) -> None:
        task = self._take(request)
        if task.epoch != self._epoch:
            return  # the re-plan after a mismatch covers these days already
        if len(request.span) == 1:
            self._failed(task.node)  # a single day refused is a real 400, not "too long"
            return
        self._run.limits.refused(len(request.span))
        self._run.events.append(RangeRefused(self.phone, request.span))
        self._failed(task.node)
        self._plan_span(task.node.span, task.node.mode)

    def on_failed(self, request: Request) -> None:
        task = self._take(request)
        if task.epoch == self._epoch:
            self._failed(task.node)

    def drain(self) -> list[DayResolution]:
        out, self._outbox = self._outbox, []
        return out

    @property
    def busy(self) -> bool:
        return bool(self._inflight) or any(not t.withdrawn for _, _, t in self._queue)

    def unresolved(self) -> list[dt.date]:
        return sorted(self._open)

    def rebuild(self) -> None:
        """Derivation failed: forget the tree, fetch again what additivity proved, re-plan."""
        self._epoch += 1
        for _, _, task in self._queue:
            task.withdrawn = True
        self._queue.clear()
        self._open |= self._by_additivity
        self._by_additivity.clear()
        self._dense = self._looks_dense()
        self._plan()

    # planning -------------------------------------------------------------------------------------

    def _plan(self) -> None:
        for span in runs(self._open):
            days = list(span.days())
            for part in runs(d for d in days if d in self._recheck):
                self._plan_span(part, Mode.RECHECK)
            for part in runs(d for d in days if d not in self._recheck):
                self._plan_span(part, Mode.TREE)

    def _plan_span(self, span: DayRange, mode: Mode) -> None:
        """Roots over ``span``, whose totals are unknown, each fetched."""
        if not self._run.derive:
            if mode is Mode.RECHECK or self._dense:
                pieces, mode = single_days(span), Mode.PLAIN
            else:
                pieces, mode = chunks(span, self._run.cap()), Mode.PLAIN
        elif mode is Mode.RECHECK:
            pieces = chunks(span, self._run.cap())
        elif self._dense or mode is Mode.FLAT:
            cap = self._run.cap()
            pieces, mode = [c for m in months(span) for c in chunks(m, cap)], Mode.FLAT
        else:
            pieces = chunks(span, self._run.cap())
        purpose = Purpose.RECHECK if mode is Mode.RECHECK else Purpose.PROBE
        for piece in pieces:
            self._fetch(_Node(piece, mode), purpose)

    def _looks_dense(self) -> bool:
        """Dense by the caller's hint, or by what this run has resolved so far: then a month's
        days are fetched straight away (fewer derivations, nothing to prune anyway)."""
        if self._dense:
            return True
        if self._seen < _DENSITY_AFTER_DAYS:
            return False
        return self._seen_nonempty >= self._run.policy.dense_share * self._seen

    def _fetch(self, node: _Node, purpose: Purpose) -> None:
        if len(node.span) == 1 and purpose is not Purpose.VERIFY:
            purpose = Purpose.DAY if purpose is not Purpose.RECHECK else purpose
        request = Request(self.phone, node.span, purpose, next(self._serials))
        task = _Task(request, node, self._epoch)
        node.task = task
        heapq.heappush(self._queue, (node.span.start, request.serial, task))

    def _take(self, request: Request) -> _Task:
        task = self._inflight.pop(request, None)
        if task is None:
            raise ValueError(f"{request} is not a request of this planner in flight")
        if task.node.task is task:
            task.node.task = None
        return task

    # what a known total proves -----------------------------------------------------------------

    def _known(self, node: _Node) -> None:
        totals = node.totals
        assert totals is not None and node.proof is not None
        if not node.fetched:
            if not self._run.derive:
                return  # the re-plan after the mismatch takes these days
            if totals.has_negative():
                self._mismatch(node.span, totals, None)
                return
        if node.mode is Mode.RECHECK:
            self._known_recheck(node, totals)
        elif totals.is_empty() or len(node.span) == 1:
            self._leaf(node, totals)
        elif node.mode is Mode.PLAIN:
            short = len(node.span) <= _PLAIN_DAYS_UPTO or self._looks_dense()
            pieces = single_days(node.span) if short else calendar_pieces(node.span)
            self._split(node, pieces, Mode.PLAIN, fetch_all=True)
        elif node.mode is Mode.FLAT or (self._looks_dense() and len(months(node.span)) == 1):
            self._split(node, single_days(node.span), Mode.FLAT)
        else:
            self._split(node, halves(node.span), Mode.TREE)

    def _known_recheck(self, node: _Node, totals: Totals) -> None:
        stored = Totals.sum(self._recheck[d] for d in node.span.days())
        if len(node.span) == 1 and (node.fetched or totals != stored):
            self._leaf(node, totals)  # a day fetched directly, or found to differ
        elif totals == stored:
            self._resolve(node.span, Kind.UNCHANGED, node.proof)
        else:  # late data lands on the newest days: fetch the newest, compare the rest
            rest = DayRange(node.span.start, node.span.end - dt.timedelta(days=1))
            newest = DayRange.day(node.span.end)
            node.children = [_Node(newest, Mode.RECHECK, node), _Node(rest, Mode.RECHECK, node)]
            self._fetch(node.children[0], Purpose.RECHECK)

    def _split(
        self, node: _Node, pieces: list[DayRange], mode: Mode, *, fetch_all: bool = False
    ) -> None:
        node.children = [_Node(p, mode, node) for p in pieces]
        for child in node.children if fetch_all else node.children[:-1]:
            self._fetch(child, Purpose.SPLIT)

    def _after_child(self, parent: _Node) -> None:
        """A child is known: derive what the parent's total now proves about its siblings."""
        if not self._run.derive or parent.totals is None or parent.mode is Mode.PLAIN:
            return
        known = [c for c in parent.children if c.totals is not None]
        unknown = [c for c in parent.children if c.totals is None]
        parts = Totals.sum(c.totals for c in known if c.totals is not None)
        rest = parent.totals - parts
        if rest.has_negative():
            self._mismatch(parent.span, rest, None)
            return
        if not unknown and not rest.is_empty():  # every part known, and they miss some calls
            self._mismatch(parent.span, parts, parent.totals)
            return
        if rest.is_empty():
            targets = unknown  # nothing left: every sibling not yet known is empty
        elif len(unknown) == 1 and not self._in_flight(unknown[0]):  # failed ones too
            targets = unknown
        else:
            return
        assert parent.proof is not None
        minus = tuple(c.span for c in known if c.fetched)
        proof = Proof(parent.proof.plus, parent.proof.minus + minus)
        for child in targets:
            if child.task is not None and child.task.request not in self._inflight:
                child.task.withdrawn = True  # not sent yet: no longer needed
                child.task = None
            child.totals, child.proof = rest if len(targets) == 1 else EMPTY, proof
        if len(targets) == 1:
            self._known(targets[0])
            return
        for span in runs(d for child in targets for d in child.span.days()):
            # adjacent siblings derived empty together are one derivation (one check at most)
            self._leaf(_Node(span, parent.mode, parent, EMPTY, proof), EMPTY)

    def _in_flight(self, node: _Node) -> bool:
        return node.task is not None and node.task.request in self._inflight

    def _leaf(self, node: _Node, totals: Totals) -> None:
        """An empty range or a single day with known totals: resolve it (or have it checked)."""
        assert node.proof is not None
        if node.fetched:
            kind = Kind.EMPTY if totals.is_empty() else Kind.FETCHED
            self._resolve(node.span, kind, node.proof, totals)
        elif self._run.sample():
            self._fetch(node, Purpose.VERIFY)
        else:
            self._resolve(node.span, Kind.DERIVED, node.proof, totals)

    def _verified(self, node: _Node, fetched: Totals) -> None:
        assert node.totals is not None
        if fetched == node.totals:
            self._run.events.append(Verified(self.phone, node.span))
        else:
            self._mismatch(node.span, node.totals, fetched)
        if fetched.is_empty() or len(node.span) == 1:
            self._loose(node.span, fetched)

    def _loose(self, span: DayRange, totals: Totals) -> None:
        """A fetched reply outside the current tree: keep what it proves on its own."""
        if totals.is_empty():
            self._resolve(span, Kind.EMPTY, Proof(span))
        elif len(span) == 1:
            self._resolve(span, Kind.FETCHED, Proof(span), totals)

    def _failed(self, node: _Node) -> None:
        """No reply for ``node``: the sibling it was to prove is fetched instead, and then it is
        derived from its parent; without a parent its days stay open (unresolved)."""
        node.failed = True
        parent = node.parent
        if parent is None or parent.mode is Mode.PLAIN:
            return
        for sibling in parent.children:
            if sibling.totals is None and not sibling.failed and sibling.task is None:
                self._fetch(sibling, Purpose.SPLIT)

    def _mismatch(self, span: DayRange, derived: Totals, fetched: Totals | None) -> None:
        self._run.mismatch(Mismatch(self.phone, span, derived, fetched))

    def _resolve(
        self, span: DayRange, kind: Kind, proof: Proof | None, totals: Totals = EMPTY
    ) -> None:
        assert proof is not None
        rows = totals.rows()
        for day in span.days():
            if day not in self._open:
                continue
            self._open.discard(day)
            self._seen += 1
            self._seen_nonempty += bool(rows) or kind is Kind.UNCHANGED
            day_rows = self._recheck[day].rows() if kind is Kind.UNCHANGED else rows
            self._outbox.append(DayResolution(self.phone, day, kind, day_rows, proof))
            if kind in (Kind.DERIVED, Kind.UNCHANGED):
                self._by_additivity.add(day)
