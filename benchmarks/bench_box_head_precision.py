"""What bf16 or int8 in the detector's box head (fc6 + fc7) does to the detections (issue 23).

    python benchmarks/bench_box_head_precision.py [--model DIR] [--images 4] [--top 20] [--json OUT]

For torchvision's eager Faster R-CNN on photo-preset pictures (~500x375, 800-px input, 1,000 proposals),
the box head runs in fp32 (reference), in bf16 (weights and input cast, output back to fp32) and in int8
(``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantised per tensor at run time);
everything else stays fp32. Each variant's top detections are matched to the reference's box to box
(``bench_photo.match_detections``: same label, best IoU >= 0.5). Rows for the random, calibrated
detector of ``bench_inference.py --photo`` and, with ``--model``, for a trained one
(``benchmarks/train_bench_detector.sh``): a random head's scores are near-ties everywhere, a trained
head's are not, and only the trained head says what a user would see. Also printed: how many
class-box pairs pass the 0.05 score threshold per photo (what NMS gets).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms.functional import to_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_photo import detector_model, match_detections, photos, torchvision_eager  # noqa: E402


class _Bf16(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = copy.deepcopy(head).to(torch.bfloat16)

    def forward(self, x):
        return self.head(x.to(torch.bfloat16)).float()


class _Timed(nn.Module):
    """``module``, each call's milliseconds appended to ``times``."""

    def __init__(self, module: nn.Module, times: list[float]):
        super().__init__()
        self.module, self.times = module, times

    def forward(self, x):
        t = time.perf_counter()
        out = self.module(x)
        self.times.append((time.perf_counter() - t) * 1e3)
        return out


def variants(head: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.quantization import quantize_dynamic

    return {"fp32": head, "bf16": _Bf16(head).eval(),
            "int8": quantize_dynamic(copy.deepcopy(head), {nn.Linear}, dtype=torch.qint8).eval()}


def measure(name: str, model, images: list, top: int) -> dict:
    eager = torchvision_eager(model)
    heads = eager.roi_heads
    original = heads.box_head
    timings: dict[str, list[float]] = {}
    passing: list[int] = []

    def count_passing(_module, _inputs, output):  # class-box pairs over the score threshold
        scores = torch.softmax(output[0], -1)[:, 1:]
        passing.append(int((scores > heads.score_thresh).sum()))

    labels = model.config.entity_types
    detections: dict[str, list] = {}
    hook = heads.box_predictor.register_forward_hook(count_passing)
    for kind, head in variants(original).items():
        heads.box_head = _Timed(head, timings.setdefault(kind, []))
        with torch.inference_mode():
            out = [eager([to_tensor(im)])[0] for im in images]
        detections[kind] = [[(b, labels[int(c) - 1]) for b, c in zip(d["boxes"][:top].tolist(), d["labels"][:top])]
                            for d in out]
        if kind == "fp32":
            hook.remove()
    heads.box_head = original
    report = {"name": name, "pairs_over_threshold_per_photo": passing,
              "box_head_ms": {k: round(statistics.median(v), 1) for k, v in timings.items()}, "variants": {}}
    for kind in ("bf16", "int8"):
        per_image = [match_detections(ours, ref) for ours, ref in zip(detections[kind], detections["fp32"])]
        report["variants"][kind] = {
            "detections": sum(len(d) for d in detections[kind]), "matched": sum(m["matched"] for m in per_image),
            "unmatched": sum(len(m["unmatched_ours"]) for m in per_image),
            "box_max_diff_px": max(m["box_max_diff_px"] for m in per_image),
            "same_order_images": sum(m["same_order"] for m in per_image)}
    report["reference_detections"] = sum(len(d) for d in detections["fp32"])
    return report


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, metavar="DIR", help="a trained model folder (its detector)")
    p.add_argument("--images", type=int, default=4, help="photo-preset pictures")
    p.add_argument("--top", type=int, default=20, help="detections compared per image")
    p.add_argument("--arch", default="mobilenet_v3_large_fpn", help="the random detector's architecture")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)
    images = photos(args.images)
    rows = [measure(f"{args.arch} (random)", detector_model(args.arch), images, args.top)]
    if args.model:
        trained = detector_model("", args.model)
        rows.append(measure(f"{trained.config.detector.arch} (trained)", trained, images, args.top))
    for r in rows:
        print(f"{r['name']}: class-box pairs over the score threshold per photo {r['pairs_over_threshold_per_photo']}; "
              f"box head median ms {r['box_head_ms']}; reference top-{args.top} detections {r['reference_detections']}")
        for kind, v in r["variants"].items():
            print(f"  {kind}: {v['matched']} of {v['detections']} matched (same label, IoU >= 0.5), "
                  f"{v['unmatched']} unmatched, largest box difference among the matched {v['box_max_diff_px']} px, "
                  f"same order on {v['same_order_images']} of {len(images)} images")
    report = {"images": [im.size for im in images], "threads": torch.get_num_threads(), "top": args.top, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
