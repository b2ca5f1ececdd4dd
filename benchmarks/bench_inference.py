"""Inference speed benchmark (issue 6): the seed's per-box pipeline against ours, on the same boxes.

Variants, timed in one run, interleaved round-robin per repeat, after warm-up; medians reported:

  a  reference: the original design written out plainly here (per box: PIL crop -> resize -> to tensor
     -> [-1, 1] -> VGG-19 features -> avg-pool 7x7 -> random FC -> L2 norm; then a GRUCell greedy loop,
     one region at a time). It shares no code with regioncap, only torchvision.
  b  ours, region_encoder.kind="vgg19": ``analyze(image, boxes=...)`` (batched crops, batched decoding)
  c  ours, the given model (roi encoder): ``analyze(image, boxes=...)``; "c+det" is plain ``analyze(image)``
  d  the detector's forward pass alone (``model.detector([tensor])``, eval, inference_mode): c's floor
  e  ``result.query(phrase)`` on an analysed image (cached region vectors)

Peak memory: every variant runs once more in a fresh subprocess; after setup (imports, model) the
kernel's peak-RSS counter is reset (``/proc/self/clear_refs`` <- 5), then ``VmHWM`` of
``/proc/self/status`` is read after the run: "peak" is that process's peak RSS, "+run" its growth
over the RSS before the run. ``--app-memory N`` loads the model as the app does and analyses N images.

    python benchmarks/bench_inference.py [--model DIR] [--images 3] [--repeats 5] [--regions 10,36]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from regioncap.data import synthetic  # noqa: E402
from regioncap.data.flickr30k import ENTITY_TYPES  # noqa: E402
from regioncap.data.vocab import END, PAD, START, UNK, Vocabulary  # noqa: E402
from regioncap.models.config import RegionCaptionerConfig  # noqa: E402
from regioncap.models.model import RegionCaptioner  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo-model"
PHRASE = "a large red circle"
VARIANTS = ("a", "b", "c", "c+det", "d", "e")
LABELS = {"a": "(a) reference per-box VGG-19 + per-region GRU", "b": "(b) ours, vgg19 encoder, given boxes",
          "c": "(c) ours, roi encoder, given boxes", "c+det": "(c) ours, full analyze() with detection",
          "d": "(d) detector forward only", "e": "(e) result.query(phrase)"}
PER_REGIONS = ("a", "b", "c")  # variants that run once per region count
TARGETS = [("a/c", 10, ">=", 10.0), ("a/b", 10, ">=", 2.0), ("a/b", 36, ">=", 2.0),
           ("c/d", 10, "<=", 1.25), ("c/d", 36, "<=", 1.5)]


# -- the reference: the original design, written plainly ----------------------------------------
class Reference:
    """The seed's pipeline: one crop, one VGG-19 pass, one greedy GRU loop per region (batch size 1)."""

    def __init__(self, config: RegionCaptionerConfig, decoder_state: dict | None, device: torch.device):
        cap, d = config.captioner, config.joint_dim
        self.crop, self.max_len, self.device = config.region_encoder.vgg_crop_size, cap.max_len, device
        self.features = torchvision.models.vgg19(weights=None).features  # random weights: no download
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.fc = nn.Linear(512 * 7 * 7, d)
        self.embed = nn.Embedding(config.vocab_size, cap.embed_dim)
        self.cell = nn.GRUCell(cap.embed_dim + d, cap.hidden_dim)
        self.init_h = nn.Linear(d, cap.hidden_dim)
        self.out = nn.Linear(cap.hidden_dim, config.vocab_size)
        if decoder_state is not None:  # our decoder's weights, so both write captions of similar length
            self.embed.weight.data.copy_(decoder_state["embed.weight"])
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).data.copy_(decoder_state[f"rnn.{name}_l0"])
            for part in ("init_h", "out"):
                getattr(self, part).weight.data.copy_(decoder_state[f"{part}.weight"])
                getattr(self, part).bias.data.copy_(decoder_state[f"{part}.bias"])
        for m in (self.features, self.fc, self.embed, self.cell, self.init_h, self.out):
            m.to(device).eval()

    def encode(self, image: Image.Image, box) -> torch.Tensor:
        crop = image.crop(tuple(int(round(c)) for c in box)).resize((self.crop, self.crop), Image.BILINEAR)
        x = to_tensor(crop)[None].to(self.device) * 2.0 - 1.0  # [1, 3, S, S] in [-1, 1]
        v = self.fc(torch.flatten(self.pool(self.features(x)), 1))
        return F.normalize(v, dim=-1)  # [1, D]

    def decode(self, v: torch.Tensor) -> list[int]:
        h = torch.tanh(self.init_h(v))
        word, words = torch.tensor([START], device=self.device), []
        for step in range(self.max_len):
            h = self.cell(torch.cat([self.embed(word), v], dim=1), h)
            logp = F.log_softmax(self.out(h), dim=-1)[0]
            logp[[PAD, START, UNK]] = float("-inf")
            if step == 0:
                logp[END] = float("-inf")
            best = int(logp.argmax())
            if best == END:
                break
            words.append(best)
            word = torch.tensor([best], device=self.device)
        return words

    def __call__(self, image: Image.Image, boxes: list[list[float]]) -> list[list[int]]:
        with torch.inference_mode():
            vectors = [self.encode(image, b) for b in boxes]
            return [self.decode(v) for v in vectors]


# -- inputs ---------------------------------------------------------------------------------------
def scene(seed: int, index: int, size: int) -> Image.Image:
    """Synthetic scene ``index`` of set ``seed``, scaled so that its long side is ``size`` px."""
    im = synthetic.make_example(seed, index, str(index))[0]
    scale = size / max(im.size)
    return im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))), Image.BILINEAR)


