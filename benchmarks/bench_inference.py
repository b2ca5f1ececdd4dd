"""Inference speed benchmark (issue 6): the seed's per-box pipeline against ours, on the same boxes.

Variants, timed in one run, interleaved round-robin per repeat, after warm-up; medians reported:

  a  reference: the original design written out plainly here (per box: PIL crop -> resize -> to tensor
     -> [-1, 1] -> VGG-19 features -> avg-pool 7x7 -> random FC -> L2 norm; then a GRUCell greedy loop,
     one region at a time). It shares no code with regioncap, only torchvision.
  b  ours, region_encoder.kind="vgg19": ``analyze(image, boxes=...)`` (batched crops, batched decoding)
  c  ours, the given model (roi encoder): ``analyze(image, boxes=...)``; "c+det" is plain ``analyze(image)``
  d  the detector's forward pass alone (``model.detector([tensor])``, eval, inference_mode): c's floor
  e  ``result.query(phrase)`` on an analysed image (cached region vectors)
  c0 with ``--baseline-model DIR``: that model's ``analyze(image, boxes=...)``, e.g. the previous demo
     model, so that what a model change costs per image is a ratio of one run (c/c0)
  g  ours, ``analyze(image, boxes=..., objects=detections)`` as train.evaluate and the app call it, with
     ``--group-boxes`` (default 1) of the boxes the box of two detected objects: captions of boxes made up
     of several objects (``captioner.group_weight``) at their cost; g/c0 with ``--baseline-model``

Peak memory: every variant runs once more in a fresh subprocess; after setup (imports, model) the
kernel's peak-RSS counter is reset (``/proc/self/clear_refs`` <- 5), then ``VmHWM`` of
``/proc/self/status`` is read after the run: "peak" is that process's peak RSS, "+run" its growth
over the RSS before the run. ``--app-memory N`` loads the model as the app does and analyses N images.

    python benchmarks/bench_inference.py [--model DIR] [--images 3] [--repeats 5] [--regions 10,36]
    python benchmarks/bench_inference.py --photo [--json OUT]     # real-resolution rows only (bench_photo.py)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torchvision.transforms.functional import to_tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from _common import (Reference, load_model, loadavg, make_boxes, make_images, reset_peak, rss_mb,  # noqa: E402
                     scene, vgg_twin)

from regioncap.models.model import RegionCaptioner  # noqa: E402

DEFAULT_MODEL = ROOT / "assets" / "demo-model"
PHRASE = "a large red circle"
VARIANTS = ("a", "b", "c", "c0", "g", "c+det", "d", "e")
LABELS = {"a": "(a) reference per-box VGG-19 + per-region GRU", "b": "(b) ours, vgg19 encoder, given boxes",
          "c": "(c) ours, roi encoder, given boxes", "c0": "(c0) baseline model, given boxes",
          "g": "(g) ours, given boxes + objects (two objects' boxes)",
          "c+det": "(c) ours, full analyze() with detection",
          "d": "(d) detector forward only", "e": "(e) result.query(phrase)"}
PER_REGIONS = ("a", "b", "c", "c0", "g")  # variants that run once per region count
TARGETS = [("a/c", 10, ">=", 10.0), ("a/b", 10, ">=", 2.0), ("a/b", 36, ">=", 2.0),
           ("c/d", 10, "<=", 1.25), ("c/d", 36, "<=", 1.5)]


# -- the variants ---------------------------------------------------------------------------------
def build_runners(args, names: set[str]) -> tuple[dict, dict]:
    """(``{variant: fn(image_index, n_regions) -> dict of notes}``, setup info); models built once."""
    device = torch.device(args.device)
    model, model_name = load_model(args.model, device)
    images = make_images(args.images, args.image_size)
    boxes = {(i, n): make_boxes(im, n, 1000 * i + n) for i, im in enumerate(images) for n in args.regions}
    runners, info = {}, {"model": model_name, "image_sizes": [im.size for im in images]}
    if "a" in names:
        rnn = model.config.captioner
        state = ({k[len("captioner."):]: v for k, v in model.state_dict().items() if k.startswith("captioner.")}
                 if rnn.rnn == "gru" and rnn.num_layers == 1 else None)
        ref = Reference(model.config, state, device)
        runners["a"] = lambda i, n: {"words": sum(map(len, ref(images[i], boxes[i, n])))}
    if "b" in names:
        twin = vgg_twin(model, device)
        runners["b"] = lambda i, n: _words(twin.analyze(images[i], boxes=boxes[i, n]))
    if "c" in names:
        runners["c"] = lambda i, n: _words(model.analyze(images[i], boxes=boxes[i, n]))
    if "c0" in names and args.baseline_model:
        baseline = load_model(args.baseline_model, device)[0]
        runners["c0"] = lambda i, n: _words(baseline.analyze(images[i], boxes=boxes[i, n]))
    if "g" in names:
        found = [model.analyze(im, max_regions=100, score_threshold=0.05, captions=False) for im in images]
        paired = {(i, n): _pair_boxes(found[i], min(n, args.group_boxes)) + boxes[i, n]
                  for i in range(len(images)) for n in args.regions}
        runners["g"] = lambda i, n: _words(model.analyze(images[i], boxes=paired[i, n][:n], objects=found[i]))
    if "c+det" in names:
        runners["c+det"] = lambda i, n: _words(model.analyze(images[i], max_regions=args.max_regions,
                                                             score_threshold=args.threshold))

    def detect(i, n):
        with torch.inference_mode():
            model.detector.eval()([to_tensor(images[i]).to(device)])
        return {}

    if "d" in names:
        runners["d"] = detect
    if "e" in names:
        phrase = query_phrase(model)
        analysed = [model.analyze(im, boxes=boxes[i, min(args.regions)]) for i, im in enumerate(images)]
        runners["e"] = lambda i, n: {"matches": len(analysed[i].query(phrase))}
    return runners, info


def _pair_boxes(found, n: int) -> list[list[float]]:
    """Up to n boxes each enclosing two neighbouring confident detections of ``found``."""
    det = [r.box for r in found.regions if r.score >= 0.5]
    pairs = [[min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])] for a, b in zip(det, det[1:])]
    return pairs[:n]


def query_phrase(model: RegionCaptioner) -> str:
    """PHRASE if the model knows one of its words, else the vocabulary's first word."""
    return PHRASE if any(w in model.vocab for w in PHRASE.split()[1:]) else model.vocab.id_to_token[4]


