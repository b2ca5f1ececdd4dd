"""How similar is similar enough? The phrase-match threshold, chosen on held-out data.

For every phrase of a held-out split whose chain has a box, the model embeds the image's ground-truth
boxes (``analyze(image, boxes=...)``, one merged box per chain, as the merged grounding protocol):

* positive: the phrase against its own chain's box;
* negative: the phrase against the box of every other chain of the same image.

The threshold is the similarity that best separates the two (Youden's J = TPR - FPR, over every
observed value). Below it the app says "no region matches this phrase well" instead of listing
near-zero or negative similarities as matches. Written next to the model as ``calibration.json``:

    python -m regioncap.calibrate --model assets/demo-model --data DATA --split val [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from regioncap.fileio import write_text_atomic

CALIBRATION_FILE = "calibration.json"


def similarity_pairs(model, root, split: str = "val", limit: int | None = None) -> tuple[list[float], list[float]]:
    """(positive similarities, negative similarities) over the split's phrases (see the module docstring)."""
    from regioncap.data.flickr30k import read_annotation, read_sentences, read_split

    root = Path(root)
    positives, negatives = [], []
    for image_id in read_split(root / f"{split}.txt")[:limit]:
        ann = read_annotation(root / "Annotations" / f"{image_id}.xml")
        chains = sorted(ann.boxes)
        if not chains:
            continue
        merged = [[min(b[0] for b in ann.boxes[c]), min(b[1] for b in ann.boxes[c]),
                   max(b[2] for b in ann.boxes[c]), max(b[3] for b in ann.boxes[c])] for c in chains]
        result = model.analyze(root / "Images" / f"{image_id}.jpg", boxes=merged, captions=False)
        phrases = [(p.text, chains.index(p.chain_id)) for s in read_sentences(root / "Sentences" / f"{image_id}.txt")
                   for p in s.phrases if p.chain_id in ann.boxes]
        if not phrases:
            continue
        s = model.encode_text([text for text, _ in phrases])  # [P, D]
        sims = s @ result.vectors.T  # [P, chains]
        for row, (_, own) in zip(sims.tolist(), phrases):
            positives.append(row[own])
            negatives += [v for j, v in enumerate(row) if j != own]
    return positives, negatives


def best_threshold(positives: list[float], negatives: list[float]) -> dict:
    """The threshold t maximising TPR - FPR (a match is similarity >= t), with its TPR and FPR."""
    if not positives or not negatives:
        raise ValueError("need positive and negative similarities to choose a threshold")
    pos, neg = torch.tensor(positives), torch.tensor(negatives)
    candidates = torch.cat([pos, neg]).unique()  # sorted
    tpr = (pos[None, :] >= candidates[:, None]).float().mean(dim=1)
    fpr = (neg[None, :] >= candidates[:, None]).float().mean(dim=1)
    best = int((tpr - fpr).argmax())
    return {"match_threshold": round(float(candidates[best]), 4), "tpr": round(float(tpr[best]), 4),
            "fpr": round(float(fpr[best]), 4), "positives": len(positives), "negatives": len(negatives)}


def read_threshold(model_dir) -> float | None:
    """The ``match_threshold`` recorded next to a model (None without a readable calibration file)."""
    path = Path(model_dir) / CALIBRATION_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["match_threshold"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m regioncap.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", required=True, help="held-out data in the Flickr30k Entities layout")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=None, help="use at most this many images")
    p.add_argument("--write", action="store_true", help=f"write MODEL/{CALIBRATION_FILE}")
    args = p.parse_args(argv)
    from regioncap.models.model import RegionCaptioner

    model = RegionCaptioner.from_pretrained(args.model)
    out = best_threshold(*similarity_pairs(model, args.data, args.split, args.limit))
    out.update(data=str(args.data), split=args.split,
               rule="max TPR - FPR; positive: phrase vs its chain's merged box; negative: vs other chains' boxes")
    text = json.dumps(out, indent=2)
    if args.write:
        write_text_atomic(Path(args.model) / CALIBRATION_FILE, text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
