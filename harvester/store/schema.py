"""The store's layout and the explicit Arrow schema of each of its three Delta Lake tables.

Everything a reader outside the harvester needs is here: where the tables live and what types
their columns have. Schemas are explicit (never inferred from the first batch) so every file of a
table has identical types.

    <root>/store.json          format version and grain (local state: see docs/design.md)
    <root>/harvester.lock      the writer's lock (pid, host, since)
    <root>/data/               Delta table, partitioned by month: one row per job and item;
                               its current version is exactly the visible rows
    <root>/raw/                Delta table, partitioned by month: one row per reply body
                               (valid or quarantined), the provenance of every fetch
    <root>/ledger/             Delta table: one record per finished job fetch (job states)

``month`` is the month of the job's ``window_start``; as in every Delta or Hive table it is a
partition column, kept in the folder name (``month=YYYY-MM``) and in the table's log, not inside
the Parquet files. ``job_key`` (``phone/period``) is a real column so that a flush that replaces
re-fetched jobs can name them in one plain ``IN`` predicate (delta-rs re-reads a concurrent
commit's predicate in its conflict check, which a computed key would defeat).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

STORE_FILE = "store.json"
LOCK_FILE = "harvester.lock"
DATA_DIR = "data"
RAW_DIR = "raw"
LEDGER_DIR = "ledger"
KINDS = (DATA_DIR, RAW_DIR, LEDGER_DIR)
PARTITION_KEY = "month"
# The tables partitioned by month (the ledger is small and always read whole).
PARTITIONED = frozenset({DATA_DIR, RAW_DIR})

# Bumped when a table's schema or the layout changes incompatibly; every command checks it.
# 1: the harvester's own Parquet layout (a ledger deciding visibility); 2: Delta Lake tables.
FORMAT_NAME = "harvester-store"
FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1

TMP_SUFFIX = ".tmp"
PARQUET_SUFFIX = ".parquet"

# A ledger record's ``seq`` is ``batch_id << SEQ_BITS | position in its flush``: one int64 that
# orders a job's records across flushes (by batch) and inside one (by position). 24 bits = 16.7 M
# records per flush, which bounds flush_jobs.
SEQ_BITS = 24
MAX_RECORDS_PER_FILE = 1 << SEQ_BITS

# Beyond this many files in one partition (or in the ledger) reads slow down noticeably: DuckDB
# opens every file's footer, ~1 ms each, and `status` must stay under 2 s. A 550,000-job backfill
# in 500-job flushes leaves ~1,100 ledger files; a daily sync adds one per month partition a day.
COMPACT_FILES_THRESHOLD = 64

# zstd at its default level 3: 10 M rows take ~37 MB and 550,000 raw bodies (~1.5 GB of JSON)
# ~11 MB after compaction, at a write cost that keeps a 500-job flush in the tens of ms.
COMPRESSION = "ZSTD"

# The columns of each table, in order; the Arrow types are built on demand (importing pyarrow
# costs ~80 ms that `harvester --help` must not pay).
DATA_KEYS = ("phone", "period", "window_start", "window_end")
DATA_PROVENANCE = ("fetched_at", "fetch_id", "job_key")


def data_schema() -> pa.Schema:
    """The data table: the contract's columns, the job key, the fetch, and ``month``."""
    import pyarrow as pa

    from harvester.items import item_schema

    return pa.schema(
        [
            pa.field("phone", pa.string(), nullable=False),
            pa.field("period", pa.date32(), nullable=False),  # the job key's calendar period
            pa.field("window_start", pa.date32(), nullable=False),
            pa.field("window_end", pa.date32(), nullable=False),
            *item_schema(),
            pa.field("fetched_at", utc_micros(), nullable=False),
            pa.field("fetch_id", pa.int64(), nullable=False),
            pa.field("job_key", pa.string(), nullable=False),
            pa.field(PARTITION_KEY, pa.string(), nullable=False),
        ]
    )


