"""Removing the rows a SQL predicate matches from a Delta table's files: which files a replace
or a delete removes, and the rows of theirs that must be written again.

Why here and not delta-rs's ``delete``/``overwrite(predicate=...)``: those rewrite a file that
holds both matching and other rows with delta-rs's own writer, which writes no page checksums
(:mod:`harvester.store.parquet_files`). So the harvester does what they do: a file all of whose
rows match is removed; a file some of whose rows match is removed and its other rows written again
(with the new rows of a replace, one file per partition, as delta-rs does); the other files are
untouched. The caller writes and commits it all in one transaction.

The predicate is the SQL text delta-rs took (``month IN ('2024-03') AND job_key IN (...)``,
``batch_id = 7``), evaluated by DuckDB over each candidate file's columns it names, with the
partition values as columns. A row matches where the predicate is TRUE (NULL does not match, as in
delta-rs). A predicate that starts with a condition on the partition column (``month = '...'``,
``month IN (...)``: every partitioned one the harvester builds) reads only those partitions' files;
one that names only partition columns reads no file at all (a compaction's ``month = '...'``).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from harvester.store.parquet_files import Target

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction, RemoveAction

# The columns that name a candidate file and a row of it in the query that finds the matches.
_FILE, _ROW = "harvester_file", "harvester_row"
_STRING = r"'(?:[^']|'')*'"
_PARTITION_IN = re.compile(rf"^\s*(\w+)\s+IN\s*\(\s*({_STRING}(?:\s*,\s*{_STRING})*)\s*\)", re.I)
_PARTITION_EQ = re.compile(rf"^\s*(\w+)\s*=\s*({_STRING})", re.I)
_REST = re.compile(r"^\s*(AND\b|$)", re.I)

_duckdb_lock = threading.Lock()
_duckdb: duckdb.DuckDBPyConnection | None = None


def _cursor() -> duckdb.DuckDBPyConnection:
    """A cursor of one in-memory DuckDB database kept for the process: a new connection costs
    ~60 ms, a cursor ~10 us (one per thread at a time, as DuckDB requires)."""
    global _duckdb
    with _duckdb_lock:
        if _duckdb is None:
            import duckdb

            _duckdb = duckdb.connect()
        return _duckdb.cursor()


@dataclass(frozen=True, slots=True)
class ActiveFile:
    """One file of a table's current version, as its add action names it."""

    path: str  # as the log names it
    size: int | None
    rows: int | None
    partition: dict[str, str | None]


def active_files(table: DeltaTable, partition_by: list[str]) -> list[ActiveFile]:
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows:
        return []
    columns = {key: actions.column(f"partition.{key}").to_pylist() for key in partition_by}
    return [
        ActiveFile(path, size, rows, {key: columns[key][i] for key in partition_by})
        for i, (path, size, rows) in enumerate(
            zip(
                actions.column("path").to_pylist(),
                actions.column("size_bytes").to_pylist(),
                actions.column("num_records").to_pylist(),
                strict=True,
            )
        )
    ]


def partition_filter(predicate: str, partition_by: list[str]) -> set[str] | None:
    """The partition values a predicate of the form ``key IN (...) [AND ...]`` or
    ``key = '...' [AND ...]`` allows, or None (any: every file is a candidate). A predicate with
    an ``OR`` anywhere is not narrowed (``a AND b OR c`` is ``(a AND b) OR c``)."""
    if re.search(r"\bOR\b", re.sub(_STRING, "''", predicate), re.I):
        return None
    for pattern in (_PARTITION_IN, _PARTITION_EQ):
        match = pattern.match(predicate)
        if match and match[1] in partition_by and _REST.match(predicate[match.end() :]):
            return {v[1:-1].replace("''", "'") for v in re.findall(_STRING, match[2])}
    return None


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What removing the matched rows takes: the files to remove, and the rows of theirs that
    did not match (with their partition values), to be written again."""

    removes: list[RemoveAction]
    remainders: list[pa.Table]
    rows_removed: int


def without_matches(
    where: Target, table: DeltaTable, schema: pa.Schema, partition_by: list[str], predicate: str
) -> Rewrite:
    """What removing the rows ``predicate`` matches from ``table``'s current version takes."""
    from deltalake.transaction import RemoveAction

    allowed = partition_filter(predicate, partition_by)
    files = [
        f
        for f in active_files(table, partition_by)
        if allowed is None or any(f.partition.get(k) in allowed for k in partition_by)
    ]
    names = _named_columns(predicate, [f.name for f in schema if f.name not in partition_by])
    removes: list[RemoveAction] = []
    remainders: list[pa.Table] = []
    removed = 0
    for index, (rows, total) in sorted(_matching_rows(where, files, names, predicate).items()):
        active = files[index]
        if len(rows) < total:
            remainders.append(_remainder(where, active, rows, partition_by))
        now = int(time.time() * 1000)
        removes.append(RemoveAction(active.path, True, now, active.size, active.partition))
        removed += len(rows)
    return Rewrite(removes, remainders, removed)


