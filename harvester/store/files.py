"""Durable, atomic file writes: the only way any Parquet file enters the store.

The recipe (write a temp name, fsync it, rename over the final name, fsync the folder) is what
makes a crash leave either the whole file or nothing: rename is atomic on POSIX, the file's fsync
makes its bytes durable before the name points at them, and the folder's fsync makes the name
itself durable. Temp names start with a dot and end in ``.tmp`` so that no reader glob
(``*.parquet``) and no hive-aware engine ever opens a half-written file.

Several files of one flush are written first and renamed together, then their folders are synced
once each: the per-file cost that batching saves is mostly these fsyncs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harvester.store.schema import COMPRESSION, TMP_SUFFIX


def temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{TMP_SUFFIX}")


def write_parquet(
    final: Path,
    table: pa.Table,
    dictionary: list[str],
    metadata: Mapping[str, str],
) -> Path:
    """Write ``table`` to the temp name of ``final``, fsynced; return the temp path (not renamed).

    ``metadata`` goes into the file's key-value metadata (provenance a reader can see without the
    harvester: writer version, run, batch).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in metadata.items()})
    table = table.replace_schema_metadata(merged)
    with open(tmp, "wb") as handle:
        pq.write_table(
            table,
            handle,
            compression=COMPRESSION,
            use_dictionary=dictionary,
            write_statistics=True,
        )
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


class ParquetSink:
    """One Parquet file written in row groups as rows arrive: what compaction streams into.

    Rows are buffered until ``row_group_rows`` are there, so however the caller slices its
    batches the file gets full row groups (good compression and statistics) and memory holds one
    row group, not the whole file. :meth:`close` returns the fsynced temp path, like
    :func:`write_parquet`; on an error the temp file is left for :func:`remove_temps`.
    """

    def __init__(
        self,
        final: Path,
        schema: pa.Schema,
        dictionary: list[str],
        metadata: Mapping[str, str],
        row_group_rows: int,
    ) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self.temp = temp_path(final)
        self.rows = 0
        merged = dict(schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        self._schema = schema
        self.row_group_rows = row_group_rows
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._handle = open(self.temp, "wb")  # noqa: SIM115 - closed in close()
        self._writer = pq.ParquetWriter(
            self._handle,
            schema.with_metadata(merged),
            compression=COMPRESSION,
            use_dictionary=dictionary,
            write_statistics=True,
        )

    def write(self, table: pa.Table) -> None:
        """Append rows (cast to the sink's schema); full row groups go to the file at once."""
        self._pending.append(table.cast(self._schema))
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        while self._pending_rows >= self.row_group_rows:
            self._write_group(self.row_group_rows)

    def _write_group(self, rows: int) -> None:
        pending = pa.concat_tables(self._pending)
        self._writer.write_table(pending.slice(0, rows), row_group_size=rows)
        rest = pending.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> Path:
        """Write what is buffered, fsync, close; the temp path (not renamed)."""
        try:
            if self._pending_rows:
                self._write_group(self._pending_rows)
            self._writer.close()
            self._handle.flush()
            os.fsync(self._handle.fileno())
        finally:
            self._handle.close()
        return self.temp

    def abandon(self) -> None:
        """Close without finishing the file (an error elsewhere); the temp file stays behind."""
        with contextlib.suppress(Exception):
            self._writer.close()
        self._handle.close()


def publish(temps: Iterable[Path]) -> int:
    """Rename each temp file onto its final name, then fsync every touched folder once.

    Returns the bytes published. The parents of new partition folders are synced too, so the
    folder entry itself survives a power cut.
    """
    folders: set[Path] = set()
    size = 0
    for tmp in temps:
        final = tmp.with_name(tmp.name[1 : -len(TMP_SUFFIX)])
        size += tmp.stat().st_size
        os.replace(tmp, final)
        folders.add(final.parent)
        folders.add(final.parent.parent)
    for folder in sorted(folders):
        fsync_dir(folder)
    return size


def remove(paths: Iterable[Path]) -> int:
    """Delete files (already-missing ones are fine), sync their folders; return bytes freed."""
    folders: set[Path] = set()
    freed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            freed += path.stat().st_size
            path.unlink()
        folders.add(path.parent)
    for folder in sorted(folders):
        fsync_dir(folder)
    return freed


def remove_temps(bases: Iterable[Path]) -> int:
    """Delete leftover temp files of a crashed writer under ``bases``; only under the lock."""
    leftovers = [
        path
        for base in bases
        if base.is_dir()
        for path in base.rglob(f".*{TMP_SUFFIX}")
        if path.is_file()
    ]
    remove(leftovers)
    return len(leftovers)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (renames, new files, deletions) durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
