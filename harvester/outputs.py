"""Files a user names for output (``query --out``, ``report --out``, ``export-duckdb FILE``):
checked before any work, written so that a failure never destroys what the path held.

Why a module of its own: writing "a temp file, then rename it over the target" is right for a
regular file (a reader never sees half a file) and wrong for anything else: renamed over
``/dev/full`` it turns the device node into a file, over a symlink or a FIFO it replaces the
link or pipe, and over a file inside the store it corrupts the store. The rules, in one place:

* inside the store (symlinks resolved, real paths compared): refused, exit 2;
* a folder, a symlink to a file, a dangling symlink, a socket, a block device: refused, exit 2;
* a character device (``/dev/null``, ``/dev/stdout``, a terminal) or a FIFO: written through,
  never replaced, when the output is a stream of text (``query`` csv/json/table, ``report``);
  refused for a file format that needs a real file (Parquet, a DuckDB database);
* a regular file or a new name: written next to it under a dot-name, then renamed into place.

Failures: a target that cannot be written before anything is written (its folder missing or
read-only, the device not openable) is a :class:`UsageError` (exit 2); a write that fails part
way (disk full, ``/dev/full``, an I/O error) is a :class:`HarvesterError` (exit 1). Both are one
line naming the flag, and both leave no temp file behind and the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harvester.errors import HarvesterError, UsageError

# Chunks of text are gathered up to this size before each write: large enough that streaming two
# million CSV rows costs few system calls, small enough to stay out of the memory figures.
WRITE_BUFFER_BYTES = 1 << 20
# What DuckDB writes beside a database file while it is open.
_SIDE_FILES = (".wal",)


@dataclass(frozen=True)
class OutputFile:
    """An output path that passed :func:`check_output`; ``stream`` means write through."""

    path: Path
    flag: str
    stream: bool = False


def check_output(path: Path, flag: str, *, store: Path, streams_ok: bool) -> OutputFile:
    """Check ``path`` before any work is done; a UsageError naming ``flag`` if it is refused.

    ``streams_ok``: the output is text, so a character device or FIFO is written through.
    """
    check_folder(path, flag)
    if _inside(path, store):
        raise UsageError(
            f"{flag}: {path} is inside the store {store}; write outputs outside the store folder"
        )
    try:
        link = path.lstat()
    except FileNotFoundError:
        return OutputFile(path, flag)
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write {path}: {exc.strerror}") from None
    try:
        mode = path.stat().st_mode
    except OSError:
        raise UsageError(f"{flag}: {path} is a symbolic link to a missing file") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{flag}: {path} is a folder")
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        if streams_ok:
            return OutputFile(path, flag, stream=True)
        raise UsageError(f"{flag}: {path} is a device or pipe; this output needs a regular file")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{flag}: {path} is not a regular file (a socket or block device)")
    if stat.S_ISLNK(link.st_mode):
        raise UsageError(
            f"{flag}: {path} is a symbolic link; give the file it points to "
            f"({path.resolve()}) so the link is not replaced"
        )
    return OutputFile(path, flag)


def check_folder(path: Path, flag: str) -> None:
    """The folder ``path`` would be written in must exist (the first, cheapest check)."""
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{flag}: cannot write {path}: the folder {folder} {what}")


def _inside(path: Path, store: Path) -> bool:
    """Whether ``path`` is ``store`` or under it, symlinks of both resolved."""
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(store))
    return real == root or root in real.parents


@contextlib.contextmanager
def replacing(target: OutputFile) -> Iterator[Path]:
    """A fresh temp path beside a regular-file target; renamed over it when the block ends.

    The temp file does not exist when the block starts (DuckDB wants to create its own files);
    creating it once first proves the folder writable, so a read-only folder is exit 2. On any
    error the temp file (and DuckDB's side files) are removed and the target is left as it was.
    """
    assert not target.stream
    path = target.path
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"{target.flag}: cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    temp = Path(name)
    temp.unlink()
    try:
        yield temp
        os.replace(temp, path)
    except OSError as exc:
        raise write_failed(target, exc) from None
    finally:
        for leftover in (temp, *(temp.with_name(temp.name + s) for s in _SIDE_FILES)):
            leftover.unlink(missing_ok=True)


def write_failed(target: OutputFile, exc: OSError | str) -> HarvesterError:
    """The exit-1 error of a write that failed part way (what was there is kept)."""
    problem = exc if isinstance(exc, str) else exc.strerror or str(exc)
    kept = "" if target.stream else f"; {target.path} was left as it was"
    return HarvesterError(f"{target.flag}: writing {target.path} failed: {problem}{kept}")


def write_text(target: OutputFile, chunks: Iterable[str]) -> None:
    """Write ``chunks`` (UTF-8) to ``target``: through a device or pipe, else by rename."""
    if target.stream:
        try:
            handle = open(target.path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise UsageError(f"{target.flag}: cannot write {target.path}: {exc.strerror}") from None
        try:
            with handle:
                _write_all(handle, chunks)
        except OSError as exc:
            raise write_failed(target, exc) from None
        return
    with replacing(target) as temp, open(temp, "x", encoding="utf-8") as handle:
        _write_all(handle, chunks)
        handle.flush()
        os.fsync(handle.fileno())


def _write_all(handle: TextIO, chunks: Iterable[str]) -> None:
    pending: list[str] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= WRITE_BUFFER_BYTES:
            handle.write("".join(pending))
            pending, size = [], 0
    handle.write("".join(pending))
    handle.flush()
