"""Scene narration checked against ground truth (issue 31): on synthetic scenes of a seed the demo model
never saw, does the narration put each region where it really is, and does it mention every region?

    python benchmarks/bench_narration.py                        # 300 scenes of seed 31, assets/demo-model
    python benchmarks/bench_narration.py --images 50 --seed 5   # smaller, another seed
    python benchmarks/bench_narration.py --data DIR             # scenes already generated (split "test")

* **Position words**: each region the model finds that matches a ground-truth box (IoU >= 0.5, the best
  such box) is placed by the narration ("at the top left": the box centre's cell of a 3x3 grid,
  :func:`regioncap.narrate.place`); it agrees when the ground-truth box's centre is in the same cell.
  Target: >= 0.95 of the matched regions.
* **Every region mentioned**: a region whose caption no other region shares appears word for word in
  the narration; regions sharing a caption appear once, with their count ("two small red circles").
  Target: all of them.

Not a timed test: the scenes are generated (``python -m regioncap.data.synthetic``, the demo model was
trained on seed 1, tuned on seed 3, evaluated on seed 2) and the model runs on the CPU.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regioncap.narrate import describe, grid_cell, groups, plural  # noqa: E402

IOU = 0.5
TARGET_POSITION = 0.95


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score(regions, truth: list[list[float]], narration: str, width: float, height: float) -> dict[str, int]:
    """One picture's counts. ``regions``: objects with ``.box`` and ``.caption``; ``truth``: ground-truth
    boxes [x1, y1, x2, y2]; ``narration``: what was said about ``regions``.

    matched: regions with a ground-truth box at IoU >= 0.5; agree: of those, placed in their box's grid
    cell; regions: all of them; mentioned: those the narration names (alone word for word, or with the
    regions sharing their caption, once, with the count)."""
    counts = {"matched": 0, "agree": 0, "regions": len(regions), "mentioned": 0, "misplaced_offsets": []}
    for region in regions:
        best = max(truth, key=lambda t: iou(region.box, t), default=None)
        if best is not None and iou(region.box, best) >= IOU:
            counts["matched"] += 1
            said_cell, true_cell = grid_cell(region.box, width, height), grid_cell(best, width, height)
            if said_cell == true_cell:
                counts["agree"] += 1
            else:  # how far the true centre is from the grid line crossed, in % of the picture's side
                centre = ((best[1] + best[3]) / 2 / height, (best[0] + best[2]) / 2 / width)  # (row, column) axes
                counts["misplaced_offsets"].append(max(
                    100 * min(abs(centre[axis] - line) for line in (1 / 3, 2 / 3))
                    for axis in (0, 1) if said_cell[axis] != true_cell[axis]))
    said = narration.lower()
    for group in groups(regions, width, height):
        caption = regions[group[0]].caption.lower()
        if len(group) == 1:
            counts["mentioned"] += caption in said
        else:  # once with the count, never one by one
            counts["mentioned"] += len(group) * (plural(caption, len(group)) in said and caption not in said)
    return counts


def scenes(folder: Path, split: str = "test") -> list[tuple[Path, list[list[float]]]]:
    """(image, ground-truth boxes) of a split in the Flickr30k Entities layout."""
    from regioncap.data.flickr30k import read_annotation, read_split, to_continuous

    out = []
    for image_id in read_split(folder / f"{split}.txt"):
        ann = read_annotation(folder / "Annotations" / f"{image_id}.xml")
        boxes = [to_continuous(b) for chain in ann.boxes.values() for b in chain]
        out.append((folder / "Images" / f"{image_id}.jpg", boxes))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "demo-model"))
    parser.add_argument("--data", type=Path, help="scenes in the Flickr30k Entities layout (default: generated)")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=31, help="never trained or tuned on (those were 1 and 3)")
    parser.add_argument("--max-regions", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    import torch

    from regioncap.data.synthetic import generate

    torch.set_num_threads(1)
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="regioncap-narration-"))
        generate(data, images=args.images, seed=args.seed, splits=(0.0, 0.0, 1.0))
    try:
        run(args, data)
    finally:
        if args.data is None:  # the scenes generated here
            shutil.rmtree(data, ignore_errors=True)


def run(args, data: Path) -> None:
    from regioncap import RegionCaptioner

    model = RegionCaptioner.from_pretrained(args.model)
    totals = {"matched": 0, "agree": 0, "regions": 0, "mentioned": 0, "misplaced_offsets": []}
    wrong = []
    start = time.perf_counter()
    for path, truth in scenes(data):
        result = model.analyze(path, max_regions=args.max_regions, score_threshold=args.threshold)
        narration = describe(result.regions, result.width, result.height)
        counts = score(result.regions, truth, narration, result.width, result.height)
        for key in totals:
            totals[key] += counts[key]
        if counts["agree"] < counts["matched"] and len(wrong) < 5:
            wrong.append(f"  {path.name}: {narration}")
        if counts["mentioned"] < counts["regions"]:
            wrong.append(f"  {path.name} (a region not mentioned): {narration}")
    pictures = len(scenes(data))
    position = totals["agree"] / max(1, totals["matched"])
    mentioned = totals["mentioned"] / max(1, totals["regions"])
    where = data if args.data else f"seed {args.seed}"
    print(f"{pictures} scenes ({where}), model {args.model}, {time.perf_counter() - start:.0f} s")
    print(f"regions found: {totals['regions']}; matched to a ground-truth box (IoU >= {IOU}): {totals['matched']}")
    print(f"position words agree with the ground-truth box's grid cell: {totals['agree']}/{totals['matched']} = "
          f"{position:.3f} (target >= {TARGET_POSITION}) {'PASS' if position >= TARGET_POSITION else 'FAIL'}")
    print(f"regions mentioned in the narration: {totals['mentioned']}/{totals['regions']} = {mentioned:.3f} "
          f"(target 1.000) {'PASS' if mentioned == 1 else 'FAIL'}")
    if totals["misplaced_offsets"]:
        offsets = sorted(totals["misplaced_offsets"])
        print(f"misplaced regions: their true centre is {offsets[len(offsets) // 2]:.1f} % of the picture's side from "
              f"a grid line (median; at most {offsets[-1]:.1f} %)")
    if wrong:
        print("examples of misplaced or missing regions:\n" + "\n".join(wrong[:8]))


if __name__ == "__main__":
    main()
