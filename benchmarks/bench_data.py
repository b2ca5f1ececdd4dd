"""Data-path benchmark (issue 10): generation, data set and vocabulary build, DataLoader throughput.

Rows (each optional part can be left out):

  generate        ``python -m regioncap.data.synthetic`` in a subprocess (``--generate N``): wall time, img/s
  dataset         ``Flickr30kEntities(ROOT, split)``: reading every annotation and sentence file and
                  probing every image header; seconds, RSS before (imports) and after, peak RSS so far
  vocabulary      ``Vocabulary.build(dataset.phrase_texts(), min_count)``: seconds, tokens, peak RSS
  loader          the training DataLoader (``make_train_loader``: default workers, the training
                  augmentation, shuffled sampler) for ``--batches`` batches after the first one
                  (worker start-up is reported apart): img/s
  loader+resize   the same with the detector's resize done in the workers (min side ``--min-size``,
                  max side ``--max-size``, bilinear, as torchvision's GeneralizedRCNNTransform): what
                  loading costs at the detector's real input resolution

    python benchmarks/bench_data.py --data ROOT [--split train] [--batches 200] [--json OUT]
    python benchmarks/bench_data.py --generate 31783 --preset photo --data /tmp/photo --gen-workers 2 \\
        --splits 29783,1000,1000

Peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` of this process (loader workers not included).
Timings on a shared machine are noisy: compare rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from regioncap.data.dataset import Flickr30kEntities  # noqa: E402
from regioncap.data.loader import default_workers, make_train_loader  # noqa: E402
from regioncap.data.transforms import build_transforms  # noqa: E402
from regioncap.data.vocab import Vocabulary  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Resized:
    """A box transform followed by the detector's resize: min side -> min_size, max side <= max_size."""

    def __init__(self, transform, min_size: int, max_size: int):
        self.transform, self.min_size, self.max_size = transform, min_size, max_size

    def __call__(self, image, boxes):
        image, boxes = self.transform(image, boxes)
        h, w = image.shape[-2:]
        scale = min(self.min_size / min(h, w), self.max_size / max(h, w))
        image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                              align_corners=False)[0]
        return image, boxes * scale


def time_loader(dataset, batch_size: int, batches: int, workers: int, seed: int) -> dict:
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    loader = make_train_loader(dataset, batch_size, sampler, workers)
    batches = min(batches, len(loader) - 1)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    images = pixels = 0
    for _ in range(batches):
        ims, _, _ = next(it)
        images += len(ims)
        pixels += sum(im.shape[-1] * im.shape[-2] for im in ims)
    t2 = time.perf_counter()
    del it, loader
    return {"workers": workers, "batch_size": batch_size, "batches": batches, "images": images,
            "first_batch_s": round(t1 - t0, 3), "seconds": round(t2 - t1, 3),
            "img_per_s": round(images / (t2 - t1), 2) if images else 0.0,
            "mean_pixels": round(pixels / max(images, 1))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="data root (Flickr30k Entities layout); --generate writes it")
    p.add_argument("--split", default="train")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="first generate N synthetic images")
    p.add_argument("--preset", default="photo", help="synthetic preset for --generate (default photo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", default="29783,1000,1000", help="--generate's splits (fractions or counts)")
    p.add_argument("--gen-workers", type=int, default=2, help="--generate's worker processes")
    p.add_argument("--vocab-min-count", type=int, default=5)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the training default)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=200, help="timed batches per loader row (0: no loader rows)")
    p.add_argument("--min-size", type=int, default=800, help="resize row: detector min side (mobilenet: 800)")
    p.add_argument("--max-size", type=int, default=1333, help="resize row: detector max side (mobilenet: 1333)")
    p.add_argument("--no-resize", action="store_true", help="skip the loader+resize row")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)
    rows: dict[str, dict] = {}

    if args.generate:
        n = args.generate
        cmd = [sys.executable, "-m", "regioncap.data.synthetic", args.data, "--images", str(n), "--seed",
               str(args.seed), "--preset", args.preset, "--splits", args.splits, "--workers", str(args.gen_workers)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        dt = time.perf_counter() - t0
        rows["generate"] = {"images": n, "workers": args.gen_workers, "seconds": round(dt, 1),
                            "img_per_s": round(n / dt, 2)}

    rss_before = rss_mb()
    t0 = time.perf_counter()
    dataset = Flickr30kEntities(args.data, args.split)
    dt = time.perf_counter() - t0
    n_sent = sum(len(r.sentences) for r in dataset.records)
    rows["dataset"] = {"images": len(dataset), "sentences": n_sent, "skipped": len(dataset.skipped),
                       "seconds": round(dt, 2), "rss_before_mb": round(rss_before), "rss_mb": round(rss_mb()),
                       "peak_rss_mb": round(peak_rss_mb())}
    t0 = time.perf_counter()
    vocab = Vocabulary.build(dataset.phrase_texts(), min_count=args.vocab_min_count)
    dt = time.perf_counter() - t0
    rows["vocabulary"] = {"tokens": len(vocab), "min_count": args.vocab_min_count, "seconds": round(dt, 2),
                          "rss_mb": round(rss_mb()), "peak_rss_mb": round(peak_rss_mb())}
    dataset.vocab = vocab

    workers = default_workers() if args.workers is None else args.workers
    if args.batches:
        dataset.transforms = build_transforms(train=True)
        rows["loader"] = time_loader(dataset, args.batch_size, args.batches, workers, args.seed)
        if not args.no_resize:
            dataset.transforms = Resized(build_transforms(train=True), args.min_size, args.max_size)
            rows["loader+resize"] = time_loader(dataset, args.batch_size, args.batches, workers, args.seed + 1)

    print(f"data: {args.data} ({args.split}), cpus: {os.cpu_count()}, default workers: {default_workers()}")
    keys = ["images", "sentences", "tokens", "workers", "batch_size", "batches", "seconds", "img_per_s",
            "first_batch_s", "mean_pixels", "rss_before_mb", "rss_mb", "peak_rss_mb"]
    used = [k for k in keys if any(k in r for r in rows.values())]
    width = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows.values())) for k in used}
    print(f"{'row':<14} " + " ".join(f"{k:>{width[k]}}" for k in used))
    for name, r in rows.items():
        print(f"{name:<14} " + " ".join(f"{str(r.get(k, '')):>{width[k]}}" for k in used))
    result = {"data": str(args.data), "split": args.split, "cpus": os.cpu_count(), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
