"""The tables' Parquet files, written by the harvester itself (pyarrow) with page checksums, and
the Delta add actions that commit them.

Why not delta-rs's writer: deltalake 1.6.6's ``WriterProperties`` has no page-checksum option, so
a bit flipped inside a page of a file it wrote decodes to other values without an error. pyarrow
writes each page's CRC-32 into its header (``write_page_checksum``) and checks it when a reader
asks (``page_checksum_verification``: ``harvester verify`` does). The files are committed through
delta-rs's own transaction (:meth:`harvester.store.tables.Tables.append` and friends), so the
Delta log, its conflict check and its checkpoints are delta-rs's as before.

What delta-rs wrote, kept so every reader sees the same table: the folder layout and names
(``month=YYYY-MM/part-00000-<uuid>-c000.zstd.parquet``), zstd at its default level, one row
group per file up to parquet-rs's default size, and the per-file statistics in the add action
(``numRecords``, and ``minValues``/``maxValues``/``nullCount`` of the first 32 columns, binary
ones without any, timestamps to the millisecond and strings to 64 bytes as delta-rs truncates
them): the views, ``verify`` (its column-bounds check) and any engine's data skipping read them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from harvester.store import schema as s

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    from deltalake.transaction import AddAction

# parquet-rs's default largest row group (what delta-rs wrote): a flush and a compacted month
# (~210,000 rows) are one row group each.
ROW_GROUP_ROWS = 1024 * 1024
# A stream's rows (a compaction, a migration) are buffered up to this many Arrow bytes before
# they become a row group, so a rewrite holds a bounded amount whatever the partition's size (a
# compacted month of data is ~30 MB of Arrow, of raw bodies ~40 MB: one row group each).
BUFFER_BYTES = 64 * 1024 * 1024
# Delta's default ``delta.dataSkippingNumIndexedCols``: statistics of the first 32 columns.
STATS_COLUMNS = 32
# parquet-rs's default statistics truncation, so delta-rs's string bounds: 64 bytes.
STATS_STRING_BYTES = 64
# The journals of files on their way into a commit (:class:`Journal`), in the store's local folder.
JOURNAL_PREFIX = ".writing-"
# Partition values become folder names as they are: the harvester's are months (YYYY-MM); any
# other character would need the Hive/Delta escaping the log and the folder must then agree on.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class Target:
    """Where one table's files live: a pyarrow filesystem and the table's folder on it (``""``
    on object storage, whose filesystem is rooted at the table)."""

    filesystem: pafs.FileSystem
    base: str

    def path(self, relative: str) -> str:
        return self.base + relative


def target(table_uri: str, storage_options: dict[str, str] | None) -> Target:
    """The filesystem of a table: the local one for a folder, delta-rs's object store (the same
    storage options and environment as its commits) for a URL."""
    import pyarrow.fs as pafs

    if "://" not in table_uri:
        return Target(pafs.LocalFileSystem(), table_uri.rstrip("/") + "/")
    from deltalake.fs import DeltaStorageHandler

    return Target(pafs.PyFileSystem(DeltaStorageHandler(table_uri, storage_options)), "")


# -- files on their way into a commit ----------------------------------------------------------


class Journal:
    """The files one commit is about to add, named in a small local file until the commit is
    made or they are deleted again.

    Why: a writer killed between writing a file and committing it leaves a file no version
    holds, which a plain Parquet reader of the folder would count, and which delta-rs's vacuum
    never deletes (it deletes only files a commit removed, so that a user's own files are safe).
    The next vacuum (:func:`clean_unfinished`, under the store's lock, when no commit is under way)
    deletes exactly the files a journal names that the table does not hold.
    """

    def __init__(self, folder: Path, kind: str) -> None:
        self.path = folder / f"{JOURNAL_PREFIX}{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._handle: IO[str] | None = None

    def record(self, relative: str) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - see close()
        self._handle.write(relative + "\n")
        self._handle.flush()  # in the page cache before the file exists: survives kill -9

    def done(self) -> None:
        """The commit was made, or its files deleted: nothing left to clean."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop recording; the journal stays for the next vacuum unless ``done`` was called."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def unfinished_journals(folder: Path, kind: str) -> list[Path]:
    """The journals of table ``kind`` in ``folder`` that no finished commit removed."""
    return sorted(folder.glob(f"{JOURNAL_PREFIX}{kind}-*"))


def clean_unfinished(folder: Path, kind: str, where: Target, active: set[str]) -> int:
    """Delete the files of table ``kind`` that journals in ``folder`` name and ``active`` (the
    relative paths of the table's current version) does not; then the journals. Returns how
    many files were deleted. Only with no commit of this table under way (the store's lock and
    write mutex held)."""
    deleted = 0
    for journal in unfinished_journals(folder, kind):
        try:
            named = journal.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for relative in named:
            if relative in active:
                continue
            try:
                where.filesystem.delete_file(where.path(relative))
                deleted += 1
            except FileNotFoundError:
                pass
        journal.unlink(missing_ok=True)
    return deleted


# -- statistics ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Stats:
    """A file's Delta statistics, gathered chunk by chunk as its rows are written."""

    columns: list[pa.Field]
    rows: int = 0
    low: dict[str, Any] = field(default_factory=dict)
    high: dict[str, Any] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)

    def add(self, chunk: pa.Table) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.rows += chunk.num_rows
        for f in self.columns:
            if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
                continue  # delta-rs records no statistics of binary columns
            column = chunk.column(f.name)
            self.nulls[f.name] = self.nulls.get(f.name, 0) + column.null_count
            bounds = pc.min_max(column)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is None:
                continue
            if f.name not in self.low or low < self.low[f.name]:
                self.low[f.name] = low
            if f.name not in self.high or high > self.high[f.name]:
                self.high[f.name] = high

    def json(self) -> str:
        low = {k: _json_value(v, upper=False) for k, v in self.low.items()}
        high = {k: _json_value(v, upper=True) for k, v in self.high.items()}
        return json.dumps(
            {
                "numRecords": self.rows,
                "minValues": low,
                "maxValues": high,
                "nullCount": self.nulls,
            },
            separators=(",", ":"),
        )


def _json_value(value: Any, *, upper: bool) -> Any:
    """A bound as delta-rs writes it in the log: timestamps to the millisecond (truncated),
    strings to STATS_STRING_BYTES (a maximum then raised to stay an upper bound)."""
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.UTC) if value.tzinfo else value
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and len(value.encode()) > STATS_STRING_BYTES:
        return _truncated(value, upper=upper)
    return value


