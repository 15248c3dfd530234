"""The item record: the columns a Diagnostic Flow reply yields for each item it lists.

This is the vocabulary the API layer (which parses replies into rows) and the store (which keeps
them) share, so that neither has to import the other: the API layer produces Arrow rows in
:func:`item_schema`, the store takes them as they are.
"""

from __future__ import annotations

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
