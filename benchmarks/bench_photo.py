"""Real-resolution rows of the inference benchmark (issue 12), ``bench_inference.py --photo``.

On photo-preset pictures (~500x375, Flickr30k's size), in one process, interleaved, medians:

* per COCO detector (mobilenet_v3_large_fpn, resnet50_fpn_v2; torchvision's defaults: 800-px input,
  1,000 proposals): torchvision's eager ``FasterRCNN`` forward alone (``GeneralizedRCNN`` built on
  the model's own transform/backbone/RPN/RoI heads), our whole ``analyze()`` (detection, region
  vectors, captions for 10 regions; the CPU fast path), and ``analyze()`` with the fast path off;
  the ratio eager / ours, and ours matched to eager's top detections box to box (:func:`match_detections`:
  same label, best IoU; the unmatched on each side and the largest box difference among the matched).
  Weights are random with trained-like statistics (``_common.calibrate_detector``): COCO weights
  cannot be downloaded here, and plain random heads score every proposal alike. ``--photo-model DIR``
  adds the rows of a trained detector (``benchmarks/train_bench_detector.sh``) beside them: a random
  head passes thousands of class-box pairs over the 0.05 score threshold, a trained one few.
* VGG-19 encoders on the same given boxes (10 and 36): ``vgg19`` (convolutions once per image +
  RoIAlign), ``vgg19-crops`` (a VGG-19 pass per crop, batched) and the literal per-box pipeline
  (``_common.Reference``); ratios literal / ours.
"""

from __future__ import annotations

import os

import torch
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.transforms.functional import to_tensor

from _common import Reference, calibrate_detector, interleaved, load_model, make_boxes, synthetic_vocab, vgg_twin
from regioncap.data.flickr30k import ENTITY_TYPES
from regioncap.data.synthetic.photo import make_example as photo_example
from regioncap.models.config import DetectorConfig, RegionCaptionerConfig
from regioncap.models.model import RegionCaptioner

ARCHS = ("mobilenet_v3_large_fpn", "resnet50_fpn_v2")
VGG_KINDS = ("vgg19", "vgg19-crops", "literal")
TARGETS = [("mobilenet_v3_large_fpn eager/ours", ">=", 2.0), ("literal/vgg19@36", ">=", 4.0),
           ("literal/vgg19@10", ">=", 1.5)]


def photos(n: int, seed: int = 7) -> list:
    return [photo_example(seed, 10_000 + i, str(i))[0] for i in range(n)]


def detector_model(arch: str, path: str | None = None) -> RegionCaptioner:
    """A RegionCaptioner with ``arch`` at torchvision's defaults, random weights calibrated on other photos;
    or, with ``path``, the same model around the detector of that trained model folder (its settings and
    weights; the rest as in the random rows, so that the rows differ in the detector alone: a folder's
    untrained caption decoder would write 20-word captions and time those)."""
    trained = RegionCaptioner.from_pretrained(path) if path else None
    torch.manual_seed(0)  # after loading (which draws random numbers): the random rows' other weights
    vocab = synthetic_vocab()
    config = RegionCaptionerConfig(vocab_size=len(vocab),
                                   entity_types=list(trained.config.entity_types if trained else ENTITY_TYPES),
                                   detector=trained.config.detector if trained else DetectorConfig.for_arch(arch))
    model = RegionCaptioner(config, vocab, download=False).eval()
    if trained:
        model.detector.load_state_dict(trained.detector.state_dict())
    else:
        calibrate_detector(model.detector, [to_tensor(im) for im in photos(2, seed=3)], logit_std=0.5)
    return model


def box_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou

    return box_iou(a, b) if len(a) and len(b) else torch.zeros(len(a), len(b))


