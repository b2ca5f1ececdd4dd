"""Collection index benchmark (issue 11): indexing speed against analyze() alone, search latency, size on disk.

1. Indexing: the same synthetic images are (a) analysed with ``model.analyze`` and nothing else, and
   (b) indexed with ``RegionIndex.add`` into a fresh embedded index (hash, decode, analyze, Qdrant writes),
   alternating a, b, a, b ... ``--repeats`` times in one process; the best time of each is kept.
   Goal: the index adds under 15 %.
2. Search: embedded indexes of 1,000 and 10,000 images. Their points are **synthesised** (random unit
   vectors, ``--regions`` regions per image, payloads laid out exactly as ``add`` writes them) instead of
   analysing 10,000 pictures; search cost does not depend on where the vectors came from. The index is
   closed and reopened (loading every point from disk, timed as "open"), then ``--queries`` sentences
   (by images) and phrases (by regions) are searched; p50/p95 of ``RegionIndex.search`` (text encoding,
   Qdrant, exact re-scoring) are reported, with the folder's size on disk. Goal: < 100 ms at 1,000 images.

    python benchmarks/bench_index.py [--model DIR] [--images 24] [--repeats 2] [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from regioncap.data import synthetic  # noqa: E402
from regioncap.index import RegionIndex  # noqa: E402
from regioncap.index.files import point_id  # noqa: E402
from regioncap.models.model import RegionCaptioner  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo-model"
SENTENCES = ["a large red circle next to a small blue square", "the striped triangle", "a green star on a grey "
             "background", "two yellow circles and a purple hexagon", "a small dotted cross", "an orange square"]
PHRASES = ["a red circle", "the blue square", "a striped triangle", "a green star", "a yellow hexagon"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--images", type=int, default=24, help="synthetic images for the indexing comparison")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sizes", default="1000,10000", help="collection sizes for the search latency")
    p.add_argument("--regions", type=int, default=10, help="regions per synthesised image")
    p.add_argument("--queries", type=int, default=60, help="searches per mode and size")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default). On an "
                   "oversubscribed CPU each tiny torch op can wait tens of ms for its OpenMP team: 1 avoids that")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one, removed after)")
    return p


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def bench_indexing(model, images: list[Path], repeats: int, work: Path) -> tuple[float, float]:
    """(best seconds for analyze() alone, best seconds for RegionIndex.add) over the same images."""
    model.analyze(images[0])  # warm-up
    alone, indexed = [], []
    for r in range(repeats):
        t = time.perf_counter()
        for path in images:
            model.analyze(path, max_regions=10, score_threshold=0.5)
        alone.append(time.perf_counter() - t)
        location = work / f"index-{r}"
        with RegionIndex(location, model) as index:  # opening (and hashing the model) is not per image
            t = time.perf_counter()
            counts = index.add(images)
            indexed.append(time.perf_counter() - t)
        assert counts["added"] == len(images), counts
        shutil.rmtree(location)
    return min(alone), min(indexed)


def synthesise(location: Path, model, count: int, regions: int, seed: int = 0) -> None:
    """An embedded index holding ``count`` images of ``regions`` random unit vectors each."""
    from qdrant_client import models

    g, dim = torch.Generator().manual_seed(seed), model.config.joint_dim
    with RegionIndex(location, model) as index:
        for start in range(0, count, 250):
            image_points, region_points = [], []
            for k in range(start, min(count, start + 250)):
                digest = f"{k:064x}"
                v = torch.nn.functional.normalize(torch.randn(1 + regions, dim, generator=g), dim=1)
                boxes = [[float(4 * i), 4.0, float(4 * i + 30), 40.0] for i in range(regions)]
                stored = [{"box": b, "caption": "a small red circle", "score": 0.9, "caption_score": -2.5,
                           "label": "people"} for b in boxes]
                path = f"/photos/{k:06d}.jpg"
                region_points += [models.PointStruct(id=point_id(f"{digest}:{i}"), vector=v[1 + i].tolist(),
                                                     payload={"hash": digest, "index": i, "path": path, **stored[i]})
                                  for i in range(regions)]
                image_points.append(models.PointStruct(id=point_id(digest), vector=v.tolist(), payload={
                    "hash": digest, "paths": [path], "width": 500, "height": 375, "regions": stored,
                    "max_regions": 10, "threshold": 0.5}))
            index.client.upsert(index.store.regions, region_points)
            index.client.upsert(index.store.images, image_points)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def bench_search(location: Path, model, queries: int) -> dict:
    t = time.perf_counter()
    index = RegionIndex(location, model, create=False)
    opened = time.perf_counter() - t
    out = {"open_s": opened, "images": len(index), "size_mb": folder_size(location) / 2**20}
    with index:
        for by, texts in (("images", SENTENCES), ("regions", PHRASES)):
            index.search(texts[0], by=by)  # warm-up
            times = []
            for q in range(queries):
                t = time.perf_counter()
                hits = index.search(texts[q % len(texts)], by=by, top_k=10)
                times.append((time.perf_counter() - t) * 1e3)
                assert len(hits) == 10
            out[f"by_{by}"] = (percentile(times, 50), percentile(times, 95))
    return out


def main(args) -> int:
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}")
    model = RegionCaptioner.from_pretrained(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-index-"))
    try:
        synthetic.main([str(work / "data"), "--images", str(args.images), "--seed", "5"])
        images = sorted((work / "data" / "Images").glob("*.jpg"))
        alone, indexed = bench_indexing(model, images, args.repeats, work)
        print(f"\nindexing {len(images)} synthetic images (model {args.model}, best of {args.repeats}):")
        print("| what | seconds | images/s |\n|---|---:|---:|")
        print(f"| analyze() alone | {alone:.2f} | {len(images) / alone:.2f} |")
        print(f"| RegionIndex.add (embedded) | {indexed:.2f} | {len(images) / indexed:.2f} |")
        print(f"index overhead: {100 * (indexed / alone - 1):+.1f} % (goal < 15 %)")

        rows = []
        for size in (int(s) for s in args.sizes.split(",")):
            location = work / f"search-{size}"
            t = time.perf_counter()
            synthesise(location, model, size, args.regions)
            print(f"synthesised {size} images x {args.regions} regions in {time.perf_counter() - t:.1f} s",
                  file=sys.stderr)
            rows.append((size, bench_search(location, model, args.queries)))
            shutil.rmtree(location)
        print(f"\nsearch latency, embedded mode, top 10, {args.regions} regions per image "
              f"(synthesised vectors, dim {model.config.joint_dim}), {args.queries} queries each:")
        print("| images | regions | by images p50 / p95 ms | by regions p50 / p95 ms | open s | on disk MB |")
        print("|---:|---:|---:|---:|---:|---:|")
        for _, r in rows:
            (i50, i95), (r50, r95) = r["by_images"], r["by_regions"]
            print(f"| {r['images']:,} | {r['images'] * args.regions:,} | {i50:.1f} / {i95:.1f} | {r50:.1f} / {r95:.1f} "
                  f"| {r['open_s']:.1f} | {r['size_mb']:.1f} |")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    random.seed(0)
    raise SystemExit(main(get_args_parser().parse_args()))
