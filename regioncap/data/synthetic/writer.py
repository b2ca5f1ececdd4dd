"""Writing a synthetic set to disk in the Flickr30k Entities layout, serially or with worker processes."""

from __future__ import annotations

import logging
import math
import multiprocessing
import random
from pathlib import Path

from . import photo, shapes

logger = logging.getLogger(__name__)

# preset name -> (make_example(seed, index, image_id), prefix of the image-id random stream, JPEG options)
PRESETS = {
    "shapes": (shapes.make_example, "regioncap-synthetic-ids", {"quality": 92, "subsampling": 0}),
    "photo": (photo.make_example, "regioncap-synthetic-photo-ids", {"quality": 90, "subsampling": 0}),
}
CHUNK = 32  # images per task handed to a worker process


def _split_counts(n: int, splits) -> list[int]:
    """Largest-remainder rounding of n * fractions (a zero fraction always gets zero images).

    Counts work too: ``(29783, 1000, 1000)`` with n = 31783 gives exactly those counts.
    """
    fr = [float(f) for f in splits]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or sum(fr) <= 0:
        raise ValueError(f"splits must be three non-negative fractions with a positive sum, got {splits}")
    exact = [n * f / sum(fr) for f in fr]
    counts = [int(e) for e in exact]
    for i in sorted(range(3), key=lambda i: -(exact[i] - counts[i]))[: n - sum(counts)]:
        counts[i] += 1
    return counts


def image_ids(images: int, seed: int, preset: str = "shapes") -> list[str]:
    """The ids of a set, in generation order (10-digit strings; depend on seed and preset only)."""
    prefix = PRESETS[preset][1]
    return [str(i) for i in random.Random(f"{prefix}:{seed}").sample(range(10**9, 10**10), images)]


def _write(task) -> int:
    """Write images ``start, start + 1, ...`` of a set; image i depends on (preset, seed, i) only."""
    out, preset, seed, start, ids = task
    make, _, jpeg = PRESETS[preset]
    out = Path(out)
    for index, image_id in enumerate(ids, start):
        image, xml, text = make(seed, index, image_id)
        image.save(out / "Images" / f"{image_id}.jpg", format="JPEG", **jpeg)
        (out / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8", newline="\n")
        (out / "Sentences" / f"{image_id}.txt").write_text(text, encoding="utf-8", newline="\n")
    return len(ids)


def generate(out, images: int, seed: int, splits=(0.8, 0.1, 0.1), progress: bool = False,
             preset: str = "shapes", workers: int = 1) -> dict[str, list[str]]:
    """Write `images` synthetic images in the Flickr30k Entities layout under `out`; returns the split ids.

    The bytes depend only on (preset, seed, image index), never on `workers`.
    """
    from tqdm import tqdm

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    counts = _split_counts(images, splits)
    out = Path(out)
    for sub in ("Images", "Annotations", "Sentences"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ids = image_ids(images, seed, preset)
    tasks = [(str(out), preset, seed, s, ids[s:s + CHUNK]) for s in range(0, images, CHUNK)]
    with tqdm(total=images, desc=f"synthetic {preset}", unit="img", disable=not progress) as bar:
        if workers > 1 and len(tasks) > 1:
            # spawn: safe whatever the caller holds (threads, torch); workers import only numpy and PIL
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(tasks))) as pool:
                for n in pool.imap_unordered(_write, tasks):
                    bar.update(n)
        else:
            for task in tasks:
                bar.update(_write(task))
    result, start = {}, 0
    for name, count in zip(("train", "val", "test"), counts):
        result[name] = ids[start:start + count]
        start += count
        (out / f"{name}.txt").write_text("".join(i + "\n" for i in result[name]), encoding="utf-8", newline="\n")
    logger.info("wrote %d synthetic %s images to %s (%s)", images, preset, out,
                ", ".join(f"{k} {len(v)}" for k, v in result.items()))
    return result