def _words(result) -> dict:
    """Regions, caption words and analyze()'s own stage timings (ms) of one result."""
    out = {"regions": len(result.regions), "words": sum(len(r.caption.split()) for r in result.regions)}
    out.update({f"{k}_ms": result.timings_ms[k] for k in ("detect", "encode", "caption")})
    return out


def time_all(args, runners) -> dict:
    """Interleaved: each repeat runs every (variant, regions) on every image, rotating the start."""
    keys = [(f"{v}@{n}" if v in PER_REGIONS else v, v, n if v in PER_REGIONS else min(args.regions))
            for v in VARIANTS if v in runners for n in (args.regions if v in PER_REGIONS else [0])]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    times, extra = {k[0]: [] for k in keys}, {k[0]: [] for k in keys}
    for rep in range(args.warmup + args.repeats):
        for key, v, n in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            for i in range(args.images):
                sync()
                t0 = time.perf_counter()
                out = runners[v](i, n)
                sync()
                if rep >= args.warmup:
                    times[key].append((time.perf_counter() - t0) * 1e3)
                    extra[key].append(out)
    return {k: {"median_ms": statistics.median(t), "min_ms": min(t), "samples": len(t),
                **{f"median_{f}": statistics.median(o[f] for o in extra[k]) for f in (extra[k][0] if extra[k] else {})}}
            for k, t in times.items() if t}