def _truncated(text: str, *, upper: bool) -> str:
    """``text`` cut to at most STATS_STRING_BYTES of UTF-8 at a character boundary; for an upper
    bound its last character that can be is raised by one (none can: ``text`` whole)."""
    cut = text.encode()[:STATS_STRING_BYTES].decode(errors="ignore")
    if not upper:
        return cut
    size = len(cut.encode())
    for index in range(len(cut) - 1, -1, -1):
        point = ord(cut[index]) + 1
        if 0xD800 <= point <= 0xDFFF:
            point = 0xE000
        if point > 0x10FFFF:
            continue
        raised = cut[:index] + chr(point)
        if len(raised.encode()) <= size:
            return raised
    return text


# -- writing ------------------------------------------------------------------------------------


class _OpenFile:
    """One Parquet file being written: its writer, its buffered rows and its statistics."""

    def __init__(
        self,
        where: Target,
        file_schema: pa.Schema,
        partition: dict[str, str],
        journal: Journal | None,
    ) -> None:
        import pyarrow.parquet as pq

        folder = "".join(f"{k}={v}/" for k, v in partition.items())
        self.relative = f"{folder}part-00000-{uuid.uuid4()}-c000.zstd.parquet"
        if journal is not None:
            journal.record(self.relative)
        self.partition = partition
        self.where = where
        if where.base:  # a local folder: its partition folder may not exist yet
            where.filesystem.create_dir(where.path(folder.rstrip("/")), recursive=True)
        self.sink = where.filesystem.open_output_stream(where.path(self.relative))
        self.writer = pq.ParquetWriter(
            self.sink,
            file_schema,
            compression=s.COMPRESSION,
            write_page_checksum=True,
        )
        self.stats = _Stats(list(file_schema)[:STATS_COLUMNS])
        self.buffer: list[pa.Table] = []
        self.buffered = 0

    def add(self, chunk: pa.Table) -> None:
        self.stats.add(chunk)
        self.buffer.append(chunk)
        self.buffered += chunk.nbytes

    def flush(self) -> None:
        """Write the buffered rows as row groups."""
        import pyarrow as pa

        if self.buffer:
            rows = pa.concat_tables(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
            self.writer.write_table(rows, row_group_size=ROW_GROUP_ROWS)
        self.buffer, self.buffered = [], 0

    def close(self) -> AddAction:
        from deltalake.transaction import AddAction

        self.flush()
        self.writer.close()
        size = self.sink.tell()
        self.sink.close()
        return AddAction(
            self.relative,
            size,
            self.partition,
            int(time.time() * 1000),
            True,
            self.stats.json(),
        )

    def abandon(self) -> None:
        """Close and delete a file whose write failed (best effort: it is no part of the table
        either way, and ``verify`` lists what is left)."""
        for step in (self.writer.close, self.sink.close, self._delete):
            with contextlib.suppress(Exception):  # the original error is what the caller reports
                step()

    def _delete(self) -> None:
        self.where.filesystem.delete_file(self.where.path(self.relative))


def write_files(
    where: Target,
    sources: Sequence[pa.Table | pa.RecordBatchReader],
    schema: pa.Schema,
    partition_by: list[str],
    journal: Journal | None = None,
) -> list[AddAction]:
    """Write the rows of ``sources`` (tables or streams, in turn) as Parquet files with page
    checksums, one per partition, in ``schema``'s types; the add actions that commit them (none
    for no rows). Each file is named in ``journal`` before it is created.

    On an error the files written so far are deleted and the error propagates (OSError for the
    disk or the object store).
    """
    import pyarrow as pa

    file_schema = pa.schema([f for f in schema if f.name not in partition_by])
    files: dict[tuple[str, ...], _OpenFile] = {}
    try:
        for chunk in (chunk for rows in sources for chunk in _chunks(rows, schema)):
            for values, part in _partitions(chunk, partition_by):
                if not part.num_rows:
                    continue
                open_file = files.get(values)
                if open_file is None:
                    partition = dict(zip(partition_by, values, strict=True))
                    open_file = _OpenFile(where, file_schema, partition, journal)
                    files[values] = open_file
                open_file.add(part.select(file_schema.names))
            if sum(f.buffered for f in files.values()) >= BUFFER_BYTES:
                for open_file in files.values():
                    open_file.flush()
        return [open_file.close() for open_file in files.values()]
    except BaseException:
        for open_file in files.values():
            open_file.abandon()
        raise


def _chunks(rows: pa.Table | pa.RecordBatchReader, schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows in ``schema``'s column order and types (a table whole, a stream batch by
    batch); a missing column or a type that does not convert raises ValueError."""
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        if rows.num_rows:
            yield _conform(rows, schema)
        return
    for batch in rows:
        if batch.num_rows:
            yield _conform(pa.Table.from_batches([batch]), schema)


def _conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    missing = [name for name in schema.names if name not in rows.column_names]
    if missing:
        raise ValueError(f"rows without the table's column(s) {', '.join(missing)}")
    rows = rows.select(schema.names)
    return rows if rows.schema.equals(schema) else rows.cast(schema)


def _partitions(
    rows: pa.Table, partition_by: list[str]
) -> Iterable[tuple[tuple[str, ...], pa.Table]]:
    """The rows per partition value (one partition column, as every harvester table has)."""
    import pyarrow.compute as pc

    if not partition_by:
        return [((), rows)]
    (key,) = partition_by
    column = rows.column(key)
    values = column.unique().to_pylist()
    for value in values:
        if value is None or not _SAFE_VALUE.match(str(value)):
            raise ValueError(f"{key} value {value!r} cannot name a partition folder")
    if len(values) == 1:
        return [((str(values[0]),), rows)]
    return [((str(v),), rows.filter(pc.equal(column, v))) for v in values]
