"""``python -m regioncap.data.synthetic OUT --images N --seed S [--preset shapes|photo] [--workers W]``."""

from __future__ import annotations

import argparse
import os

from .writer import PRESETS, _split_counts, generate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m regioncap.data.synthetic",
                                description="Synthetic scenes in the Flickr30k Entities layout.")
    p.add_argument("out", help="output folder (Flickr30k Entities layout)")
    p.add_argument("--images", type=int, default=2000, help="number of images (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", default="0.8,0.1,0.1",
                   help="train,val,test fractions or counts (default 0.8,0.1,0.1; Flickr30k: 29783,1000,1000)")
    p.add_argument("--preset", choices=list(PRESETS), default="shapes",
                   help="shapes: small scenes the demo model knows (default); photo: Flickr30k-like ~500x375 "
                        "pictures with 3-8 objects, textured backgrounds and richer wording")
    p.add_argument("--workers", type=int, default=1,
                   help=f"processes (default 1; this machine has {os.cpu_count()} CPUs); bytes do not depend on it")
    args = p.parse_args(argv)
    if args.images < 0:
        p.error("--images must be >= 0")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    try:
        splits = [float(x) for x in args.splits.split(",")]
        _split_counts(args.images, splits)
    except ValueError:
        p.error(f"--splits must be three non-negative fractions like 0.8,0.1,0.1, got {args.splits!r}")
    result = generate(args.out, args.images, args.seed, splits, progress=True, preset=args.preset,
                      workers=args.workers)
    print(f"wrote {args.images} images to {args.out} ({args.preset} preset): "
          + ", ".join(f"{k} {len(v)}" for k, v in result.items()))
    return 0
