"""Item-wise totals of a reply: the values range arithmetic adds and subtracts.

Why it exists: every proof the planner builds (a range minus its fetched parts, a lookback
compared with its stored days) is arithmetic on a reply's items, keyed by
``(application, page, form, item)`` with the six counters of :mod:`harvester.items`. Items whose
counters are all zero are not kept, exactly as a reply does not list them, so two totals are
equal precisely when their replies would list the same rows. Results may go negative: that is how
a broken additivity shows, and the planner checks for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from harvester.items import COLUMNS, COUNTER_FIELDS

if TYPE_CHECKING:
    import pyarrow as pa

ItemKey = tuple[str, str, str, str]  # application, page, form, item
Counters = tuple[int, int, int, int, int, int]  # in harvester.items.COUNTER_FIELDS order
Row = tuple[str, str, str, str, int, int, int, int, int, int]  # harvester.items.COLUMNS order

_ZERO: Counters = (0, 0, 0, 0, 0, 0)


class Totals:
    """Immutable item-wise counter totals; ``+``, ``-``, ``==`` work item by item."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[ItemKey, Counters] | None = None) -> None:
        self._items: dict[ItemKey, Counters] = {
            k: v for k, v in (items or {}).items() if v != _ZERO
        }

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> Totals:
        """Totals of reply rows (an item listed twice is summed)."""
        items: dict[ItemKey, Counters] = {}
        for r in rows:
            key, counts = (r[0], r[1], r[2], r[3]), (r[4], r[5], r[6], r[7], r[8], r[9])
            before = items.get(key)
            items[key] = counts if before is None else _add(before, counts)
        return cls(items)

    @classmethod
    def from_table(cls, table: pa.Table) -> Totals:
        """Totals of a reply parsed into rows of :func:`harvester.items.item_schema`."""
        columns = [table.column(name).to_pylist() for name in COLUMNS]
        return cls.from_rows(zip(*columns, strict=True))

    @classmethod
    def sum(cls, parts: Iterable[Totals]) -> Totals:
        items: dict[ItemKey, Counters] = {}
        for part in parts:
            for key, counts in part._items.items():
                before = items.get(key)
                items[key] = counts if before is None else _add(before, counts)
        return cls(items)

    def rows(self) -> tuple[Row, ...]:
        """The rows a reply with these totals lists, sorted."""
        return tuple(sorted((*k, *v) for k, v in self._items.items()))

    def to_table(self) -> pa.Table:
        """The rows as an Arrow table of :func:`harvester.items.item_schema`."""
        from harvester.items import item_schema

        rows = self.rows()
        schema = item_schema()
        return schema.empty_table() if not rows else _table(rows, schema)

    def is_empty(self) -> bool:
        return not self._items

    def has_negative(self) -> bool:
        """Whether some counter is below zero: impossible for a reply, so additivity failed."""
        return any(min(v) < 0 for v in self._items.values())

    def negative_part(self) -> Totals:
        """Only the items with a counter below zero (what a warning about them should name)."""
        return Totals({k: v for k, v in self._items.items() if min(v) < 0})

    def describe(self) -> str:
        """A short human form, for a warning line: ``main.php/main_menu/selection visits=+3``."""
        parts = []
        for (_, page, form, item), counts in sorted(self._items.items())[:3]:
            changed = " ".join(
                f"{n}={c:+d}" for n, c in zip(COUNTER_FIELDS, counts, strict=True) if c
            )
            parts.append(f"{page}/{form}/{item} {changed}")
        more = len(self._items) - len(parts)
        return "; ".join(parts) + (f"; and {more} more items" if more > 0 else "")

    def __add__(self, other: Totals) -> Totals:
        return Totals.sum((self, other))

    def __sub__(self, other: Totals) -> Totals:
        items = dict(self._items)
        for key, counts in other._items.items():
            items[key] = _add(items.get(key, _ZERO), _neg(counts))
        return Totals(items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Totals) and self._items == other._items

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[ItemKey]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"Totals({len(self._items)} items)"


EMPTY = Totals()


def _add(a: Counters, b: Counters) -> Counters:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5])


def _neg(a: Counters) -> Counters:
    return (-a[0], -a[1], -a[2], -a[3], -a[4], -a[5])


def _table(rows: tuple[Row, ...], schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True))
    return pa.table({name: list(col) for name, col in zip(COLUMNS, columns, strict=True)}, schema)