def measure_here(args, key: str) -> dict:
    """Run one variant once on the first image in this process: (peak RSS, its growth over setup) in MiB."""
    v, _, n = key.partition("@")
    runners, _ = build_runners(args, {v})
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    reset = reset_peak()
    base = rss_mb("VmRSS")
    runners[v](0, int(n) if n else min(args.regions))  # peak memory does not grow with more images
    peak = rss_mb("VmHWM")
    out = {"peak_mb": round(peak, 1), "run_mb": round(peak - base, 1), "reset": reset}
    if args.device.startswith("cuda"):
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def measure_subprocess(argv: list[str], key: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--_measure", key]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def app_memory(args) -> dict:
    """RSS while the app's own handlers serve N different uploads, in this (fresh) process.

    With a model folder, app.py's ModelHolder loads it and RegionApp.analyze / caption_outputs /
    query_outputs handle every image (JPEG uploads in a temp folder), so its result cache (32 entries)
    and output files count; without one (random weights), analyze + query are called directly.
    """
    import tempfile

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rss, mode = {"start": rss_mb("VmRSS")}, "RegionCaptioner.analyze + query (random weights)"
    if args.model and args.device == "cpu":
        import app as webapp  # the repository root is on sys.path

        holder = webapp.ModelHolder(args.model)
        holder.load()
        service, model, mode = webapp.RegionApp(holder), holder.get(), "app.py handlers (gradio imported)"
    else:
        model = load_model(args.model, torch.device(args.device))[0]
    rss["model loaded"] = rss_mb("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.app_memory):
            image = scene(11, k, args.image_size)
            if mode.startswith("app.py"):
                image.save(path := f"{tmp}/upload{k}.jpg", quality=90)
                view = service.analyze(path, args.max_regions, args.threshold)
                service.caption_outputs(view)
                if view.result.regions:
                    service.query_outputs(view, query_phrase(model), 3)
            else:
                model.analyze(image, max_regions=args.max_regions, score_threshold=args.threshold).query(
                    query_phrase(model))
            if k + 1 in (1, 10, 32) or k + 1 == args.app_memory:
                rss[f"after {k + 1} images"] = rss_mb("VmRSS")
    return {"mode": mode, "rss_mb": {k: round(v, 1) for k, v in rss.items()}, "peak_mb": round(rss_mb("VmHWM"), 1)}


# -- report ---------------------------------------------------------------------------------------
def ratios(args, res: dict) -> dict:
    out = {}
    for n in args.regions:
        a, b, c, d = (res.get(k, {}).get("median_ms") for k in (f"a@{n}", f"b@{n}", f"c@{n}", "d"))
        out[f"a/b@{n}"] = a / b if a and b else None
        out[f"a/c@{n}"] = a / c if a and c else None
        out[f"c/d@{n}"] = c / d if c and d else None
        c0, g = (res.get(k, {}).get("median_ms") for k in (f"c0@{n}", f"g@{n}"))
        if c0:
            out[f"c/c0@{n}"] = c / c0 if c else None
            out[f"g/c0@{n}"] = g / c0 if g else None
    return out


def check_targets(res: dict, rat: dict, app: dict | None) -> list[dict]:
    checks = []
    for name, n, op, limit in TARGETS:
        value = rat.get(f"{name}@{n}")
        ok = None if value is None else (value >= limit if op == ">=" else value <= limit)
        checks.append({"target": f"{name} @{n} regions {op} {limit}", "value": value, "met": ok})
    if rat.get("c/c0@10") is not None:
        checks.append({"target": "c/c0 @10 regions <= 1.25 (vs --baseline-model)", "value": rat["c/c0@10"],
                       "met": rat["c/c0@10"] <= 1.25})
    if rat.get("g/c0@10") is not None:
        checks.append({"target": "g/c0 @10 regions <= 1.25 (vs --baseline-model)", "value": rat["g/c0@10"],
                       "met": rat["g/c0@10"] <= 1.25})
    e = res.get("e", {}).get("median_ms")
    checks.append({"target": "(e) query median <= 20 ms", "value": e, "met": None if e is None else e <= 20})
    if app and "rss_mb" in app:
        after = list(app["rss_mb"].values())[-1]
        checks.append({"target": "app RSS < 1500 MB after the images", "value": after, "met": after < 1500})
    return checks


def print_report(report: dict) -> None:
    cfg = report["setup"]
    print(f"model: {cfg['model']} | device {cfg['device']} | threads {cfg['threads']} | images {cfg['images']} "
          f"(long side {cfg['image_size']} px) | repeats {cfg['repeats']} + warm-up {cfg['warmup']} | "
          f"load average (1/5/15 min) {cfg['loadavg_start']} at start, {cfg['loadavg_end']} at end")
    print(f"{'variant':50} {'regions':>7} {'median ms':>10} {'min ms':>9} {'peak MB':>8} {'+run MB':>8}  "
          "notes (medians per call; *_ms: analyze()'s own stage timings)")
    for key, r in report["results"].items():
        v, _, n = key.partition("@")
        mem = r.get("memory", {})
        notes = ", ".join(f"{k[7:]} {x:.1f}" for k, x in r.items() if k.startswith("median_") and k != "median_ms")
        print(f"{LABELS[v]:50} {n or '-':>7} {r['median_ms']:10.1f} {r['min_ms']:9.1f} "
              f"{mem.get('peak_mb', '-'):>8} {mem.get('run_mb', '-'):>8}  {notes}")
    print("ratios (medians): " + "  ".join(f"{k} = {v:.2f}" if v else f"{k} = -" for k, v in report["ratios"].items()))
    if report.get("app_memory") and "rss_mb" in report["app_memory"]:
        app = report["app_memory"]
        print(f"app memory, {app['mode']} (RSS MB): " + ", ".join(f"{k} {v}" for k, v in app["rss_mb"].items())
              + f"; peak {app['peak_mb']}")
    elif report.get("app_memory"):
        print(f"app memory: failed: {report['app_memory']}")
    for t in report["targets"]:
        mark = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        print(f"target {t['target']:40} {value:>9}  {mark}")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL) if DEFAULT_MODEL.is_dir() else None,
                   help="model folder (default assets/demo-model if present, else random weights); "
                        "'random': random weights with the default config")
    p.add_argument("--baseline-model", default=None, metavar="DIR",
                   help="also time this model's analyze(image, boxes) (variant c0; ratio c/c0)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--regions", type=lambda s: sorted({int(x) for x in s.split(",")}), default=[10, 36])
    p.add_argument("--image-size", type=int, default=500, help="long side of the test images in px")
    p.add_argument("--max-regions", type=int, default=10, help="for analyze() with detection")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="for analyze() with detection (default 0: max-regions detections even with random weights)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--group-boxes", type=int, default=1,
                   help="variant g: how many of the boxes enclose two detected objects (default 1)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="subset to time, e.g. c,d ('none': no timing)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant subprocess RSS runs")
    p.add_argument("--app-memory", type=int, default=50, metavar="N",
                   help="in a fresh process, load the model like the app and analyse N images (0: skip)")
    p.add_argument("--photo", action="store_true",
                   help="only the real-resolution rows (benchmarks/bench_photo.py): COCO detectors, VGG-19 encoders")
    p.add_argument("--photo-images", type=int, default=2, help="--photo: photo-preset pictures (~500x375)")
    p.add_argument("--photo-archs", type=lambda s: [a for a in s.split(",") if a],
                   default=["mobilenet_v3_large_fpn", "resnet50_fpn_v2"], help="--photo: detectors ('' for none)")
    p.add_argument("--no-vgg", action="store_true", help="--photo: skip the VGG-19 rows")
    p.add_argument("--photo-model", default=None, metavar="DIR",
                   help="--photo: also time this trained model folder's detector (benchmarks/train_bench_detector.sh)")
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    args.model = None if args.model == "random" else args.model
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.photo:
        import bench_photo

        report = bench_photo.photo_report(args)
        bench_photo.print_photo(report)
        if args.json:
            Path(args.json).write_text(json.dumps({"photo": report}, indent=2))
        return {"photo": report}
    if args._measure:
        print(json.dumps(app_memory(args) if args._measure == "app" else measure_here(args, args._measure)))
        return {}
    names = set(args.variants.split(",")) & set(VARIANTS)
    setup = {"model": args.model or "random weights, default config", "device": args.device,
             "threads": torch.get_num_threads(), "images": args.images, "image_size": args.image_size,
             "repeats": args.repeats, "warmup": args.warmup, "regions": args.regions, "loadavg_start": loadavg()}
    results = {}
    if names:
        runners, info = build_runners(args, names)
        setup.update(info)
        results = time_all(args, runners)
        del runners
        gc.collect()
    if not args.no_memory:
        for key in results:
            results[key]["memory"] = measure_subprocess(argv, key)
    app = measure_subprocess(argv, "app") if args.app_memory > 0 else None
    setup["loadavg_end"] = loadavg()
    rat = ratios(args, results)
    report = {"setup": setup, "results": results, "ratios": rat, "app_memory": app,
              "targets": check_targets(results, rat, app)}
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
