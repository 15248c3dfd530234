"""The store's on-disk layout and the explicit Arrow schema of each kind of file.

Everything a reader outside the harvester needs is here: where files live, what they are called,
and what types their columns have. Schemas are explicit (never inferred from the first batch) so
every file of a kind has identical types and ``read_parquet`` over a glob never has to reconcile.

    <root>/store.json                                 format version and grain
    <root>/harvester.lock                             the writer's lock (pid, host, since)
    <root>/data/month=YYYY-MM/part-<batch>.parquet    one row per job and item
    <root>/raw/month=YYYY-MM/part-<batch>.parquet     one row per reply body (valid or quarantined)
    <root>/ledger/part-<batch>.parquet                one record per finished job fetch

``month`` is the month of the job's ``window_start``; it exists only in the folder name (hive
style), never inside the files, so Spark and Trino do not see the column twice. ``<batch>`` is
the zero-padded batch id: it grows with every flush and compaction, so names sort by age.
Files being written are named ``.<name>.tmp`` in the same folder: no reader's ``*.parquet`` glob
can match them, and hive-aware readers skip dot-files anyway.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pyarrow as pa

STORE_FILE = "store.json"
LOCK_FILE = "harvester.lock"
DATA_DIR = "data"
RAW_DIR = "raw"
LEDGER_DIR = "ledger"
PARTITION_KEY = "month"

# Bumped when a file kind's schema or the layout changes incompatibly; checked by ensure_writable.
FORMAT_NAME = "harvester-store"
FORMAT_VERSION = 1

# Batch ids are zero-padded in file names so lexical order is numeric order (12 digits = 10**12
# flushes, far beyond any store's life).
BATCH_DIGITS = 12
TMP_SUFFIX = ".tmp"
PARQUET_SUFFIX = ".parquet"
_PART_RE = re.compile(r"^\.?part-(\d+)\.parquet(?:\.tmp)?$")

# A ledger record's ``seq`` is ``batch_id << SEQ_BITS | position in its file``: one int64 that
# orders records across files (by batch) and inside one (by position). 24 bits = 16.7 M records per
# file, which bounds a flush (flush_jobs) and a compacted ledger (two records per job at most).
SEQ_BITS = 24
MAX_RECORDS_PER_FILE = 1 << SEQ_BITS

UTC_MICROS = pa.timestamp("us", tz="UTC")

# The contract's columns (``diagnostic_flow``), plus the provenance that makes visibility work.
DATA_SCHEMA = pa.schema(
    [
        pa.field("phone", pa.string(), nullable=False),
        pa.field("period", pa.date32(), nullable=False),  # the job key's calendar period
        pa.field("window_start", pa.date32(), nullable=False),
        pa.field("window_end", pa.date32(), nullable=False),
        pa.field("application", pa.string(), nullable=False),
        pa.field("page", pa.string(), nullable=False),
        pa.field("form", pa.string(), nullable=False),
        pa.field("item", pa.string(), nullable=False),
        pa.field("visits", pa.int64(), nullable=False),
        pa.field("filled", pa.int64(), nullable=False),
        pa.field("nomatch", pa.int64(), nullable=False),
        pa.field("noinput", pa.int64(), nullable=False),
        pa.field("transfer", pa.int64(), nullable=False),
        pa.field("disconnect", pa.int64(), nullable=False),
        pa.field("fetched_at", UTC_MICROS, nullable=False),
        pa.field("fetch_id", pa.int64(), nullable=False),
        pa.field("batch_id", pa.int64(), nullable=False),
    ]
)

# Every reply body as received (never headers: credentials travel in them), valid or not.
RAW_SCHEMA = pa.schema(
    [
        pa.field("phone", pa.string(), nullable=False),
        pa.field("period", pa.date32(), nullable=False),
        pa.field("window_start", pa.date32(), nullable=False),
        pa.field("window_end", pa.date32(), nullable=False),
        pa.field("request_path", pa.string(), nullable=False),
        pa.field("http_status", pa.int32()),
        pa.field("fetched_at", UTC_MICROS, nullable=False),
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("quarantined", pa.bool_(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("body", pa.binary(), nullable=False),
        pa.field("fetch_id", pa.int64(), nullable=False),
        pa.field("batch_id", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("harvester_version", pa.string(), nullable=False),
    ]
)

# One record per finished fetch of a job; the latest per (phone, period) is the job's state, the
# latest *done* one names the fetch whose rows are visible.
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("phone", pa.string(), nullable=False),
        pa.field("period", pa.date32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("state", pa.string(), nullable=False),  # "done" | "failed"
        pa.field("reason", pa.string()),
        pa.field("quarantined", pa.bool_(), nullable=False),
        pa.field("attempts", pa.int64(), nullable=False),  # requests sent for this fetch
        pa.field("prior_attempts", pa.int64(), nullable=False),  # of records merged away
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("http_status", pa.int32()),
        pa.field("fetched_at", UTC_MICROS, nullable=False),
        # the run's "today" (--today or the account's date): how old the data was when fetched
        pa.field("as_of", pa.date32(), nullable=False),
        pa.field("fetch_id", pa.int64(), nullable=False),
        pa.field("batch_id", pa.int64(), nullable=False),
        pa.field("window_start", pa.date32(), nullable=False),
        pa.field("window_end", pa.date32(), nullable=False),
        pa.field("complete", pa.bool_(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("request_path", pa.string(), nullable=False),
        pa.field("harvester_version", pa.string(), nullable=False),
        pa.field("recorded_at", UTC_MICROS, nullable=False),
    ]
)

# Parquet dictionary encoding pays off where values repeat within a file: a phone, an application
# URL or a page name repeats across every row of a job and across jobs. Counters and ids are
# near-unique per row and would only grow a dictionary page that is then abandoned.
DATA_DICTIONARY = [
    "phone",
    "period",
    "window_start",
    "window_end",
    "application",
    "page",
    "form",
    "item",
    "fetched_at",
    "fetch_id",
    "batch_id",
]
RAW_DICTIONARY = ["phone", "request_path", "run_id", "harvester_version", "reason", "batch_id"]
LEDGER_DICTIONARY = ["phone", "state", "reason", "run_id", "harvester_version", "batch_id"]
# zstd at its default level 3: 10 M rows take ~37 MB and 550,000 raw bodies (~1.5 GB of JSON)
# ~11 MB after compaction, at a write cost that keeps a 500-job flush in the tens of ms.
COMPRESSION = "zstd"


# Beyond this many files in one partition (or in the ledger) reads slow down noticeably: DuckDB
# opens every file's footer, ~1 ms each, and `status` must stay under 2 s. A 550,000-job backfill
# in 500-job flushes leaves ~1,100 ledger files; a daily sync adds one per month partition a day.
COMPACT_FILES_THRESHOLD = 64


def needs_compaction(layout: Layout) -> bool:
    """More than COMPACT_FILES_THRESHOLD files in the ledger or in any partition.

    Here rather than in :mod:`~harvester.store.compact` because ``status`` asks it, and must not
    pay for importing what compacting needs (pyarrow.parquet, pyarrow.compute).
    """
    if len(layout.part_files(layout.ledger)) > COMPACT_FILES_THRESHOLD:
        return True
    for base in (layout.data, layout.raw):
        for files in layout.partitions(base).values():
            if len(files) > COMPACT_FILES_THRESHOLD:
                return True
    return False


def month_of(day: dt.date) -> str:
    """The partition value of a job: the month of its ``window_start``."""
    return f"{day.year:04d}-{day.month:02d}"


def part_name(batch_id: int) -> str:
    return f"part-{batch_id:0{BATCH_DIGITS}d}{PARQUET_SUFFIX}"


def batch_of(name: str) -> int | None:
    """The batch id in a part file's name (also of a leftover temp file), else None."""
    match = _PART_RE.match(name)
    return int(match.group(1)) if match else None


