"""Which files to index and their content keys.

Files are recognised by content, not by name: every file under the given folders is a candidate and
the image loader decides (a text file ends up in the ``failed`` list with its reason). Hidden files
and folders (names starting with ".") inside a folder are skipped; a file named explicitly never is.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from regioncap.errors import ImageError

MAX_FILE_BYTES = 200 * 1024 * 1024  # a larger file is listed as failed, never read into memory


def expand_paths(paths) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files, missing): every file named or under a named folder (recursive, sorted, absolute, no
    duplicates), and ``(path, reason)`` for each argument that does not exist."""
    files, missing, seen = [], [], set()
    for arg in paths:
        path = Path(arg).expanduser()
        if path.is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(_walk(path))
        else:
            missing.append((str(arg), "no such file or folder"))
            continue
        for f in candidates:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(key)
    return files, missing


def _walk(folder: Path):
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                yield Path(root) / name


def read_file(path: Path) -> tuple[bytes, str]:
    """(content, sha256 hex) of a file; ImageError for an unreadable, empty or too large one."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{path}: file is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: {size / 2**20:.0f} MB is too large for an image "
                             f"(limit {MAX_FILE_BYTES // 2**20} MB)")
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    return data, hashlib.sha256(data).hexdigest()


def point_id(key: str) -> str:
    """A Qdrant point id (a UUID) derived from ``key``: the same key always gives the same id."""
    return str(uuid.UUID(hashlib.sha256(key.encode()).hexdigest()[:32]))
