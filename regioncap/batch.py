"""Many images through the model: files read, hashed and decoded by a pool of threads, analysed in batches.

    for item, result in analyze_files(model, files, batch_size=8, workers=4):
        item.path, item.digest, item.error   # result: AnalysisResult, or None when item.error is set

Decoding (Pillow releases the GIL while it decodes) overlaps the analysis of the previous batch, so a
GPU is not kept waiting on JPEG decoding; results come back in the order of ``paths``. A file that
cannot be read, decoded or analysed yields its error and the run goes on. ``RegionIndex.add`` and the ``caption``
command's folders use this; images of one size are batched together, as ``analyze_batch`` runs
different sizes apart (each result is the one ``analyze`` gives, up to float rounding in a batch).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from regioncap.data.image import load_image
from regioncap.errors import ImageError
from regioncap.index.files import read_file

logger = logging.getLogger(__name__)


@dataclass
class LoadedFile:
    """One file: its sha256 ``digest`` (None when unreadable), the decoded ``image`` (None when not asked
    for or undecodable, and once analysed), a ``preview`` (the image at display size, when asked for) and
    the ``error`` message that says why, naming the file."""

    path: Path
    digest: str | None = None
    image: object = None
    error: str | None = None
    preview: object = None


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def default_batch_size(device) -> int:
    """8 images a model call on a GPU; 1 on the CPU. There batch 8 ran the demo model 11 % faster and a
    COCO-size model no faster (docs/usage.md#whole-folders), but a batch's float sums run in another order:
    its vectors differ from ``analyze()``'s in the last bits, and at batch 1 a collection's scores are
    exactly those of ``analyze()`` then ``align()`` (tests/test_index.py)."""
    return 8 if str(device).startswith("cuda") else 1


def shrink(image, longest: int):
    """``image`` itself when its longest side is at most ``longest`` pixels, else a reduced copy."""
    from PIL import Image

    scale = longest / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _load(path: Path, decode: Callable[[Path, str], bool] | None, preview: int | None = None) -> LoadedFile:
    item = LoadedFile(Path(path))
    try:
        data, item.digest = read_file(item.path)
        if decode is None or decode(item.path, item.digest):
            item.image = load_image(data)
            if preview is not None:
                item.preview = shrink(item.image, preview)
    except ImageError as e:
        item.error = str(e).replace("image data", str(path), 1)
    return item


def load_files(paths: Iterable, workers: int | None = None, decode: Callable[[Path, str], bool] | None = None,
               window: int | None = None, preview: int | None = None) -> Iterator[LoadedFile]:
    """Read, hash and decode files in ``workers`` threads, yielding them in order with at most ``window``
    (default 4 x workers) in flight. ``decode(path, digest)`` False skips decoding a file (e.g. one an
    index already holds). ``preview``: also a copy of each decoded image whose longest side is at most
    this many pixels (made in the thread, so drawing on it costs the caller no second decoding).
    Closing the generator early (a reader gone) cancels the files not yet started."""
    workers = workers or default_workers()
    window = window or 4 * workers
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="regioncap-load") as pool:
        pending: collections.deque = collections.deque()
        try:
            for path in paths:
                pending.append(pool.submit(_load, path, decode, preview))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def analyze_loaded(model, items: Iterable[LoadedFile], batch_size: int = 1, max_regions: int = 10,
                   score_threshold: float = 0.5, captions: bool = True, window: int | None = None
                   ) -> Iterator[tuple[LoadedFile, object]]:
    """(item, AnalysisResult or None) for each item, in order: decoded images are analysed ``batch_size``
    at a time with ``model.analyze_batch``; items without an image pass through with None.

    ``analyze_batch`` runs images of different sizes apart, so a batch is made of images of one size: up
    to ``window`` items (default ``4 * batch_size``) wait while their size's batch fills, and the oldest
    item's batch runs, full or not, when the window is full. (A folder of photos in 8 sizes, batched in
    arrival order, ran at the speed of batch 1 on a GPU.)"""
    window = max(window or 4 * batch_size, batch_size)
    waiting: collections.deque[LoadedFile] = collections.deque()  # every item in order, until yielded
    groups: dict[tuple[int, int], list[LoadedFile]] = {}  # size -> items waiting for analysis
    done: dict[int, object] = {}  # id(item) -> its result (None: nothing to analyse)

    def run(size):
        group = groups.pop(size)
        results = _analyze_group(model, group, max_regions, score_threshold, captions)
        for item, result in zip(group, results):
            item.image = None  # the decoded picture is not needed any more: free it
            done[id(item)] = result

    def ready():
        while waiting and id(waiting[0]) in done:
            item = waiting.popleft()
            yield item, done.pop(id(item))

    for item in items:
        waiting.append(item)
        if item.image is None:
            done[id(item)] = None
        else:
            groups.setdefault(item.image.size, []).append(item)
            if len(groups[item.image.size]) >= batch_size:
                run(item.image.size)
        if len(waiting) >= window and id(waiting[0]) not in done:
            run(waiting[0].image.size)  # an item not yet analysed still holds its image
        yield from ready()
    while waiting:
        if id(waiting[0]) not in done:
            run(waiting[0].image.size)
        yield from ready()


def _analyze_group(model, group: list[LoadedFile], max_regions, score_threshold, captions) -> list:
    """``model.analyze_batch`` on the group's images; when it raises, each image alone, and an image that
    fails alone gets its ``error`` (result None): one bad picture does not end a run of thousands."""
    try:
        return model.analyze_batch([b.image for b in group], max_regions, score_threshold, captions=captions)
    except Exception as e:
        if len(group) > 1:
            return [r for item in group for r in _analyze_group(model, [item], max_regions, score_threshold,
                                                                  captions)]
        logger.info("%s: analysis failed", group[0].path, exc_info=True)
        text = " ".join(str(e).split())[:300]
        group[0].error = f"{group[0].path}: analysis failed ({type(e).__name__}{': ' + text if text else ''})"
        return [None]


def analyze_files(model, paths: Iterable, batch_size: int = 1, workers: int | None = None, max_regions: int = 10,
                  score_threshold: float = 0.5, captions: bool = True, preview: int | None = None
                  ) -> Iterator[tuple[LoadedFile, object]]:
    """:func:`load_files` then :func:`analyze_loaded`: every file with its result (None: see its error);
    ``preview``: see :func:`load_files`."""
    return analyze_loaded(model, load_files(paths, workers, preview=preview), batch_size, max_regions,
                          score_threshold, captions)
