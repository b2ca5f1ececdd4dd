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

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("image", help="image file (JPEG, PNG, ...)")
        p.add_argument("--model", default=None,
                       help="model folder or Hub repo id (default: $REGIONCAP_MODEL or assets/demo-model)")
        p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
        p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
        p.add_argument("--max-regions", type=_count(0), default=10, help="most regions to report (default 10)")
        p.add_argument("--threshold", type=_fraction, default=0.5, help="detector score threshold (default 0.5)")

    cap = sub.add_parser("caption", help="detect regions and caption each; prints JSON")
    common(cap)
    cap.add_argument("--output", type=Path, default=None, help="also write an annotated PNG here")
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
    index.add_argument("--prune", action="store_true", help="also forget indexed files that no longer exist")
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
    from regioncap.index import RegionIndex

    settings = {"max_regions": args.max_regions, "score_threshold": args.threshold} if create else {}
    if args.qdrant_url:  # the index's name becomes the collection prefix on the server
        prefix = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(args.index).name or "regioncap")
        return RegionIndex(args.qdrant_url, model, create=create, prefix=prefix, **settings)
    return RegionIndex(args.index, model, create=create, **settings)


def run_collection(args) -> dict:
    """``index`` / ``search``: a thin layer over RegionIndex."""
    if args.command == "search" and not args.qdrant_url and not Path(args.index).is_dir():
        raise RegionCapError(f"{args.index}: no index there (build one with `python -m regioncap index PHOTOS "
                             f"--index {args.index}`)")  # before the model loads: a typo fails fast
    name, model = _load_model(args, text_only=args.command == "search")
    with _open_index(args, model, create=args.command == "index") as index:
        if args.command == "search":
            results = index.search(args.text, by=args.by, top_k=args.top_k)
            return {"query": args.text, "by": args.by, "results": [r.to_dict() for r in results]}
        from tqdm import tqdm

        bar = functools.partial(tqdm, file=sys.stderr, unit="img", desc="indexing", dynamic_ncols=True)
        counts = index.add(args.paths, progress=bar)
        removed = index.prune() if args.prune else 0
        return {"index": str(args.index), "model": name, "images": len(index), "added": counts["added"],
                "updated": counts["updated"], "unchanged": counts["unchanged"], "removed": removed,
                "failed": counts["failed"]}


def run(args) -> dict:
    """Run one command; returns the JSON-ready dict."""
    from regioncap.data.image import load_image

    if args.command in ("index", "search"):
        return run_collection(args)

    image = load_image(args.image)  # first: a bad image fails fast, before torch is imported
    name, model = _load_model(args)
    result = model.analyze(image, max_regions=args.max_regions, score_threshold=args.threshold)
    if args.command == "query":
        matches = result.query(args.phrase, top_k=args.top_k)
        return {"phrase": args.phrase,
                "matches": [{"box": r.box, "caption": r.caption, "similarity": round(sim, 4)} for r, sim in matches]}
    if args.output is not None:
        from regioncap.viz import draw_regions

        draw_regions(image, result.regions).save(args.output, format="PNG")
    d = result.to_dict()
    return {"image": str(args.image), "width": d["width"], "height": d["height"], "model": name,
            "regions": d["regions"], "timings_ms": d["timings_ms"]}


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
