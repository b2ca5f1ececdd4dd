"""Atomic file writes: the one place the project writes a file that a crash must not leave half-written.

Each write goes to a temporary file in the destination's folder and is moved into place with
``os.replace`` (atomic on POSIX and Windows within one file system), so a reader sees either the
old file or the new one, never part of one. A failed write leaves no temporary file behind.
The temporary file is fsync'ed before the move and the folder after it, so that a power cut leaves the
old file or the new one, not an empty one (``rename`` alone orders nothing on disk).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, move it to ``path``.

    For writers that want a file name (safetensors' ``save_file``, matplotlib's ``savefig``). The
    temporary name keeps ``path``'s suffix, so writers that pick a format by suffix still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name, not tempfile.mkstemp: mkstemp's file is private (0600) and os.replace would keep
    # that mode, while the writer's own open() gives the usual permissions (umask).
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush ``path`` (a file, or a folder: its entries) to disk. Folders cannot be opened on Windows,
    where a rename is durable without it."""
    if os.name == "nt" and Path(path).is_dir():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically. Returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = 2, ensure_ascii: bool = True) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically. Returns ``path``."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii) + "\n")
