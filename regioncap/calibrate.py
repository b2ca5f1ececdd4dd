"""How similar is similar enough? The phrase-match threshold, chosen on held-out data.

For every phrase of a held-out split whose chain has a box, the model embeds the image's ground-truth
boxes (``analyze(image, boxes=...)``, one merged box per chain, as the merged grounding protocol):

* positive: the phrase against its own chain's box;
* negative: the phrase against the box of every other chain of the same image.

The threshold is the similarity that best separates the two (Youden's J = TPR - FPR, over every
observed value). Below it the app says "no region matches this phrase well" instead of listing
near-zero or negative similarities as matches. Written next to the model as ``calibration.json``
(one of the files a model folder carries, :data:`regioncap.hub.MODEL_FILES`), by the last step of
``train.train`` or by hand:

    python -m regioncap.calibrate --model assets/demo-model --data DATA --split val [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from regioncap.errors import RegionCapError, fail
from regioncap.fileio import write_text_atomic
from regioncap.hub import CALIBRATION_FILE, read_threshold  # noqa: F401 (read_threshold: this module's API too)

RULE = "max TPR - FPR; positive: phrase vs its chain's merged box; negative: vs other chains' boxes"


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


def calibrate(model, root, split: str = "val", limit: int | None = None) -> dict:
    """The calibration of ``model`` on a split: :func:`best_threshold` over :func:`similarity_pairs`, with
    where it was measured. Raises ValueError when the split has no phrase with a box to measure on."""
    out = best_threshold(*similarity_pairs(model, root, split, limit))
    out.update(data=str(root), split=split, rule=RULE)
    return out


def write_calibration(directory, calibration: dict) -> Path:
    """Write ``directory/calibration.json`` atomically; returns its path."""
    path = Path(directory) / CALIBRATION_FILE
    write_text_atomic(path, json.dumps(calibration, indent=2) + "\n")
    return path


def written_by_us(directory) -> bool:
    """Whether ``directory/calibration.json`` is one this module wrote (it records :data:`RULE`)."""
    try:
        return json.loads((Path(directory) / CALIBRATION_FILE).read_text(encoding="utf-8")).get("rule") == RULE
    except (OSError, ValueError, AttributeError):
        return False


def command(model_dir, data="DATA") -> str:
    """The command that calibrates ``model_dir`` on ``data``'s validation split and writes the file."""
    return f"python -m regioncap.calibrate --model {model_dir} --data {data} --split val --write"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m regioncap.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder (--write writes into it)")
    p.add_argument("--data", required=True, help="held-out data in the Flickr30k Entities layout")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=None, help="use at most this many images")
    p.add_argument("--write", action="store_true", help=f"write MODEL/{CALIBRATION_FILE}")
    args = p.parse_args(argv)
    from regioncap.models.model import RegionCaptioner

    if args.write and not Path(args.model).is_dir():
        fail(f"--write: {args.model} is not a local model folder (a Hub model is calibrated before it is published)")
    try:
        model = RegionCaptioner.from_pretrained(args.model)
        out = calibrate(model, args.data, args.split, args.limit)
    except (RegionCapError, OSError) as exc:
        fail(exc)
    except ValueError as exc:  # nothing to measure on
        fail(f"{args.data}, split {args.split}: {exc}")
    if args.write:
        write_calibration(args.model, out)
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
