"""What SQL given to ``harvester query`` may do: read the store, write only through ``--out``.

Why: DuckDB is a whole database engine. Unrestricted, a query someone pasted from a chat or a
ticket can read any file the user can (``read_csv('/etc/passwd')``), write anywhere
(``COPY ... TO``), open other databases (``ATTACH``) or load extensions. ``harvester query``
needs none of that, so by default, once the views are defined, the connection is locked down
with DuckDB's own settings:

* ``enable_external_access = false`` with ``allowed_directories`` = the store folder (as given and
  with symlinks resolved) and ``allowed_paths`` = the one temp file ``--out`` is written through
  (Parquet only; text output is written by Python). Every file the views read lies under the
  store folder, whichever files those are (a glob today, an explicit list tomorrow).
* ``lock_configuration = true``, so the SQL cannot ``SET`` its way back out.
* The store folder is readable *and writable* for DuckDB, so the statements themselves are
  checked first with DuckDB's parser: only reading statements (``SELECT``, ``FROM``, ``WITH``,
  ``DESCRIBE``, ``SUMMARIZE``, ``EXPLAIN``, ``PRAGMA``, ``CALL``...) pass; ``COPY``, ``EXPORT``,
  ``ATTACH``, ``INSTALL``, ``CREATE``... are refused before anything runs.

``unsafe=True`` (the CLI's ``--unsafe-sql``) skips both, for a user who knowingly runs their own
SQL with full access. The messages name those two ways (an output file, ``unsafe``) as the
caller calls them (:class:`GuardNames`): the library's keyword arguments, or the CLI's flags.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from harvester.errors import UsageError
from harvester.store.location import readable_folder
from harvester.store.views import glob_escape, sql_literal


@dataclass(frozen=True)
class GuardNames:
    """What the guard's messages call the way a result is written to a file and the way to lift
    the guard; the defaults suit a library caller, the CLI passes its flags."""

    out: str = "an output file"
    unsafe: str = "unsafe=True"


LIBRARY_NAMES = GuardNames()

# Statement kinds that only read: SELECT covers FROM-first, WITH, VALUES, DESCRIBE, SHOW and
# SUMMARIZE (DuckDB's parser reports them all as SELECT); PRAGMA and CALL run table functions.
_READING = frozenset(
    {
        duckdb.StatementType.SELECT,
        duckdb.StatementType.EXPLAIN,
        duckdb.StatementType.PRAGMA,
        duckdb.StatementType.CALL,
    }
)


def check_reading_sql(sql: str, names: GuardNames = LIBRARY_NAMES) -> None:
    """A UsageError unless every statement of ``sql`` only reads (parsed by DuckDB itself)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"query: {first}") from None
    for statement in statements:
        if statement.type not in _READING:
            kind = statement.type.name
            raise UsageError(
                f"query: {kind} statements are not allowed: query reads the store and writes "
                f"only through {names.out} (pass {names.unsafe} to run any SQL with full file "
                "access)"
            )


def lock_down(
    con: duckdb.DuckDBPyConnection, store: Path, *, writable: Sequence[Path] = ()
) -> None:
    """Let ``con`` touch only files under ``store`` and the files in ``writable``, for good
    (for a store on object storage: its local read cache, which is what the views read)."""
    store = readable_folder(store)
    plain = {_folder(store.absolute()), _folder(Path(os.path.realpath(store)))}
    # The base views name each file with DuckDB's glob characters escaped (a store folder may be
    # called "st[1]" or "s?"), and DuckDB checks the escaped name: allow both spellings.
    folders = sorted(plain | {glob_escape(folder) for folder in plain})
    paths = [str(p.absolute()) for p in writable]
    con.execute(f"SET allowed_directories = [{', '.join(map(sql_literal, folders))}]")
    con.execute(f"SET allowed_paths = [{', '.join(map(sql_literal, paths))}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _folder(path: Path) -> str:
    # A trailing separator: "/data/store" must not also allow "/data/store-old".
    return str(path).rstrip(os.sep) + os.sep
