"""The item record: the columns a Diagnostic Flow reply yields for each item it lists.

This is the vocabulary the API layer (which parses replies into rows) and the store (which keeps
them) share, so that neither has to import the other: the API layer produces :class:`ItemRows`,
the store takes them as they are, as Python columns or as Arrow rows in :func:`item_schema`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

TEXT_FIELDS = ("page", "form", "item")
COUNTER_FIELDS = ("visits", "filled", "nomatch", "noinput", "transfer", "disconnect")
COLUMNS = ("application", *TEXT_FIELDS, *COUNTER_FIELDS)


def item_schema() -> pa.Schema:
    """The Arrow schema of one reply's rows: the texts as strings, the counters as int64.

    A function rather than a constant so that importing this module costs no pyarrow import
    (``harvester --help`` stays fast)."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(name, pa.string(), nullable=False) for name in ("application", *TEXT_FIELDS)]
        + [pa.field(name, pa.int64(), nullable=False) for name in COUNTER_FIELDS]
    )


@dataclass(slots=True, eq=True)
class ItemRows:
    """One reply's validated rows as one list per column, in :data:`COLUMNS` order.

    Why lists and not Arrow arrays from the start: a reply is ~20 items, and the store writes
    hundreds of replies as one file; concatenating Python lists and converting once per batch
    is several times cheaper than an Arrow array per reply. :meth:`to_arrow` gives the rows as
    Arrow for a consumer that wants them one reply at a time. ``len()`` is the number of rows.
    """

    application: list[str] = field(default_factory=list)
    page: list[str] = field(default_factory=list)
    form: list[str] = field(default_factory=list)
    item: list[str] = field(default_factory=list)
    visits: list[int] = field(default_factory=list)
    filled: list[int] = field(default_factory=list)
    nomatch: list[int] = field(default_factory=list)
    noinput: list[int] = field(default_factory=list)
    transfer: list[int] = field(default_factory=list)
    disconnect: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.application)

    def columns(self) -> dict[str, list[str] | list[int]]:
        """Column name -> values, in :data:`COLUMNS` order: what the store's writer takes."""
        return {name: getattr(self, name) for name in COLUMNS}

    def to_arrow(self) -> pa.RecordBatch:
        """The rows as one Arrow record batch in :func:`item_schema`."""
        import pyarrow as pa

        schema = item_schema()
        return pa.RecordBatch.from_arrays(
            [pa.array(getattr(self, f.name), f.type) for f in schema], schema=schema
        )

    def rows(self) -> Iterator[tuple[str, str, str, str, int, int, int, int, int, int]]:
        """The rows as tuples in :data:`COLUMNS` order (tests and debugging; not the hot path)."""
        return zip(
            self.application,
            self.page,
            self.form,
            self.item,
            self.visits,
            self.filled,
            self.nomatch,
            self.noinput,
            self.transfer,
            self.disconnect,
            strict=True,
        )