def is_part(name: str) -> bool:
    """A finished part file (what readers' globs see), not a temp file or anything else."""
    return not name.startswith(".") and batch_of(name) is not None


def ledger_glob(layout: Layout) -> str:
    return f"{layout.ledger}/*{PARQUET_SUFFIX}"


def seq_of(batch_id: int, position: int) -> int:
    return (batch_id << SEQ_BITS) | position


class Layout:
    """The paths of one store; pure path arithmetic, no I/O."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.data = self.root / DATA_DIR
        self.raw = self.root / RAW_DIR
        self.ledger = self.root / LEDGER_DIR
        self.store_file = self.root / STORE_FILE
        self.lock_file = self.root / LOCK_FILE

    def partition(self, base: Path, month: str) -> Path:
        return base / f"{PARTITION_KEY}={month}"

    def part_files(self, base: Path) -> list[Path]:
        """Finished part files under ``base`` (one level of partitions, or flat for the ledger)."""
        if not base.is_dir():
            return []
        found: list[Path] = []
        for entry in sorted(base.iterdir()):
            if entry.is_dir() and entry.name.startswith(f"{PARTITION_KEY}="):
                found.extend(p for p in sorted(entry.iterdir()) if is_part(p.name))
            elif is_part(entry.name):
                found.append(entry)
        return found

    def partitions(self, base: Path) -> dict[str, list[Path]]:
        """Partition value -> its finished part files, for ``data`` or ``raw``."""
        out: dict[str, list[Path]] = {}
        for path in self.part_files(base):
            if path.parent != base:
                out.setdefault(path.parent.name.split("=", 1)[1], []).append(path)
        return out
