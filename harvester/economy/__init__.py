"""Request economy: the same days for far fewer requests, by range arithmetic (issue 14).

A Diagnostic Flow reply for a range is (inferred) the item-wise sum of its days, and counters are
never negative. So an empty range proves all its days empty; a range minus its fetched parts
gives the rest; a lookback range equal to the sum of the stored days proves them unchanged.
This package plans requests on that basis: pure, synchronous, no HTTP, no store, no clock, so
the scheduler drives it and the ledger records what it proves.

The protocol (one :class:`EconomyPlanner` per run, i.e. per pull or sync)::

    planner = EconomyPlanner(EconomyPolicy(derive=store_says_derivation_ok), limits)
    planner.add_phone("6175550101", days_not_stored, density=share_of_nonempty_days_or_None)
    planner.add_phone("6175550103", [], recheck={day: stored_rows, ...})   # a sync's lookback
    while not planner.done:
        for request in planner.next_requests(free_slots):       # Request(phone, span, ...)
            send GET {base}{request.path}; then exactly one of:
            planner.on_rows(request, rows)     # 200: rows in harvester.items.COLUMNS order
            planner.on_refused(request)        # 400: a long range is asked again shorter
            planner.on_failed(request)         # retries spent: derived later, or unresolved
        archive the reply, then for r in planner.resolved(): ledger.record(r)
        for event in planner.events(): ...    # Mismatch: store "derivation off", warn once

Worked example (``tests/test_economy.py::test_worked_example_of_the_docstring``): a
weekday-only line, backfilled over the week 2024-06-03..09 (Mon..Sun), no density known, one
request at a time. Requests and what they prove:

1. ``20240603-20240609`` (probe): not empty. Split Mon-Wed / Thu-Sun: Mon-Wed is fetched,
   Thu-Sun will be the week minus Mon-Wed.
2. ``20240603-20240605``: so Thu-Sun is derived, and split Thu-Fri (fetch) / Sat-Sun. Mon-Wed
   splits Mon (fetch) / Tue-Wed. The oldest days go first.
3. ``20240603``: Mon fetched; Tue-Wed derived, split Tue (fetch) / Wed.
4. ``20240604``: Tue fetched; Wed = Mon-Wed - Mon - Tue. That is the run's first derivation,
   so before it is reported it is checked:
5. ``20240605`` (verify): it agrees; Wed is reported as fetched.
6. ``20240606-20240607``: Sat-Sun = week - Mon-Wed - Thu-Fri is all zeros: both days are
   *derived empty*, with no request of their own. Thu-Fri splits Thu (fetch) / Fri.
7. ``20240606``: Thu fetched; Fri = Thu-Fri - Thu (derived).

Six requests for seven days, plus the run's first verification. For a number idle over a year the
first probe comes back empty: 1 request for 365 days. A dense number (``density`` >=
``EconomyPolicy.dense_share``) fetches each month, then its days, the last one derived; a busy
number never costs more than one request per day plus the verification sample.

What each :class:`DayResolution` says (``kind`` and ``proof``; every range a proof names was
fetched, and its reply must be stored before the day is recorded):

- ``FETCHED``: the reply for that single day;
- ``EMPTY``: a fetched range holding the day was empty (needs only counters >= 0);
- ``DERIVED``: ``proof.plus`` minus every range of ``proof.minus`` (needs additivity);
- ``UNCHANGED``: sync: a range reply (minus fetched newer days) equals the stored days' sum;
  its rows are the stored ones, so only the ledger needs a new line.

Safety: the first derived day of a run and then one in ``verify_every`` is fetched directly
before it is reported (reported as ``FETCHED``, with a :class:`Verified` event). A difference, a
negative derived counter, or fetched parts that do not add up to their range is a
:class:`Mismatch` event: derivation is off for the rest of the run, every day the run derived or
confirmed unchanged is fetched again (and resolved again: a later resolution of a day
supersedes an earlier one), and the rest is planned with empty pruning only. Unchanged
lookbacks are not sampled (a sync would lose its saving), but they too are re-fetched after a
mismatch. A 400 on a range of several days lowers the longest range proposed (see
:class:`RangeLimits`, which the caller may keep across runs). Resuming is planning again: days
already recorded are simply not passed in.

Modules: :mod:`~.totals` (item-wise arithmetic), :mod:`~.model` (ranges, requests, proofs,
events, policy), :mod:`~.split` (calendar cuts), :mod:`~.phone` (one phone's range tree),
:mod:`~.run` (what a run's phones share), :mod:`~.planner` (the run-wide queue), :mod:`~.drive`
(driving a planner in-process against an answer function), :mod:`~.estimate` (expected requests
for ``plan``, from a number's density).
"""

from __future__ import annotations

from harvester.economy.drive import Answer, Outcome, drive
from harvester.economy.estimate import expected_requests
from harvester.economy.model import (
    DayRange,
    DayResolution,
    EconomyPolicy,
    Event,
    Kind,
    Mismatch,
    Proof,
    Purpose,
    RangeLimits,
    RangeRefused,
    Request,
    Verified,
)
from harvester.economy.planner import EconomyPlanner
from harvester.economy.totals import Row, Totals

__all__ = [
    "Answer",
    "DayRange",
    "DayResolution",
    "EconomyPlanner",
    "EconomyPolicy",
    "Event",
    "Kind",
    "Mismatch",
    "Outcome",
    "Proof",
    "Purpose",
    "RangeLimits",
    "RangeRefused",
    "Request",
    "Row",
    "Totals",
    "Verified",
    "drive",
    "expected_requests",
]