def match_detections(ours: list[tuple[list[float], str]], ref: list[tuple[list[float], str]],
                     min_iou: float = 0.5) -> dict:
    """Match detections box to box: each of ``ours`` (best first) takes the unmatched ``ref`` detection of the
    same label with the highest IoU (at least ``min_iou``). Position-by-position comparison would call a
    swap of two near-tied detections a match while the boxes at each position differ.

    Args:
        ours, ref: [(box [x1, y1, x2, y2], label)], best first.

    Returns:
        dict: ``matched``, ``unmatched_ours`` / ``unmatched_ref`` (positions), ``box_max_diff_px`` (largest
        coordinate difference among the matched), ``same_order`` (every one matched, at its own position).
    """
    iou = box_iou_matrix(torch.tensor([b for b, _ in ours]).view(-1, 4), torch.tensor([b for b, _ in ref]).view(-1, 4))
    free, pairs = set(range(len(ref))), []
    for i, (_, label) in enumerate(ours):
        same = [j for j in free if ref[j][1] == label and iou[i, j] >= min_iou]
        best = max(same, key=lambda j: iou[i, j], default=None)
        if best is not None:
            free.discard(best)
            pairs.append((i, best))
    diff = max((max(abs(x - y) for x, y in zip(ours[i][0], ref[j][0])) for i, j in pairs), default=0.0)
    matched = {i for i, _ in pairs}
    return {"matched": len(pairs), "unmatched_ours": [i for i in range(len(ours)) if i not in matched],
            "unmatched_ref": sorted(free), "box_max_diff_px": round(float(diff), 3),
            "same_order": len(ours) == len(ref) == len(pairs) and all(i == j for i, j in pairs)}


def torchvision_eager(model: RegionCaptioner) -> GeneralizedRCNN:
    """torchvision's own FasterRCNN forward (GeneralizedRCNN) on the model's detector modules."""
    d = model.detector
    return GeneralizedRCNN(d.backbone, d.rpn, d.roi_heads, d.transform).eval()


def _with_fast_path(on: bool, fn):
    def run():
        old = os.environ.get("REGIONCAP_ONNXRUNTIME")
        os.environ["REGIONCAP_ONNXRUNTIME"] = "1" if on else "0"
        try:
            return fn()
        finally:
            if old is None:
                os.environ.pop("REGIONCAP_ONNXRUNTIME")
            else:
                os.environ["REGIONCAP_ONNXRUNTIME"] = old
    return run


def detector_runs(name: str, model: RegionCaptioner, images: list, max_regions: int) -> tuple[dict, dict]:
    """(runs for ``interleaved``, agreement of ours with eager's top detections over every image)."""
    eager = torchvision_eager(model)
    tensors = [to_tensor(im) for im in images]
    model.prepare_inference()  # the export happens once per process (the app does it while loading)
    agreement = {"regions": 0, "matched": 0, "unmatched_ours": 0, "unmatched_eager": 0, "box_max_diff_px": 0.0,
                 "same_order": True}
    for im, t in zip(images, tensors):
        with torch.inference_mode():
            ref = eager([t])[0]
        ours = model.analyze(im, max_regions=max_regions, score_threshold=0.0).regions
        theirs = [(b, model.config.entity_types[int(c) - 1])
                  for b, c in zip(ref["boxes"][:max_regions].tolist(), ref["labels"][:max_regions])]
        m = match_detections([(r.box, r.label) for r in ours], theirs)
        agreement["regions"] += len(ours)
        agreement["matched"] += m["matched"]
        agreement["unmatched_ours"] += len(m["unmatched_ours"])
        agreement["unmatched_eager"] += len(m["unmatched_ref"])
        agreement["box_max_diff_px"] = max(agreement["box_max_diff_px"], m["box_max_diff_px"])
        agreement["same_order"] &= m["same_order"]
    state = {"k": 0}

    def next_image():
        state["k"] = (state["k"] + 1) % len(images)
        return state["k"]

    def eager_forward():
        with torch.inference_mode():
            eager([tensors[next_image()]])

    def analyze():
        r = model.analyze(images[next_image()], max_regions=max_regions, score_threshold=0.0)
        return {"regions": len(r.regions), **{f"{k}_ms": r.timings_ms[k] for k in ("detect", "encode", "caption")}}

    runs = {f"{name}: torchvision eager detector": eager_forward,
            f"{name}: ours, analyze()": _with_fast_path(True, analyze),
            f"{name}: ours, analyze() without the fast path": _with_fast_path(False, analyze)}
    return runs, agreement


