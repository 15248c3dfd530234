"""Which month partition a writer stored each job's rows in, in 4 bytes a day.

A later fetch of a job in the same run must replace the rows the writer stored for it, so the
writer remembers their partition. Kept as a dict of job keys that was ~160 bytes a job: 16 MB of
a 100,000-job pull's resident set, the largest thing its heap grew by.
"""

from __future__ import annotations

import datetime as dt
from array import array


class StoredMonths:
    """Which month partition this writer stored each job's rows in: per phone, one month
    number for each day of the span its jobs cover (0: none). A dict of job keys took ~160
    bytes a job, 16 MB of a 100,000-job pull's resident set; this takes 4 bytes a day."""

    __slots__ = ("_phones",)

    def __init__(self) -> None:
        self._phones: dict[str, tuple[int, array[int]]] = {}

    def get(self, phone: str, period: dt.date) -> str | None:
        span = self._phones.get(phone)
        if span is None:
            return None
        base, months = span
        at = period.toordinal() - base
        code = months[at] if 0 <= at < len(months) else 0
        return f"{code // 12:04d}-{code % 12 + 1:02d}" if code else None  # as s.month_of

    def set(self, phone: str, period: dt.date, window_start: dt.date) -> None:
        day = period.toordinal()
        code = window_start.year * 12 + window_start.month - 1  # > 0 for any year from 1
        span = self._phones.get(phone)
        if span is None:
            self._phones[phone] = (day, array("I", [code]))
            return
        base, months = span
        if day < base:
            months[0:0] = array("I", bytes(4 * (base - day)))
            base = day
            self._phones[phone] = (base, months)
        elif day - base >= len(months):
            months.extend(array("I", bytes(4 * (day - base - len(months) + 1))))
        months[day - base] = code