def make_images(n: int, size: int) -> list[Image.Image]:
    return [scene(7, 10_000 + i, size) for i in range(n)]


def make_boxes(image: Image.Image, n: int, seed: int) -> list[list[float]]:
    """``n`` boxes, 10-60 % of the image's width/height each, at least 4 px; same seed -> same boxes."""
    g = torch.Generator().manual_seed(seed)
    w, h = image.size
    r = torch.rand(n, 4, generator=g).tolist()
    boxes = []
    for a, b, c, d in r:
        bw, bh = max(4.0, w * (0.1 + 0.5 * a)), max(4.0, h * (0.1 + 0.5 * b))
        x, y = (w - bw) * c, (h - bh) * d
        boxes.append([round(x, 1), round(y, 1), round(x + bw, 1), round(y + bh, 1)])
    return boxes


def synthetic_vocab() -> Vocabulary:
    words = (list(synthetic.SHAPE_TYPES) + list(synthetic.PLURAL.values()) + list(synthetic.COLOURS)
             + list(synthetic.SIZES) + synthetic.PATTERNS + [b[0] for b in synthetic.BACKGROUNDS]
             + [n for b in synthetic.BACKGROUNDS for n in b[1]] + ["a", "an", "the", "on", "in", "with", "two"])
    return Vocabulary.build(words)


def load_model(path: str | None, device: torch.device) -> tuple[RegionCaptioner, str]:
    if path:
        return RegionCaptioner.from_pretrained(path, device=device), str(path)
    torch.manual_seed(0)
    vocab = synthetic_vocab()
    config = RegionCaptionerConfig(vocab_size=len(vocab), entity_types=list(ENTITY_TYPES))
    return RegionCaptioner(config, vocab, download=False).to(device).eval(), "random weights, default config"


def vgg_twin(model: RegionCaptioner, device: torch.device) -> RegionCaptioner:
    """The same model with region_encoder.kind='vgg19' (random VGG, no download); the rest copied."""
    config = RegionCaptionerConfig.from_dict(model.config.to_dict())
    config.region_encoder.kind, config.region_encoder.pretrained = "vgg19", False
    twin = RegionCaptioner(config, model.vocab, download=False)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("region_encoder.")}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("region_encoder.") for k in missing), (missing, unexpected)
    return twin.to(device).eval()


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


# -- memory ---------------------------------------------------------------------------------------
def _status(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure_here(args, key: str) -> dict:
    """Run one variant once on the first image in this process: (peak RSS, its growth over setup) in MiB."""
    v, _, n = key.partition("@")
    runners, _ = build_runners(args, {v})
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    reset = _reset_peak()
    base = _status("VmRSS")
    runners[v](0, int(n) if n else min(args.regions))  # peak memory does not grow with more images
    peak = _status("VmHWM")
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
    rss, mode = {"start": _status("VmRSS")}, "RegionCaptioner.analyze + query (random weights)"
    if args.model and args.device == "cpu":
        import app as webapp  # the repository root is on sys.path

        holder = webapp.ModelHolder(args.model)
        holder.load()
        service, model, mode = webapp.RegionApp(holder), holder.get(), "app.py handlers (gradio imported)"
    else:
        model = load_model(args.model, torch.device(args.device))[0]
    rss["model loaded"] = _status("VmRSS")
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
                rss[f"after {k + 1} images"] = _status("VmRSS")
    return {"mode": mode, "rss_mb": {k: round(v, 1) for k, v in rss.items()}, "peak_mb": round(_status("VmHWM"), 1)}


# -- report ---------------------------------------------------------------------------------------
def ratios(args, res: dict) -> dict:
    out = {}
    for n in args.regions:
        a, b, c, d = (res.get(k, {}).get("median_ms") for k in (f"a@{n}", f"b@{n}", f"c@{n}", "d"))
        out[f"a/b@{n}"] = a / b if a and b else None
        out[f"a/c@{n}"] = a / c if a and c else None
        out[f"c/d@{n}"] = c / d if c and d else None
    return out


def check_targets(res: dict, rat: dict, app: dict | None) -> list[dict]:
    checks = []
    for name, n, op, limit in TARGETS:
        value = rat.get(f"{name}@{n}")
        ok = None if value is None else (value >= limit if op == ">=" else value <= limit)
        checks.append({"target": f"{name} @{n} regions {op} {limit}", "value": value, "met": ok})
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
    p.add_argument("--variants", default=",".join(VARIANTS), help="subset to time, e.g. c,d ('none': no timing)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant subprocess RSS runs")
    p.add_argument("--app-memory", type=int, default=50, metavar="N",
                   help="in a fresh process, load the model like the app and analyse N images (0: skip)")
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    args.model = None if args.model == "random" else args.model
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._measure:
        print(json.dumps(app_memory(args) if args._measure == "app" else measure_here(args, args._measure)))
        return {}
    names = set(args.variants.split(",")) & set(VARIANTS)
    setup = {"model": args.model or "random weights, default config", "device": args.device,
             "threads": torch.get_num_threads(), "images": args.images, "image_size": args.image_size,
             "repeats": args.repeats, "warmup": args.warmup, "regions": args.regions, "loadavg_start": _load()}
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
    setup["loadavg_end"] = _load()
    rat = ratios(args, results)
    report = {"setup": setup, "results": results, "ratios": rat, "app_memory": app,
              "targets": check_targets(results, rat, app)}
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