def vgg_runs(images: list, regions: list[int]) -> dict:
    base, _ = load_model(None, torch.device("cpu"))
    twins = {kind: vgg_twin(base, torch.device("cpu"), kind) for kind in ("vgg19", "vgg19-crops")}
    decoder = {k[len("captioner."):]: v for k, v in base.state_dict().items() if k.startswith("captioner.")}
    literal = Reference(base.config, decoder, torch.device("cpu"))  # our decoder's weights: same caption lengths
    boxes = {n: make_boxes(images[0], n, 100 + n) for n in regions}
    runs = {}
    for n in regions:
        for kind, twin in twins.items():
            runs[f"{kind}@{n}"] = (lambda t=twin, b=boxes[n]: {"regions": len(t.analyze(images[0], boxes=b).regions)})
        runs[f"literal@{n}"] = lambda b=boxes[n]: {"regions": len(literal(images[0], b))}
    return runs


def photo_report(args) -> dict:
    images = photos(args.photo_images)
    runs, agreement = {}, {}
    trained = getattr(args, "photo_model", None)
    models = [(f"{arch} (random)" if trained else arch, detector_model(arch)) for arch in args.photo_archs]
    if trained:
        model = detector_model("", trained)
        models.append((f"{model.config.detector.arch} (trained)", model))
    for name, model in models:
        r, agreement[name] = detector_runs(name, model, images, args.max_regions)
        runs.update(r)
    if not args.no_vgg:
        runs.update(vgg_runs(images, args.regions))
    results = interleaved(runs, args.repeats, args.warmup)
    ratios = {}
    for name, _ in models:
        eager = results[f"{name}: torchvision eager detector"]["median_ms"]
        ratios[f"{name} eager/ours"] = eager / results[f"{name}: ours, analyze()"]["median_ms"]
        ratios[f"{name} eager/ours-without-fast-path"] = eager / results[
            f"{name}: ours, analyze() without the fast path"]["median_ms"]
    for n in ([] if args.no_vgg else args.regions):
        for kind in ("vgg19", "vgg19-crops"):
            ratios[f"literal/{kind}@{n}"] = results[f"literal@{n}"]["median_ms"] / results[f"{kind}@{n}"]["median_ms"]
    targets = [{"target": f"{name} {op} {limit}", "value": ratios.get(name),
                "met": None if ratios.get(name) is None else ratios[name] >= limit} for name, op, limit in TARGETS]
    return {"images": [im.size for im in images], "threads": torch.get_num_threads(), "results": results,
            "agreement": agreement, "ratios": ratios, "targets": targets}


def print_photo(report: dict) -> None:
    print(f"photo rows: images {report['images']}, threads {report['threads']} (medians of interleaved runs)")
    print(f"{'variant':58} {'median ms':>10} {'min ms':>9}  notes")
    for key, r in report["results"].items():
        notes = ", ".join(f"{k[7:]} {x:.1f}" for k, x in r.items() if k.startswith("median_") and k != "median_ms")
        print(f"{key:58} {r['median_ms']:10.1f} {r['min_ms']:9.1f}  {notes}")
    for name, a in report["agreement"].items():
        print(f"{name}: ours vs eager's top detections, matched box to box (same label, best IoU >= 0.5): "
              f"{a['matched']} of {a['regions']} matched, unmatched ours {a['unmatched_ours']} / eager's "
              f"{a['unmatched_eager']}, largest box difference among the matched {a['box_max_diff_px']} px, "
              f"same order: {a['same_order']}")
    print("ratios (medians): " + "  ".join(f"{k} = {v:.2f}" for k, v in report["ratios"].items()))
    for t in report["targets"]:
        mark = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        print(f"target {t['target']:44} {'-' if t['value'] is None else format(t['value'], '.2f'):>7}  {mark}")
