"""Command line: ``python -m regioncap caption IMAGE``, ``query IMAGE PHRASE``, ``index PATH... --index DIR``
and ``search TEXT --index DIR``.

Prints JSON on stdout. A problem with the user's input (unreadable image, missing or unsafe
model, empty phrase) exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's rule for bad input: one line on stderr and exit code 2 (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def get_args_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="regioncap", description="Region captions and phrase grounding.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    def device(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where the model runs (default auto: CUDA when present, else the CPU)")

    def common(p: argparse.ArgumentParser, many: bool = False) -> None:
        if many:
            p.add_argument("image", nargs="+", metavar="IMAGE", help="image or video files or folders (recursive); "
                           "one image prints one JSON object, several (or a video) print JSON Lines")
        else:
            p.add_argument("image", help="image file (JPEG, PNG, ...)")
        p.add_argument("--model", default=None,
                       help="model folder or Hub repo id (default: $REGIONCAP_MODEL or assets/demo-model)")
        p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to pin")
        device(p)
        p.add_argument("--max-regions", type=_count(0), default=10, help="most regions to report (default 10)")
        p.add_argument("--threshold", type=_fraction, default=0.5, help="detector score threshold (default 0.5)")

    def batching(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch-size", type=_count(1), default=None,
                       help="images per model call (default: 8 on cuda, 1 on the cpu)")
        p.add_argument("--workers", type=_count(1), default=None,
                       help="threads that read and decode images ahead of the model (default: the CPU count, <= 8)")

    cap = sub.add_parser("caption", help="detect regions and caption each; prints JSON (JSON Lines for folders)")
    common(cap, many=True)
    cap.add_argument("--output", type=Path, default=None,
                     help="one image: also write an annotated copy here (JPEG for a .jpg name, else PNG; longest "
                     "side <= 1600 px); never over the input or a file regioncap did not write")
    cap.add_argument("--output-dir", type=Path, default=None,
                     help="write an annotated JPEG of every image into this folder as NAME.SUFFIX.regions.jpg "
                     "(sub-folders kept; longest side <= 1600 px); not an input folder, and never walked as input")
    cap.add_argument("--every", type=_seconds, default=0.5,
                     help="videos: seconds between analysed frames (default 0.5; 0: every frame)")
    cap.add_argument("--vtt", type=Path, default=None,
                     help="one video: also write its audio-description track (WebVTT, kind descriptions) here")
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
        device(p)

    index = sub.add_parser("index", help="add photos and videos (files or folders, recursive) to a searchable index")
    index.add_argument("paths", nargs="+", metavar="PATH", help="image or video files or folders")
    collection(index)
    batching(index)
    index.add_argument("--prune", action="store_true", help="also forget indexed files that no longer exist")
    index.add_argument("--every", type=_seconds, default=0.5,
                       help="videos: seconds between indexed frames (default 0.5; 0: every frame)")
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

    from regioncap import hub

    if text_only:
        from regioncap.models.text_model import TextModel as cls
    else:
        from regioncap.models.model import RegionCaptioner as cls
    args.device = resolve_device(args.device)
    name = args.model or hub.default_model_path()
    if args.model is None and not Path(name).is_dir() and name == hub.DEFAULT_MODEL:
        raise RegionCapError(f"no model given and the default model folder {hub.DEFAULT_MODEL} does not exist; "
                             f"pass --model DIR_OR_REPO or set {hub.MODEL_ENV}")
    return name, cls.from_pretrained(name, revision=args.revision, device=args.device)


def resolve_device(choice: str) -> str:
    """``--device``: "auto" is "cuda" when torch sees a CUDA device, else "cpu"; RegionCapError for "cuda"
    without one."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RegionCapError("--device cuda: no CUDA device is available; use --device cpu (or auto)")
    return choice


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
            counts = index.add(args.paths, progress=bar, batch_size=args.batch_size, workers=args.workers,
                               every=args.every)
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
        if len(args.image) > 1 or Path(args.image[0]).is_dir() or _is_video(args.image[0]):
            if args.output is not None:
                raise RegionCapError("--output is for one image; for several use --output-dir DIR")
            return caption_many(args)
        args.image = args.image[0]
        if args.vtt is not None:
            raise RegionCapError("--vtt is for a video; this is an image")

    image = load_image(args.image)  # first: a bad image fails fast, before torch is imported
    folder = _single_outputs(args) if args.command == "caption" else None
    name, model = _load_model(args)
    result = model.analyze(image, max_regions=args.max_regions, score_threshold=args.threshold)
    if args.command == "query":
        matches = result.query(args.phrase, top_k=args.top_k)
        return {"phrase": args.phrase,
                "matches": [{"box": r.box, "caption": r.caption, "similarity": round(sim, 4)} for r, sim in matches]}
    if args.output is not None:
        from regioncap import annotate

        annotate.write_one(image, result, args.output, Path(args.image))
    if folder is not None:
        folder.write(Path(args.image).resolve(), folder.preview(image), result)
    return caption_json(str(args.image), name, result)


