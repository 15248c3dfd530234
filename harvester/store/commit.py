"""One commit of new Parquet files and of the removal of the rows a predicate matches: what every
write of the store's tables is (append, replace, delete, overwrite of
:class:`harvester.store.tables.Tables`), one try at a time.

Why in two steps per try: the removal is worked out on the version the try reads
(:mod:`harvester.store.rewrite`) before anything is written, and the files (the new rows and the
rows of removed files that did not match, one file per partition, as delta-rs writes them:
:mod:`harvester.store.parquet_files`) are written just before the commit, so a kill rarely finds
files written and not committed; those it finds are named in the journal the next vacuum reads.
A try that loses to another writer's commit (``CommitFailedError``) deletes the files only it
wrote, and the caller tries again on the new version; a stream's rows can be read once, so its
files are written by the first try and kept. Files are deleted again only when the commit surely
did not happen: an error after the log entry was written must not take its files away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harvester.store.parquet_files import Journal, Target, write_files
from harvester.store.rewrite import Rewrite, discard, without_matches

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction


class FileCommit:
    """The rows to add and the predicate whose rows to remove, across the tries of one commit."""

    def __init__(
        self,
        where: Target,
        journal: Journal,
        rows: pa.Table | pa.RecordBatchReader | None,
        predicate: str | None,
        *,
        txn: bool,
    ) -> None:
        import pyarrow as pa

        self.where, self.journal, self.predicate, self.txn = where, journal, predicate, txn
        self.adding = rows is not None
        stream = isinstance(rows, pa.RecordBatchReader)
        # rows written at every try; a stream's, once (by the first)
        self._rows: list[pa.Table] = [rows] if isinstance(rows, pa.Table) else []
        self._stream = rows if stream else None
        self._streamed: list[AddAction] | None = None if stream else []

    def attempt(self, table: DeltaTable, properties: Any) -> bool:
        """Work out, write and commit on ``table``'s version; False if there was nothing to
        commit. ``CommitFailedError`` (another writer won) after deleting this try's files."""
        from deltalake.exceptions import CommitFailedError

        schema = _arrow_schema(table)
        partition_by = list(table.metadata().partition_columns)
        rewrite = (
            without_matches(self.where, table, schema, partition_by, self.predicate)
            if self.predicate is not None
            else Rewrite([], [], 0)
        )
        if self._streamed is None:
            self._streamed = write_files(
                self.where, [self._stream], schema, partition_by, self.journal
            )
        try:
            written = write_files(
                self.where, [*rewrite.remainders, *self._rows], schema, partition_by, self.journal
            )
        except BaseException:
            self.abandon()
            raise
        adds = [*self._streamed, *written]
        if not adds and not rewrite.removes and not (self.txn and self.adding):
            self.journal.done()
            return False
        try:
            table.create_write_transaction(
                [*adds, *rewrite.removes],
                mode="append",
                schema=table.schema(),
                partition_by=partition_by or None,
                commit_properties=properties,
            )
        except CommitFailedError:
            discard(self.where, written)
            raise
        self.journal.done()
        return True

    def abandon(self) -> None:
        """No commit will be made: delete the files kept for the next try."""
        discard(self.where, self._streamed or [])
        self.journal.done()


def _arrow_schema(table: DeltaTable) -> pa.Schema:
    """The table's schema in Arrow types (every file of it is written in exactly these)."""
    import pyarrow as pa

    return pa.schema(table.schema().to_arrow())
