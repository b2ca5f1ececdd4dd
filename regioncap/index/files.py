"""Which files to read: the one folder walker (``caption`` and ``index``), and the files' content keys.

A folder is walked recursively, in sorted order. A file in it is taken when a reader knows its suffix
(:data:`READERS`: the image loader's :func:`~regioncap.data.image.image_suffixes` and the video reader's
:data:`~regioncap.video.reader.VIDEO_SUFFIXES`, matched without regard to case); any other file (an
``.xmp``/``.txt`` sidecar) is counted in ``Walk.skipped``, never opened. Also left out: hidden files and
folders (names starting with "."), folders the caller excludes (``caption``'s output folder) and
regioncap's own folders — an index (its record or its creation marker, :data:`INDEX_MARKERS`) or a
``caption --output-dir`` folder (:data:`OUTPUT_MARKER`). Links to
files are followed (the file is keyed by its target), links to folders are not (no loop can trap a walk).
A file named explicitly is always taken, whatever its suffix: the reader decides.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from regioncap.errors import ImageError

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 200 * 1024 * 1024  # a larger file is listed as failed, never read into memory

# A folder holding one of these files is regioncap's own and never walked as input: an index folder's
# record and its creation marker (written before anything else; regioncap.index.edge uses these names).
INDEX_MARKERS = ("regioncap-index.json", "regioncap-index.creating")
OUTPUT_MARKER = "regioncap-output.json"  # written into a folder that `caption --output-dir` created
OWN_FOLDER_MARKERS = frozenset((*INDEX_MARKERS, OUTPUT_MARKER))


def _image_suffixes() -> frozenset[str]:
    from regioncap.data.image import image_suffixes

    return image_suffixes()


def _video_suffixes() -> frozenset[str]:
    from regioncap.video.reader import VIDEO_SUFFIXES

    return VIDEO_SUFFIXES


# What a folder walk takes: each kind of file and the suffixes its reader knows (``Found.kind`` tells the
# caller which reader to use).
READERS = {"image": _image_suffixes, "video": _video_suffixes}


def suffix_kinds() -> dict[str, str]:
    """Lower-case suffix -> the kind of file (a key of :data:`READERS`) read from it."""
    return {suffix: kind for kind, suffixes in READERS.items() for suffix in suffixes()}


@dataclass
class Found:
    """One file to read: ``path`` resolved (links followed: the key and what is read), ``name`` where it
    was found (absolute, links kept: the layout of outputs) and ``kind`` its reader (a named file of
    unknown suffix: "image")."""

    path: Path
    name: Path
    kind: str = "image"


@dataclass
class Walk:
    """What :func:`walk` found: ``found`` files in order, ``missing`` ``(argument, reason)`` for arguments
    that do not exist, ``skipped`` files not taken by suffix (suffix -> count) and ``own_folders``
    (regioncap's index and output folders, not walked)."""

    found: list[Found] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    skipped: collections.Counter = field(default_factory=collections.Counter)
    own_folders: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [f.path for f in self.found]

    def summary(self) -> str | None:
        """One line on what was left out (None: nothing)."""
        parts = []
        if self.skipped:
            top = sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            kinds = ", ".join(f"{suffix or '(no suffix)'} {n}" for suffix, n in top)
            more = ", ..." if len(self.skipped) > 5 else ""
            parts.append(f"skipped {sum(self.skipped.values())} file(s) whose suffix no reader knows "
                         f"({kinds}{more})")
        if self.own_folders:
            parts.append(f"skipped {len(self.own_folders)} regioncap index or output folder(s) "
                         f"(first: {self.own_folders[0]})")
        return "; ".join(parts) or None


def _argument(arg) -> Path:
    return Path(os.path.abspath(Path(arg).expanduser()))  # absolute, links kept


def input_roots(paths) -> list[Path]:
    """The folders inputs are walked from or named in: each folder argument, a named file's folder."""
    roots = []
    for arg in paths:
        path = _argument(arg)
        root = path if path.is_dir() else path.parent if path.is_file() else None
        if root is not None and root not in roots:
            roots.append(root)
    return roots


def walk(paths, exclude=()) -> Walk:
    """Every file named or under a named folder (see the module docstring), absolute, without duplicates
    (by resolved path: the first name wins). ``exclude``: folders not to walk into. Logs the summary."""
    kinds = suffix_kinds()
    excluded = {os.path.realpath(p) for p in exclude}
    result, seen = Walk(), set()
    for arg in paths:
        path = _argument(arg)
        if path.is_file():
            candidates = [(path, kinds.get(path.suffix.lower(), "image"))]
        elif path.is_dir():
            candidates = sorted(_walk(path, kinds, excluded, result))
        else:
            result.missing.append((str(arg), "no such file or folder"))
            continue
        for name, kind in candidates:
            key = name.resolve()
            if key not in seen:
                seen.add(key)
                result.found.append(Found(key, name, kind))
    if (summary := result.summary()) is not None:
        logger.warning("%s", summary)
    return result


def expand_paths(paths, exclude=()) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files, missing) of :func:`walk`: the resolved files and ``(path, reason)`` for each argument
    that does not exist."""
    found = walk(paths, exclude)
    return found.files, found.missing


def _walk(folder: Path, kinds: dict[str, str], excluded: set[str], result: Walk):
    """(path, kind) of each file taken under ``folder``; counts what is left out in ``result``."""
    for root, dirs, names in os.walk(folder):
        if os.path.realpath(root) in excluded:
            dirs[:] = []
            continue
        if OWN_FOLDER_MARKERS.intersection(names):
            result.own_folders.append(Path(root))
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in kinds:
                yield Path(root) / name, kinds[suffix]
            else:
                result.skipped[suffix] += 1


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