def raw_schema() -> pa.Schema:
    """Every reply body as received (never headers: credentials travel in them), valid or not."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("phone", pa.string(), nullable=False),
            pa.field("period", pa.date32(), nullable=False),
            pa.field("window_start", pa.date32(), nullable=False),
            pa.field("window_end", pa.date32(), nullable=False),
            pa.field("request_path", pa.string(), nullable=False),
            pa.field("http_status", pa.int32()),
            pa.field("fetched_at", utc_micros(), nullable=False),
            pa.field("valid", pa.bool_(), nullable=False),
            pa.field("quarantined", pa.bool_(), nullable=False),
            pa.field("reason", pa.string()),
            pa.field("body", pa.binary(), nullable=False),
            pa.field("fetch_id", pa.int64(), nullable=False),
            pa.field("batch_id", pa.int64(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("harvester_version", pa.string(), nullable=False),
            pa.field(PARTITION_KEY, pa.string(), nullable=False),
        ]
    )


def ledger_schema() -> pa.Schema:
    """One record per finished fetch of a job; the latest per (phone, period) is its state."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("phone", pa.string(), nullable=False),
            pa.field("period", pa.date32(), nullable=False),
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("state", pa.string(), nullable=False),  # "done" | "failed"
            # the failure will not change on a retry (the writer was told so): waits for
            # --retry-failed instead of the next pull
            pa.field("rejected", pa.bool_(), nullable=False),
            pa.field("reason", pa.string()),
            pa.field("quarantined", pa.bool_(), nullable=False),
            pa.field("attempts", pa.int64(), nullable=False),  # requests sent for this fetch
            pa.field("prior_attempts", pa.int64(), nullable=False),  # of records merged away
            pa.field("rows", pa.int64(), nullable=False),
            pa.field("http_status", pa.int32()),
            pa.field("fetched_at", utc_micros(), nullable=False),
            # the run's "today" (--today or the account's date): how old the data was
            pa.field("as_of", pa.date32(), nullable=False),
            pa.field("fetch_id", pa.int64(), nullable=False),
            pa.field("batch_id", pa.int64(), nullable=False),
            pa.field("window_start", pa.date32(), nullable=False),
            pa.field("window_end", pa.date32(), nullable=False),
            pa.field("complete", pa.bool_(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("request_path", pa.string(), nullable=False),
            pa.field("harvester_version", pa.string(), nullable=False),
            pa.field("recorded_at", utc_micros(), nullable=False),
            # request economy (issue 14): how a day's rows are known: fetched, empty, derived
            # or unchanged; the proof names fetched ranges ("R", "R - S"); mismatch: the
            # difference a direct fetch found against a derivation (derivation turned off)
            pa.field("provenance", pa.string()),
            pa.field("proof", pa.string()),
            pa.field("mismatch", pa.string()),
        ]
    )


SCHEMAS = {DATA_DIR: data_schema, RAW_DIR: raw_schema, LEDGER_DIR: ledger_schema}


def utc_micros() -> pa.DataType:
    import pyarrow as pa

    return pa.timestamp("us", tz="UTC")


# Dates are stored as days since the epoch (Arrow date32): the ledger's arrays and the data
# table's columns use the same two helpers.
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def epoch_day(day: dt.date) -> int:
    """Days since 1970-01-01: the stored form of a date."""
    return day.toordinal() - _EPOCH_ORDINAL


def from_epoch_day(days: int) -> dt.date:
    """The date ``days`` after 1970-01-01 (inverse of :func:`epoch_day`)."""
    return dt.date.fromordinal(days + _EPOCH_ORDINAL)


# The ledger's latest record per job (its current state) is the one with the highest ``seq``:
# here as a DuckDB QUALIFY clause selecting those rows; aggregations that need only a few of its
# fields take them with ``arg_max(field, seq)`` (the job index, compaction).
LATEST_RECORD_SQL = "QUALIFY row_number() OVER (PARTITION BY phone, period ORDER BY seq DESC) = 1"


def month_of(day: dt.date) -> str:
    """The partition value of a job: the month of its ``window_start``."""
    return f"{day.year:04d}-{day.month:02d}"


def job_key(phone: str, period: dt.date) -> str:
    """The ``job_key`` column: ``phone/YYYY-MM-DD`` (a phone never holds a slash)."""
    return f"{phone}/{period.isoformat()}"


# The same two rules as DuckDB expressions over a relation's ``phone``, ``period`` and
# ``window_start`` columns, for writes that stay in SQL (``harvester migrate``); a test holds
# them equal to the functions above.
MONTH_SQL = "strftime(window_start, '%Y-%m')"
JOB_KEY_SQL = "phone || '/' || strftime(period, '%Y-%m-%d')"


def seq_of(batch_id: int, position: int) -> int:
    return (batch_id << SEQ_BITS) | position


class Layout:
    """The places of one store: its local folder and each table's URI; no I/O.

    The table layer speaks URIs and storage options only (``table_uri``). For a store on object
    storage (``url``), ``root`` is its local companion folder (lock, quota state, read cache:
    :mod:`harvester.store.location`) and ``name`` is the URL that messages show (redacted).
    """

    def __init__(self, root: Path | str, storage_options: dict[str, str] | None = None) -> None:
        from harvester.store.location import companion_folder, object_url, redacted_url

        self.url = object_url(root)
        self.root = companion_folder(self.url) if self.url else Path(root).absolute()
        self.name = redacted_url(self.url) if self.url else str(self.root)
        self.data = self.root / DATA_DIR
        self.raw = self.root / RAW_DIR
        self.ledger = self.root / LEDGER_DIR
        self.store_file = self.root / STORE_FILE
        self.lock_file = self.root / LOCK_FILE
        self.storage_options = storage_options

    def table_uri(self, kind: str) -> str:
        return f"{self.url}/{kind}" if self.url else str(self.root / kind)

    def legacy_ledger_files(self) -> list[Path]:
        """Part files of a format-1 ledger (``ledger/part-*.parquet`` without a Delta log)."""
        if not self.ledger.is_dir() or (self.ledger / "_delta_log").is_dir():
            return []
        return sorted(self.ledger.glob("part-*" + PARQUET_SUFFIX))


_SCHEMA_CONSTANTS = {"DATA_SCHEMA": DATA_DIR, "RAW_SCHEMA": RAW_DIR, "LEDGER_SCHEMA": LEDGER_DIR}


def __getattr__(name: str) -> pa.Schema:
    """``DATA_SCHEMA``, ``RAW_SCHEMA``, ``LEDGER_SCHEMA`` as before, built on first use."""
    kind = _SCHEMA_CONSTANTS.get(name)
    if kind is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return SCHEMAS[kind]()
