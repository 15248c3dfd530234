"""Where a store lives: a local folder, or a prefix on object storage (``s3://``, ``gs://``,
``az://``) with a local companion folder for what cannot live there.

An object-storage store keeps its three Delta tables under the URL (``s3://bucket/prefix/data``,
``.../raw``, ``.../ledger``) and its format and grain in the data table's own metadata (its
``description``), so any machine reads them from the table. Credentials are never in the
configuration: delta-rs reads the standard environment variables itself (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``,
``AWS_ALLOW_HTTP``; ``GOOGLE_*`` and ``AZURE_*`` likewise), so no secret passes through the
harvester's own values, and every message built from a delta-rs error goes through
:func:`one_line`, which also blanks the values of those variables.

What cannot be an object lives in the *companion folder* on the machine that runs the harvester
(``$HARVESTER_STATE_DIR`` or ``$XDG_STATE_HOME/harvester/stores``, one sub-folder per URL):

* ``harvester.lock``: keeps two runs *on this machine* apart, with the same kill -9 semantics as
  a local store. Across machines the guard is Delta's commit protocol: every commit is a
  conditional put of the next log entry, so two writers never both commit the same version; the
  loser of two concurrent replaces gets ``CommitFailedError`` and redoes its commit on the new
  version (:meth:`harvester.store.tables.Tables.replace`).
* ``quota.json``: the quota state between runs, an optimisation per account and machine.
* ``cache/``: a read-through copy of the tables' active Parquet files. DuckDB's httpfs cannot
  be relied on (it is a download), so the views, ``status`` and compaction read these copies;
  Delta files are immutable, so a copy never goes stale, and each listing prunes the copies of
  files the current version no longer holds.

A URL survives being carried as a :class:`~pathlib.Path` (``Path("s3://b/p")`` reads back as
``s3:/b/p``): :func:`object_url` restores it, so the configuration and the CLI keep their types.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The schemes delta-rs's object store speaks (S3 and S3-compatible, Google Cloud Storage, Azure).
OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss")
STATE_DIR_ENV = "HARVESTER_STATE_DIR"
CACHE_DIR = "cache"
# Parallel downloads into the cache: object stores answer each GET in tens of ms, so a few
# in flight hide the latency without crowding a small machine.
DOWNLOAD_THREADS = 8
_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9]*):/+(?P<rest>[^/].*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Environment variables whose values are secrets: blanked from any message built from an error.
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)


def object_url(root: Path | str) -> str | None:
    """The canonical URL (``s3://bucket/prefix``) if ``root`` names object storage, else None."""
    match = _URL.match(str(root))
    if match is None or match["scheme"] not in OBJECT_SCHEMES:
        return None
    return f"{match['scheme']}://{match['rest'].rstrip('/')}"


def redacted_url(url: str) -> str:
    """``url`` as messages show it: any ``user:password@`` and any parameters (``?...``,
    ``#...``) blanked, since either may carry a secret (``s3://***@bucket/prefix?***``)."""
    cut = min((at for at in (url.find("?"), url.find("#")) if at >= 0), default=len(url))
    scheme, sep, rest = url[:cut].partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    tail = f"{url[cut]}***" if cut < len(url) else ""
    return f"{scheme}{sep}{authority}{slash}{path}{tail}"


def store_name(root: Path | str) -> str:
    """How outputs name the store at ``root``: the URL the user configured (redacted) for object
    storage, never its local companion folder; the resolved folder otherwise."""
    url = object_url(root)
    return str(Path(root).resolve()) if url is None else redacted_url(url)


def url_problem(url: str) -> str | None:
    """Why delta-rs cannot use ``url`` as a store (None if it can): it takes credentials from
    the environment only and ignores a URL's parameters, so ``.../prefix?x=1`` + ``/data`` would
    name the prefix itself and put the three tables in one place."""
    authority = url.split("://", 1)[1].split("/", 1)[0]
    if "@" in authority or "?" in url or "#" in url:
        return (
            "the URL must not hold credentials or parameters; set them in the standard "
            "environment variables (AWS_*, GOOGLE_*, AZURE_*)"
        )
    return None


def readable_folder(root: Path) -> Path:
    """The local folder whose files a query over the store at ``root`` reads: the folder
    itself, or an object-storage store's read cache."""
    url = object_url(root)
    return root if url is None else companion_folder(url) / CACHE_DIR


def companion_folder(url: str) -> Path:
    """The local folder of an object-storage store (lock, quota state, read cache)."""
    base = os.environ.get(STATE_DIR_ENV)
    if base:
        folder = Path(base).expanduser()
    else:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        folder = Path(state) / "harvester" / "stores"
    # readable for a human (never a credential), unique per URL
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", redacted_url(url).split("://", 1)[1])[-60:]
    return folder / f"{tail}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def one_line(exc: BaseException | str) -> str:
    """A delta-rs/object-store error as one line: no colour codes, no secret values."""
    text = _ANSI.sub("", str(exc))
    parts = [part.strip(" ↳\t") for part in text.splitlines()]
    line = " / ".join(part for part in parts if part) or type(exc).__name__
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            line = line.replace(value, "***")
    return line


def mirror(table: Any, kind_folder: Path) -> dict[str, Path]:
    """Copy the active files of the Delta table ``table`` into ``kind_folder`` (those not there
    yet), delete the copies of files it no longer holds; {relative path: local copy}."""
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import unquote

    dataset = table.to_pyarrow_dataset()
    filesystem = dataset.filesystem
    wanted = {path: kind_folder / unquote(path) for path in dataset.files}
    missing = [(path, local) for path, local in wanted.items() if not local.is_file()]

    def fetch(item: tuple[str, Path]) -> None:
        path, local = item
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.part")
        try:
            with filesystem.open_input_stream(path) as source, open(tmp, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        except FileNotFoundError:  # an object the log names was lost: no copy, and the
            tmp.unlink(missing_ok=True)  # readers' file check names it (store.verify)
            return
        os.replace(tmp, local)

    if missing:
        with ThreadPoolExecutor(min(DOWNLOAD_THREADS, len(missing))) as pool:
            list(pool.map(fetch, missing))
    _prune(kind_folder, set(wanted.values()))
    return wanted


def _prune(folder: Path, keep: Iterable[Path]) -> None:
    """Delete the cached files a version no longer holds (a reader that listed one retries)."""
    kept = set(keep)
    if not folder.is_dir():
        return
    for entry in folder.rglob("*.parquet"):
        if entry not in kept:
            entry.unlink(missing_ok=True)