def discard(where: Target, adds: list[AddAction]) -> None:
    """Delete files written for a commit that did not happen (best effort)."""
    for add in adds:
        with contextlib.suppress(OSError):
            where.filesystem.delete_file(where.path(unquote(add.path)))


def _named_columns(predicate: str, columns: list[str]) -> list[str]:
    """The columns the predicate names (outside its string literals)."""
    named = set(re.findall(r"[A-Za-z_]\w*", re.sub(_STRING, "''", predicate)))
    return [c for c in columns if c in named]


def _matching_rows(
    where: Target, files: list[ActiveFile], names: list[str], predicate: str
) -> dict[int, tuple[pa.Array, int]]:
    """Per file (its index in ``files``) that the predicate matches: the row numbers it
    matches, and its row count. One query over the named columns of every candidate file with
    each file's partition values: a 500-job ``IN`` list costs DuckDB ~10 ms to plan, and only a
    plain ``WHERE`` (not ``(...) IS TRUE``) makes a hash lookup of it (~4x faster)."""
    import pyarrow as pa

    if not files:
        return {}
    parts, totals = [], []
    for index, active in enumerate(files):
        if names:
            columns = _read(where, active, names)
            total, rows = columns.num_rows, columns.num_rows
            part = {name: columns.column(name) for name in names}
        else:  # only partition values named: a file matches whole or not at all
            total = active.rows if active.rows is not None else _read(where, active, []).num_rows
            rows, part = 1, {}
        for key, value in active.partition.items():
            part[key] = pa.repeat(pa.scalar(value, pa.string()), rows)
        part[_FILE] = pa.repeat(pa.scalar(index, pa.int64()), rows)
        part[_ROW] = pa.array(range(rows), pa.int64())
        parts.append(pa.table(part))
        totals.append(total)
    frame = pa.concat_tables(parts, promote_options="default")
    cursor = _cursor()
    try:
        cursor.register("harvester_rows", frame)
        found = _arrow(cursor.sql(f"SELECT {_FILE}, {_ROW} FROM harvester_rows WHERE {predicate}"))
    finally:
        cursor.close()
    grouped = found.group_by(_FILE).aggregate([(_ROW, "list")]).to_pylist()
    matched = {}
    for group in grouped:
        index = group[_FILE]
        rows = pa.array(group[f"{_ROW}_list"], pa.int64())
        matched[index] = (rows if names else pa.array(range(totals[index])), totals[index])
    return matched


def _literal(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _arrow(relation: Any) -> pa.Table:
    """A DuckDB relation as an Arrow table (DuckDB 2 has only ``to_arrow_table``)."""
    to_arrow = getattr(relation, "to_arrow_table", None) or relation.arrow
    table: pa.Table = to_arrow()
    return table


def _read(where: Target, active: ActiveFile, columns: list[str] | None) -> pa.Table:
    """Columns of one file (all for None), read through the table's filesystem."""
    import pyarrow.parquet as pq

    with where.filesystem.open_input_file(where.path(unquote(active.path))) as handle:
        return pq.ParquetFile(handle).read(columns=columns)


def _remainder(
    where: Target, active: ActiveFile, matched: pa.Array, partition_by: list[str]
) -> pa.Table:
    """The rows of ``active`` whose numbers are not in ``matched``, with its partition values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = _read(where, active, None)
    numbers = pa.array(range(rows.num_rows), pa.int64())
    rows = rows.filter(pc.invert(pc.is_in(numbers, value_set=matched)))
    for key in partition_by:
        rows = rows.append_column(key, pa.repeat(pa.scalar(active.partition[key]), rows.num_rows))
    return rows
