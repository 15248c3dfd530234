"""The job index: what the ledger says about every job, loaded once, compact in memory.

A pull of ten years of days for 150 numbers asks "is this job done?" 550,000 times, so the answer
must be a constant-time lookup, and holding it must cost megabytes, not the ~100 bytes per entry a
``dict`` of tuples would. Per phone, the index keeps dense arrays over the phone's span of periods,
one slot per period of the store's grain (a day, an ISO week, a month):

    states      bytearray     0 = never recorded, 1 = done, 2 = failed (latest record), 3 = failed
                              for good (recorded as ``rejected``: waits for --retry-failed)
    attempts    array('H')    requests ever sent for the job, capped at 65,535
    done_start  array('i')    window of the latest done record, days since 1970-01-01
    done_end    array('i')
    done_as_of  array('i')    the "today" of the run that made that record (late data)

That is 15 bytes per slot: ~8 MB for 550,000 daily jobs. A store without ``store.json`` (so no
known grain) falls back to day slots, which is correct for any grain, just sparser.
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from harvester.jobs import Grain, due_for_late_refetch, period_start
from harvester.store import schema as s

if TYPE_CHECKING:
    import pyarrow as pa

JobState = Literal["done", "failed"]
_STATES: tuple[JobState | None, ...] = (None, "done", "failed", "failed")
_DONE, _FAILED, _REJECTED = 1, 2, 3
# array('H') holds 16 bits; a job tried more often than this is reported at the cap.
MAX_ATTEMPTS = 65_535
_days = s.epoch_day
_date = s.from_epoch_day

# A window that is not there: the first date there is, days before any date a config accepts
# (config_values.EARLIEST_DATE), and a DATE in DuckDB too, so the loader reads every day column
# as it is stored (date32: epoch days) without arithmetic.
_NO_DATE = dt.date.min
_NO_DAY = _days(_NO_DATE)


def _slot_of(period: dt.date, grain: Grain) -> int:
    """A period's slot number on the grain's own scale: consecutive periods, consecutive slots.

    The one definition of the slots, asked by every lookup and by the loader (for each phone's
    first and last period); :func:`_period_of` is its inverse.
    """
    if grain is Grain.DAY:
        return _days(period)
    if grain is Grain.WEEK:
        return _days(period) // 7  # periods are Mondays, 7 days apart: distinct floors
    return period.year * 12 + period.month - 1


def _period_of(slot: int, grain: Grain) -> dt.date:
    """The period whose slot is ``slot`` (the inverse of :func:`_slot_of`)."""
    if grain is Grain.DAY:
        return _date(slot)
    if grain is Grain.WEEK:
        return _date(slot * 7 + 4)  # day 4 (1970-01-05) was a Monday: the block's Monday
    return dt.date(slot // 12, slot % 12 + 1, 1)


@dataclass(slots=True)
class _Phone:
    base: int
    states: bytearray
    attempts: array[int]
    done_start: array[int]
    done_end: array[int]
    done_as_of: array[int]
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
        position = self._position(entry, key[1])
        if 0 <= position < len(entry.states):
            return entry, position
        return None

    def _position(self, entry: _Phone, period: dt.date) -> int:
        """``period``'s index in ``entry``'s arrays (out of range if not recorded there)."""
        if self.grain is Grain.DAY:  # the common case, asked ~10**6 times by a large plan:
            return _days(period) - entry.base  # _slot_of, inlined: a day's slot is its day
        if self._exact and period_start(period, self.grain) != period:
            return -1  # not a period of this store's grain: never recorded
        return _slot_of(period, self.grain) - entry.base

    def count_states(self, phone: str, first: dt.date, last: dt.date) -> tuple[int, int, int]:
        """``(done, failed, rejected)``: how many of ``phone``'s periods from ``first`` to
        ``last`` (both period starts, inclusive) are done, failed (rejected ones included) and
        rejected, counted in C over the state array.

        A plan over 550,000 daily jobs asks this once per phone rather than :meth:`state` once
        per job (~1.5 s of Python).
        """
        entry = self._phones.get(phone)
        if entry is None or first > last:
            return 0, 0, 0
        start = max(self._position(entry, first), 0)
        end = min(self._position(entry, last) + 1, len(entry.states))
        if start >= end:
            return 0, 0, 0
        states = entry.states[start:end]
        rejected = states.count(_REJECTED)
        return states.count(_DONE), states.count(_FAILED) + rejected, rejected

    def count_late(
        self, phone: str, first: dt.date, last: dt.date, today: dt.date, lookback_days: int
    ) -> int:
        """How many of ``phone``'s daily jobs from ``first`` to ``last`` a sync fetches again
        for late data: done, last fetched before ``today`` and at most ``lookback_days`` after
        the day (the rule of :meth:`harvester.plan.Plan.is_pending`, over the arrays).
        """
        entry = self._phones.get(phone)
        if entry is None or first > last or self.grain is not Grain.DAY:
            return 0
        start = max(self._position(entry, first), 0)
        end = min(self._position(entry, last) + 1, len(entry.states))
        if start >= end:
            return 0
        today_days = _days(today)
        return sum(
            1
            for code, as_of, day_end in zip(
                entry.states[start:end],
                entry.done_as_of[start:end],
                entry.done_end[start:end],
                strict=True,
            )
            if code == _DONE
            and as_of != _NO_DAY
            and due_for_late_refetch(as_of, day_end, today_days, lookback_days)
        )

    def state(self, key: tuple[str, dt.date]) -> JobState | None:
        """``done``, ``failed`` (the latest record) or None (never recorded)."""
        found = self._slot(key)
        return None if found is None else _STATES[found[0].states[found[1]]]

    def rejected(self, key: tuple[str, dt.date]) -> bool:
        """Whether the job's latest record failed for good (the writer was told ``rejected``)."""
        found = self._slot(key)
        return found is not None and found[0].states[found[1]] == _REJECTED

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

    def done_as_of(self, key: tuple[str, dt.date]) -> dt.date | None:
        """The "today" of the run that made the job's visible fetch, or None (late data)."""
        found = self._slot(key)
        if found is None or found[0].done_as_of[found[1]] == _NO_DAY:
            return None
        return _date(found[0].done_as_of[found[1]])

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
                    yield phone, _period_of(entry.base + position, self.grain)

    # -- loading ------------------------------------------------------------------------------

    def _load(self, ledger_files: list[str]) -> None:
        """Build the dense arrays in DuckDB and copy their buffers: no per-job Python work.

        DuckDB aggregates the ledger per job and expands each phone's span into one row per
        period of the grain (joining ``periods``: every period from the first to the last, one
        per slot, made here by :func:`_period_of`), returned as fixed-width columns in period
        order. So SQL never numbers slots: a phone's arrays start at the slot of its first
        period, and its share of a column is a slice of an Arrow buffer, copied straight into
        its ``array`` (a date column's buffer holds epoch days, the stored form).
        """
        from harvester.store.views import new_connection, parquet_source

        if not ledger_files:
            return
        con = new_connection(ordered=False)
        try:
            source = parquet_source(ledger_files, partitioned=False)
            jobs = _JOBS_SQL.format(source=source, max_attempts=MAX_ATTEMPTS)
            con.execute(f"CREATE TEMP TABLE jobs AS {jobs}")
            first, last = con.execute(_BOUNDS_SQL).fetchall()[0]
            if first is None:
                return  # a ledger without records
            con.register("periods", self._periods(first, last))
            spans = con.execute(_SPANS_SQL).fetchall()
            dense = con.sql(_DENSE_SQL).to_arrow_table().combine_chunks()
        finally:
            con.close()
        code, attempts, done_start, done_end, done_as_of = (
            (dense.column(name).chunk(0), width)
            for name, width in (
                ("code", 1),
                ("attempts", 2),
                ("done_start", 4),
                ("done_end", 4),
                ("done_as_of", 4),
            )
        )
        start = 0
        for phone, first_period, last_period in spans:
            base = _slot_of(first_period, self.grain)
            end = start + _slot_of(last_period, self.grain) - base + 1
            entry = _Phone(
                base=base,
                states=bytearray(_buffer(code, start, end)),
                attempts=array("H", _buffer(attempts, start, end)),
                done_start=array("i", _buffer(done_start, start, end)),
                done_end=array("i", _buffer(done_end, start, end)),
                done_as_of=array("i", _buffer(done_as_of, start, end)),
            )
            entry.last_done_end = max(entry.done_end)
            self._phones[phone] = entry
            start = end
        self.done = sum(e.states.count(_DONE) for e in self._phones.values())
        self.failed = sum(
            e.states.count(_FAILED) + e.states.count(_REJECTED) for e in self._phones.values()
        )

    def _periods(self, first: dt.date, last: dt.date) -> pa.Table:
        """Every period of the grain from ``first``'s to ``last``'s, in order: one per slot."""
        import pyarrow as pa

        slots = range(_slot_of(first, self.grain), _slot_of(last, self.grain) + 1)
        periods = [_period_of(slot, self.grain) for slot in slots]
        return pa.table({"period": pa.array(periods, pa.date32())})


