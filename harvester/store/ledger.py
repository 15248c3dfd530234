"""The job index: what the ledger says about every job, loaded once, compact in memory.

A pull of ten years of days for 150 numbers asks "is this job done?" 550,000 times, so the answer
must be a constant-time lookup, and holding it must cost megabytes, not the ~100 bytes per entry a
``dict`` of tuples would. Per phone, the index keeps dense arrays over the phone's span of periods,
one slot per period of the store's grain (a day, an ISO week, a month):

    states      bytearray     0 = never recorded, 1 = done, 2 = failed (latest record)
    attempts    array('H')    requests ever sent for the job, capped at 65,535
    done_start  array('i')    window of the latest done record, days since 1970-01-01
    done_end    array('i')

That is 11 bytes per slot: ~6 MB for 550,000 daily jobs. A store without ``store.json`` (so no
known grain) falls back to day slots, which is correct for any grain, just sparser.
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from harvester.jobs import Grain, period_start
from harvester.store import schema as s
from harvester.store.views import connect_base, retry_read

JobState = Literal["done", "failed"]
_STATES: tuple[JobState | None, ...] = (None, "done", "failed")
_CODES = {"done": 1, "failed": 2}
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
# array('H') holds 16 bits; a job tried more often than this is reported at the cap.
MAX_ATTEMPTS = 65_535
_NO_DAY = -(2**31)
# Rows converted to Python ints at a time while loading: bounds the transient memory of a load.
_LOAD_BATCH_ROWS = 65_536


def _days(day: dt.date) -> int:
    return day.toordinal() - _EPOCH_DAY


def _date(days: int) -> dt.date:
    return dt.date.fromordinal(days + _EPOCH_DAY)


def _slot_of_days(days: int, grain: Grain) -> int:
    """A period's slot number on the grain's own scale (consecutive periods, consecutive slots)."""
    if grain is Grain.DAY:
        return days
    if grain is Grain.WEEK:
        return days // 7  # periods are Mondays, 7 days apart: distinct floors
    day = _date(days)
    return day.year * 12 + day.month - 1


@dataclass(slots=True)
class _Phone:
    base: int
    states: bytearray
    attempts: array[int]
    done_start: array[int]
    done_end: array[int]
    last_done_end: int = _NO_DAY


class JobIndex:
    """Answers, per job key ``(phone, period)``: its state, attempts and stored window."""

    def __init__(self, grain: Grain | None = None) -> None:
        # Unknown grain: slots are days, which stays exact for any aligned or unaligned period.
        self.grain = grain or Grain.DAY
        self._exact = grain is not None
        self._phones: dict[str, _Phone] = {}
        self.done = 0
        self.failed = 0

    def _slot(self, key: tuple[str, dt.date]) -> tuple[_Phone, int] | None:
        entry = self._phones.get(key[0])
        if entry is None:
            return None
        period = key[1]
        if self._exact and period_start(period, self.grain) != period:
            return None  # not a period of this store's grain: never recorded
        position = _slot_of_days(_days(period), self.grain) - entry.base
        if 0 <= position < len(entry.states):
            return entry, position
        return None

    def state(self, key: tuple[str, dt.date]) -> JobState | None:
        """``done``, ``failed`` (the latest record) or None (never recorded)."""
        found = self._slot(key)
        return None if found is None else _STATES[found[0].states[found[1]]]

    def attempts(self, key: tuple[str, dt.date]) -> int:
        """Requests ever sent for the job, over all its records (0 if never recorded)."""
        found = self._slot(key)
        return 0 if found is None else found[0].attempts[found[1]]

    def done_window(self, key: tuple[str, dt.date]) -> tuple[dt.date, dt.date] | None:
        """``(window_start, window_end)`` of the job's visible (latest done) fetch, else None."""
        found = self._slot(key)
        if found is None or found[0].done_start[found[1]] == _NO_DAY:
            return None
        entry, position = found
        return _date(entry.done_start[position]), _date(entry.done_end[position])

    def last_done_end(self, phone: str) -> dt.date | None:
        """The latest ``window_end`` among the phone's done jobs (where a sync resumes)."""
        entry = self._phones.get(phone)
        if entry is None or entry.last_done_end == _NO_DAY:
            return None
        return _date(entry.last_done_end)

    def phones(self) -> list[str]:
        return sorted(self._phones)

    def __len__(self) -> int:
        return self.done + self.failed

    def __contains__(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], dt.date)):
            return False
        return self.state((str(key[0]), key[1])) is not None

    def __iter__(self) -> Iterator[tuple[str, dt.date]]:
        """Every recorded key (for tests and tools; plans use lookups)."""
        for phone in sorted(self._phones):
            entry = self._phones[phone]
            for position, code in enumerate(entry.states):
                if code:
                    yield phone, self._period_of(entry.base + position)

    def _period_of(self, slot: int) -> dt.date:
        if self.grain is Grain.DAY:
            return _date(slot)
        if self.grain is Grain.WEEK:
            return _date(slot * 7 + 4)  # day 4 (1970-01-05) was a Monday: the block's Monday
        return dt.date(slot // 12, slot % 12 + 1, 1)

    # -- loading ------------------------------------------------------------------------------

    def _load(self, root: Path) -> None:
        if not s.Layout(root).part_files(s.Layout(root).ledger):
            return
        con = connect_base(root)
        try:
            spans = retry_read(
                lambda: con.execute(
                    "SELECT phone, min(period), max(period) FROM ledger_files GROUP BY phone"
                ).fetchall()
            )
            for phone, first, last in spans:
                base = _slot_of_days(_days(first), self.grain)
                size = _slot_of_days(_days(last), self.grain) - base + 1
                self._phones[phone] = _Phone(
                    base=base,
                    states=bytearray(size),
                    attempts=array("H", bytes(2 * size)),
                    done_start=array("i", [_NO_DAY]) * size,
                    done_end=array("i", [_NO_DAY]) * size,
                )
            table = retry_read(lambda: con.sql(_INDEX_SQL).to_arrow_table())
        finally:
            con.close()
        for batch in table.to_batches(_LOAD_BATCH_ROWS):
            self._take(batch)

    def _take(self, batch: pa.RecordBatch) -> None:
        phones = batch.column("phone").to_pylist()
        periods = pc.cast(batch.column("period"), pa.int32()).to_pylist()
        states = batch.column("state").to_pylist()
        attempts = batch.column("attempts").to_pylist()
        starts = pc.cast(batch.column("done_start"), pa.int32()).to_pylist()
        ends = pc.cast(batch.column("done_end"), pa.int32()).to_pylist()
        grain = self.grain
        for phone, period, state, tries, start, end in zip(
            phones, periods, states, attempts, starts, ends, strict=True
        ):
            entry = self._phones[phone]
            position = _slot_of_days(period, grain) - entry.base
            code = _CODES[state]
            entry.states[position] = code
            entry.attempts[position] = min(tries, MAX_ATTEMPTS)
            if code == 1:
                self.done += 1
            else:
                self.failed += 1
            if start is not None and end is not None:
                entry.done_start[position] = start
                entry.done_end[position] = end
                entry.last_done_end = max(entry.last_done_end, end)


# One pass over the ledger: the latest state, the total attempts, and the window of the latest
# done record of every job.
_INDEX_SQL = """
SELECT phone, period,
       arg_max(state, seq) AS state,
       CAST(sum(attempts + prior_attempts) AS BIGINT) AS attempts,
       arg_max(window_start, seq) FILTER (WHERE state = 'done') AS done_start,
       arg_max(window_end, seq) FILTER (WHERE state = 'done') AS done_end
FROM ledger_files
GROUP BY phone, period
"""


def load_index(root: Path, grain: Grain | None) -> JobIndex:
    """The index of the store at ``root`` (empty if it has no ledger yet)."""
    index = JobIndex(grain)
    index._load(root)
    return index