def _is_video(path) -> bool:
    from regioncap.index.files import suffix_kinds

    return suffix_kinds().get(Path(path).suffix.lower()) == "video"


def _single_outputs(args):
    """One image: check ``--output`` now (before the model loads); the ``--output-dir`` folder, or None."""
    from regioncap import annotate

    if args.output is not None:
        annotate.check_target(args.output, {Path(args.image).resolve()})
    if args.output_dir is None:
        return None
    from regioncap.index.files import walk

    folder = annotate.OutputFolder(args.output_dir, [args.image])
    folder.add(walk([args.image]))
    return folder


def caption_json(image: str, model: str, result, path: str | None = None) -> dict:
    """The ``caption`` command's JSON for one image (``path`` first when given: a folder's JSON Lines);
    ``description`` is the scene narration (:meth:`AnalysisResult.describe`)."""
    d = result.to_dict()
    return {**({"path": path} if path is not None else {}), "image": image, "width": d["width"],
            "height": d["height"], "model": model, "description": result.describe(), "regions": d["regions"],
            "timings_ms": d["timings_ms"]}


def caption_many(args) -> None:
    """``caption`` over files and folders: one JSON line per image (:func:`caption_json` with ``path``, or
    ``path`` and ``error``: unreadable, not analysable, or its annotated copy not written), a progress bar
    on stderr; decoding in threads, analysis in batches. Then each video's lines
    (:mod:`regioncap.video.command`). Raises RegionCapError when no image or video could be read."""
    from tqdm import tqdm

    from regioncap import annotate, batch
    from regioncap.index.files import walk

    folder = annotate.OutputFolder(args.output_dir, args.image) if args.output_dir is not None else None
    found = walk(args.image, exclude=[args.output_dir] if folder is not None else ())
    if folder is not None:
        folder.add(found)
    files = [f.path for f in found.found if f.kind != "video"]
    videos = [f.path for f in found.found if f.kind == "video"]
    if videos or args.vtt is not None:
        from regioncap.video.command import check_vtt_option

        check_vtt_option(args, videos)
    for path, why in found.missing:
        _line({"path": path, "error": f"{path}: {why}"})
    name, model = _load_model(args)
    results = batch.analyze_files(model, files, args.batch_size or batch.default_batch_size(args.device),
                                  args.workers, args.max_regions, args.threshold,
                                  preview=annotate.DISPLAY_SIZE if folder is not None else None)
    done = 0
    with contextlib.closing(results):  # a closed pipe ends the run: the files not yet read are not read
        for item, result in tqdm(results, total=len(files), file=sys.stderr, unit="img", desc="captioning",
                                 dynamic_ncols=True):
            if result is not None and folder is not None:
                try:
                    folder.write(item.path, item.preview, result)
                except (RegionCapError, OSError) as e:
                    item.error, result = _one_line(e), None
                item.preview = None
            if result is None:
                _line({"path": str(item.path), "error": item.error})
                continue
            done += 1
            _line(caption_json(str(item.path), name, result, path=str(item.path)))
    if videos:
        from regioncap.video.command import caption_videos

        done += caption_videos(args, videos, folder, model, _line)
    if not done:
        total = len(files) + len(videos) + len(found.missing)
        what = f"among {total} paths" if total else "(no image or video file found)"
        raise RegionCapError(f"no image{' or video' if videos else ''} could be read {what}")


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
        if out is not None:  # None: JSON Lines, already written
            sys.stdout.write(to_json(out) + "\n")
            sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head -1`): what it wanted it has; end quietly
        _silence_stdout()
        return 0
    except (RegionCapError, OSError) as exc:
        print(f"regioncap: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit finds no closed pipe either
    (the recipe of Python's signal documentation, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout is no file (a test's capture)
        pass


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
