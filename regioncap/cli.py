"""Command line: ``python -m regioncap caption IMAGE``, ``query IMAGE PHRASE``, ``index PATH... --index DIR``
and ``search TEXT --index DIR``.

Prints JSON on stdout. A problem with the user's input (unreadable image, missing or unsafe
model, empty phrase) exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path

from regioncap.errors import EXIT_USAGE, RegionCapError

logger = logging.getLogger(__name__)
QDRANT_URL_ENV = "REGIONCAP_QDRANT_URL"


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regioncap", description="Region captions and phrase grounding.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, many: bool = False) -> None:
        if many:
            p.add_argument("image", nargs="+", metavar="IMAGE", help="image files or folders (recursive); one "
                           "file prints one JSON object, several print JSON Lines")
        else:
            p.add_argument("image", help="image file (JPEG, PNG, ...)")
        p.add_argument("--model", default=None,
                       help="model folder or Hub repo id (default: $REGIONCAP_MODEL or assets/demo-model)")
        p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
        p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
        p.add_argument("--max-regions", type=_count(0), default=10, help="most regions to report (default 10)")
        p.add_argument("--threshold", type=_fraction, default=0.5, help="detector score threshold (default 0.5)")

    def batching(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch-size", type=_count(1), default=None,
                       help="images per model call (default: 8 on cuda, 1 on the cpu)")
        p.add_argument("--workers", type=_count(1), default=None,
                       help="threads that read and decode images ahead of the model (default: the CPU count, <= 8)")

    cap = sub.add_parser("caption", help="detect regions and caption each; prints JSON (JSON Lines for folders)")
    common(cap, many=True)
    cap.add_argument("--output", type=Path, default=None, help="one image: also write an annotated PNG here")
    cap.add_argument("--output-dir", type=Path, default=None,
                     help="write an annotated PNG of every image into this folder (sub-folders kept)")
    batching(cap)
    query = sub.add_parser("query", help="rank the image's regions by similarity to a phrase; prints JSON")
    common(query)
    query.add_argument("phrase", help='e.g. "a red circle"')
    query.add_argument("--top-k", type=_count(1), default=3, help="matches to report (default 3)")

    def collection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--index", required=True, help="index folder (embedded Qdrant), or the index's name "
                       "on the server given by --qdrant-url")
        p.add_argument("--qdrant-url", default=os.environ.get(QDRANT_URL_ENV) or None,
                       help=f"Qdrant server URL (default: ${QDRANT_URL_ENV}; none: the embedded mode)")
        p.add_argument("--model", default=None,
                       help="model folder or Hub repo id (default: $REGIONCAP_MODEL or assets/demo-model)")
        p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
        p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")

    index = sub.add_parser("index", help="add photos (files or folders, recursive) to a searchable index")
    index.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    collection(index)
    batching(index)
    index.add_argument("--prune", action="store_true", help="also forget indexed files that no longer exist")
    index.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="analyse on a Ray cluster with Ray Data (ADDRESS: the cluster's; none: a local Ray); "
                       "needs: pip install -r requirements-scale.txt")
    index.add_argument("--max-regions", type=_count(0), default=10, help="most regions per image (default 10)")
    index.add_argument("--threshold", type=_fraction, default=0.5, help="detector score threshold (default 0.5)")
    search = sub.add_parser("search", help="find images (by sentence) or regions (by phrase) in an index")
    search.add_argument("text", metavar="TEXT", help='e.g. "a red circle next to a blue square"')
    collection(search)
    search.add_argument("--by", choices=("images", "regions"), default="images",
                        help="rank images by S_kl (default) or single regions by similarity")
    search.add_argument("--top-k", type=_count(1), default=10, help="results to report (default 10)")
    return parser


def _load_model(args, text_only: bool = False):
    """(name, model): the whole RegionCaptioner, or with ``text_only`` its text side (a search needs no
    detector, so no torchvision either: ``python -m regioncap search`` starts in about ``import torch``'s time)."""
    import torch

    from regioncap import hub

    if text_only:
        from regioncap.models.text_model import TextModel as cls
    else:
        from regioncap.models.model import RegionCaptioner as cls
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RegionCapError("--device cuda: no CUDA device is available; use --device cpu")
    name = args.model or hub.default_model_path()
    if args.model is None and not Path(name).is_dir() and name == hub.DEFAULT_MODEL:
        raise RegionCapError(f"no model given and the default model folder {hub.DEFAULT_MODEL} does not exist; "
                             f"pass --model DIR_OR_REPO or set {hub.MODEL_ENV}")
    return name, cls.from_pretrained(name, revision=args.revision, device=args.device)


def _open_index(args, model, create: bool):
    from regioncap.index import open_index

    settings = {"max_regions": args.max_regions, "score_threshold": args.threshold} if create else {}
    return open_index(args.index, model, args.qdrant_url, create=create, **settings)  # the app's naming too


def run_collection(args) -> dict:
    """``index`` / ``search``: a thin layer over RegionIndex."""
    if args.command == "search" and not args.qdrant_url and not Path(args.index).is_dir():
        raise RegionCapError(f"{args.index}: no index there (build one with `python -m regioncap index PHOTOS "
                             f"--index {args.index}`)")  # before the model loads: a typo fails fast
    if args.command == "search":
        import torch

        # a search is a few tiny matrix products: on a busy CPU each one can wait tens of milliseconds for
        # torch's thread team (measured: 15 ms for an [11, 256] x [256, 3] product at load average 7)
        torch.set_num_threads(1)
    if getattr(args, "ray", None) is not None:
        from regioncap.index.distributed import require_ray

        require_ray(args.ray)  # before the model loads: a missing Ray or a cluster not there fails fast
    name, model = _load_model(args, text_only=args.command == "search")
    with _open_index(args, model, create=args.command == "index") as index:
        if args.command == "search":
            results = index.search(args.text, by=args.by, top_k=args.top_k)
            return {"query": args.text, "by": args.by, "results": [r.to_dict() for r in results]}
        from tqdm import tqdm

        bar = functools.partial(tqdm, file=sys.stderr, unit="img", desc="indexing", dynamic_ncols=True)
        if args.ray is not None:
            from regioncap.index.distributed import index_with_ray

            counts = index_with_ray(index, args.paths, address=args.ray or None, progress=bar,
                                    batch_size=args.batch_size, workers=args.workers, revision=args.revision)
        else:
            counts = index.add(args.paths, progress=bar, batch_size=args.batch_size, workers=args.workers)
        removed = index.prune() if args.prune else 0
        return {"index": str(args.index), "model": name, "images": len(index), "added": counts["added"],
                "updated": counts["updated"], "unchanged": counts["unchanged"], "removed": removed,
                "failed": counts["failed"]}


def run(args) -> dict | None:
    """Run one command; returns the JSON-ready dict (None when it wrote JSON Lines itself)."""
    from regioncap.data.image import load_image

    if args.command in ("index", "search"):
        return run_collection(args)
    if args.command == "caption":
        if len(args.image) > 1 or Path(args.image[0]).is_dir():
            return caption_many(args)
        args.image = args.image[0]
        if args.output_dir is not None:
            args.output = args.output_dir / f"{Path(args.image).stem}.png"

    image = load_image(args.image)  # first: a bad image fails fast, before torch is imported
    name, model = _load_model(args)
    result = model.analyze(image, max_regions=args.max_regions, score_threshold=args.threshold)
    if args.command == "query":
        matches = result.query(args.phrase, top_k=args.top_k)
        return {"phrase": args.phrase,
                "matches": [{"box": r.box, "caption": r.caption, "similarity": round(sim, 4)} for r, sim in matches]}
    if args.output is not None:
        from regioncap.viz import draw_regions

        args.output.parent.mkdir(parents=True, exist_ok=True)
        draw_regions(image, result.regions).save(args.output, format="PNG")
    return caption_json(str(args.image), name, result)


def caption_json(image: str, model: str, result) -> dict:
    d = result.to_dict()
    return {"image": image, "width": d["width"], "height": d["height"], "model": model, "regions": d["regions"],
            "timings_ms": d["timings_ms"]}


def caption_many(args) -> None:
    """``caption`` over files and folders: one JSON line per image (the single-image keys and ``path``, or
    ``path`` and ``error``), a progress bar on stderr; decoding in threads, analysis in batches. Raises
    RegionCapError when no image could be read."""
    from tqdm import tqdm

    from regioncap import batch
    from regioncap.index.files import expand_paths

    files, missing = expand_paths(args.image)
    for path, why in missing:
        _line({"path": path, "error": f"{path}: {why}"})
    name, model = _load_model(args)
    root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path()
    results = batch.analyze_files(model, files, args.batch_size or batch.default_batch_size(args.device),
                                  args.workers, args.max_regions, args.threshold)
    done = 0
    for item, result in tqdm(results, total=len(files), file=sys.stderr, unit="img", desc="captioning",
                             dynamic_ncols=True):
        if result is None:
            _line({"path": str(item.path), "error": item.error})
            continue
        done += 1
        if args.output_dir is not None:
            from regioncap.data.image import load_image
            from regioncap.viz import draw_regions

            target = (args.output_dir / item.path.relative_to(root)).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            draw_regions(load_image(item.path), result.regions).save(target, format="PNG")
        _line({"path": str(item.path), **caption_json(str(item.path), name, result)})
    if not done:
        raise RegionCapError(f"no image could be read among {len(files) + len(missing)} paths")


def _line(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # Pillow's decoders log/warn their own complaint about a hostile file: one line is ours
        logging.getLogger("PIL").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", module="PIL")
    try:
        out = run(args)
    except (RegionCapError, OSError) as exc:
        print(f"regioncap: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    if out is not None:  # None: JSON Lines, already written
        sys.stdout.write(to_json(out) + "\n")
    return 0


_NUMBER_LIST = re.compile(r"\[\s+(-?[\d.eE+-]+(?:,\s+-?[\d.eE+-]+)*)\s+\]")


def to_json(data: dict) -> str:
    """Indented JSON with lists of numbers (boxes) kept on one line."""
    text = json.dumps(data, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split())