def _buffer(column: tuple[pa.Array, int], start: int, end: int) -> bytes:
    """Rows ``start:end`` of a fixed-width, null-free column as raw native-endian bytes."""
    values, width = column
    data = values.buffers()[1]
    first = (values.offset + start) * width
    chunk: bytes = data[first : first + (end - start) * width].to_pybytes()
    return chunk


# Per job: the latest state, the total attempts and the window of the latest done record.
_JOBS_SQL = """
SELECT phone, period,
       CAST(arg_max(CASE WHEN state = 'done' THEN 1
                         WHEN rejected THEN 3
                         ELSE 2 END, seq) AS UTINYINT) AS code,
       CAST(least(sum(attempts + prior_attempts), {max_attempts}) AS USMALLINT) AS attempts,
       arg_max(window_start, seq) FILTER (WHERE state = 'done') AS done_start,
       arg_max(window_end, seq) FILTER (WHERE state = 'done') AS done_end,
       arg_max(as_of, seq) FILTER (WHERE state = 'done') AS done_as_of
FROM (SELECT * FROM {source})
GROUP BY phone, period
"""

# The ledger's first and last period: ``periods`` holds every period from one to the other.
_BOUNDS_SQL = "SELECT min(period), max(period) FROM jobs"

# Each phone's first and last period, in phone order: the dense rows come in the same order, one
# per period between. A job whose period is not one of the grain's (the harvester never writes
# one, `harvester verify` reports it, lookups never ask for it) is left out, so it cannot shift
# the rows of the phones after it.
_SPANS = """
SELECT phone, min(period) AS first_period, max(period) AS last_period
FROM jobs SEMI JOIN periods USING (period)
GROUP BY phone
"""
_SPANS_SQL = f"{_SPANS} ORDER BY phone"

# One row per period of each phone's span (empty ones zero / no date), in phone and period order.
_DENSE_SQL = f"""
WITH spans AS (
    SELECT phone, period
    FROM ({_SPANS}) JOIN periods ON period BETWEEN first_period AND last_period
)
SELECT coalesce(code, CAST(0 AS UTINYINT)) AS code,
       coalesce(attempts, CAST(0 AS USMALLINT)) AS attempts,
       coalesce(done_start, DATE '{_NO_DATE}') AS done_start,
       coalesce(done_end, DATE '{_NO_DATE}') AS done_end,
       coalesce(done_as_of, DATE '{_NO_DATE}') AS done_as_of
FROM spans LEFT JOIN jobs USING (phone, period)
ORDER BY phone, period
"""


def load_index(ledger_files: list[str], grain: Grain | None) -> JobIndex:
    """The index of a ledger whose current version is ``ledger_files`` (empty: no ledger yet).

    A file that vanished under the read (a compaction's vacuum) raises duckdb.IOException:
    :meth:`Store.job_index` reads again with the new version's list.
    """
    index = JobIndex(grain)
    index._load(ledger_files)
    return index
