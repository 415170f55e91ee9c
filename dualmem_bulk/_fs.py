"""Atomic file writes: temporary name in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "check_path",
    "fault_point",
    "fsync_path",
    "fsync_tree",
    "remove",
    "source_identity",
    "write_json",
]

_FAULTS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Test hook for failures no test can cause for real (a full disk, say).

    ``DUALMEM_FAULT=target-write:3:ENOSPC`` makes the 3rd pass through ``fault_point
    ("target-write")`` in this process raise ``OSError(ENOSPC)``; the code ``SIGKILL`` kills
    the process there instead (a crash at an exact point). Unset, it does nothing.
    """
    spec = os.environ.get("DUALMEM_FAULT")
    if not spec or not spec.startswith(name + ":"):
        return
    _point, nth, code = spec.split(":")
    _FAULTS[name] = _FAULTS.get(name, 0) + 1
    if _FAULTS[name] == int(nth):
        if code == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)
        err = getattr(errno, code)
        raise OSError(err, os.strerror(err))


def fsync_path(path: Path) -> None:
    """Make a file's data, or the renames and creations inside a directory, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (a dataset written by a library)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def remove(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it is fsynced and renamed onto ``final``
    (``durable=False``: renamed only, for a file the caller fsyncs later, before relying on
    it).

    On an exception the temporary file or directory is removed and ``final`` is untouched.
    """
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    remove(tmp)
    try:
        yield tmp
        if not durable:
            os.replace(tmp, final)
            return
        if tmp.is_dir():
            fsync_tree(tmp)
        else:
            fsync_path(tmp)
        os.replace(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        remove(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a reader sees the old file or the new one, never a mix)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def source_identity(path: Path) -> list[list[Any]]:
    """Every file of the source with its size and mtime: a cheap test that it did not change."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.relative_to(path) if f != path else f.name), st.st_size,
                    st.st_mtime_ns])
    return out


def check_path(path: Path) -> None:
    """Refuse (exit 3) a path the operating system will not look at: permission denied, a name
    too long, a loop. A missing path, or one under a file, is for the caller to judge."""
    from dualmem_bulk.errors import SourceError

    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise SourceError(path, exc.strerror or str(exc)) from exc
