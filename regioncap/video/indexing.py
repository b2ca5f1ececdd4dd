"""Videos in a collection index: each sampled frame becomes a searchable picture with its video and time.

A frame is stored like a photo (its regions, their vectors, the whole-frame vector) under the key
``<video sha256>@<milliseconds>`` with ``paths`` = the video's paths and ``time`` = its time in seconds,
so ``search`` ranks frames with the photos and a hit carries ``{"path", "time", ...}``. Every sampled
frame is stored, not only each track's best frame: on the benchmark's three-minute scene (see
docs/video.md) every frame found the moment a sentence names as often as or more often than the best
frames did.

Crash safety and re-indexing as for photos: the video's first frame (key ``<sha256>@0``) is written
last, with ``frames`` = how many were stored; a video counts as indexed only when that entry exists with
the current settings. An unchanged video (same bytes, same settings) is therefore not decoded again,
a killed run redoes the video, and frames a re-analysis no longer has are deleted.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from regioncap.errors import RegionCapError
from regioncap.video.reader import VideoDamagedError, VideoError
from regioncap.video.run import caption_video

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


def video_digest(path: Path) -> str:
    """sha256 of the file, read 1 MiB at a time (a video is never read into memory whole)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except OSError as e:
        raise VideoError(f"{path}: cannot read ({e.strerror or e})") from None
    return h.hexdigest()


def frame_key(digest: str, time: float, first: bool = False) -> str:
    return f"{digest}@{0 if first else max(1, round(time * 1000))}"


def _frames_of(images: dict, digest: str) -> list[str]:
    return [key for key in images if key.startswith(digest + "@")]


def add_videos(index, videos: list[Path], every: float, counts: dict, images: dict, by_path: dict,
               progress=None) -> None:
    """:func:`add_video` for each of ``videos``, into ``counts`` (``RegionIndex.add``'s)."""
    for path in progress(videos) if progress else videos:
        status, error = add_video(index, path, every, images, by_path)
        if status != "failed":
            counts[status] += 1
        if error:
            counts["failed"].append({"path": str(path), "error": error})


def add_video(index, path: Path, every: float, images: dict, by_path: dict) -> tuple[str, str | None]:
    """Index one video into ``index`` (a :class:`~regioncap.index.RegionIndex`); ``images``/``by_path``:
    its ``_state()``, kept current. Returns (status, error): status "added", "updated", "unchanged" or
    "failed"; error the one-line message of a damaged video (its frames before the damage are indexed)
    or of one that could not be read (nothing indexed)."""
    key, digest = str(path), None
    try:
        digest = video_digest(path)
        first = frame_key(digest, 0.0, first=True)
        info = images.get(first)
        old = by_path.get(key, set())
        current = _current(index, info, every)
        if current and key in info["paths"]:
            status = "unchanged"
        elif current:
            for frame in _frames_of(images, digest):
                index._set_paths(images, frame, images[frame]["paths"] + [key])
            status = "updated" if old - set(_frames_of(images, digest)) else "added"
        else:
            keep = info["paths"] if info else []
            paths = keep + ([key] if key not in keep else [])
            error = _analyse(index, path, digest, every, paths, images)
            status = "updated" if info or old - set(_frames_of(images, digest)) else "added"
            if error:
                _drop_stale(index, key, digest, images, by_path)
                return status, error
    except RegionCapError as e:
        return "failed", str(e)
    _drop_stale(index, key, digest, images, by_path)
    return status, None


def _current(index, info: dict | None, every: float) -> bool:
    return (info is not None and "frames" in info and info.get("every") == every
            and (info["max_regions"], info["threshold"]) == (index.max_regions, index.score_threshold))


def _analyse(index, path: Path, digest: str, every: float, paths: list[str], images: dict) -> str | None:
    """Analyse and store every sampled frame, the first last; returns a damaged video's message."""
    written: list[str] = []
    first: list = []

    def store(frame, result, _tracks):
        time = frame.time
        extra = {"time": round(time, 3), "video": digest, "every": every}
        if not first:
            first.append((result, extra))
            return
        k = frame_key(digest, time)
        images[k] = index.write(k, result, paths, images.get(k), extra=extra)
        written.append(k)

    error = None
    try:
        for _ in caption_video(index.model, path, every, index.max_regions, index.score_threshold, on_frame=store):
            pass
    except VideoDamagedError as e:
        error = str(e)
    if not first:
        raise VideoError(error or f"{path}: no frames could be analysed")
    result, extra = first[0]
    k = frame_key(digest, 0.0, first=True)
    images[k] = index.write(k, result, paths, images.get(k), extra=extra | {"frames": len(written) + 1})
    written.append(k)
    for stale in set(_frames_of(images, digest)) - set(written):  # frames an earlier analysis had
        index._set_paths(images, stale, [])
    return error


def _drop_stale(index, key: str, digest: str | None, images: dict, by_path: dict) -> None:
    """The file's earlier content (another video, or a photo, at this path) no longer lists it."""
    current = set(_frames_of(images, digest)) if digest else set()
    for stale in by_path.get(key, set()) - current:
        if stale in images:
            index._set_paths(images, stale, [p for p in images[stale]["paths"] if p != key])
    by_path[key] = current
