"""Choose the caption reranking weights on validation data (see regioncap/models/rerank.py).

    python -m train.tune_rerank --model DIR --data ROOT --split val [--beam-sizes 3,5] [--write]

For every region of the split's ground-truth chains (the boxes ``train.evaluate`` captions) the
decoder's candidates are generated once per beam size, with their log-probabilities and their
similarity to the region; then every (beam size, weight, length_alpha) of the grid picks one
caption per region, scored like ``train.evaluate`` does (BLEU vs. the chain's phrases and the
attribute mention rates). The chosen setting maximises the mean attribute mention rate among those
whose BLEU-1 and BLEU-4 stay within ``--bleu-drop`` of plain beam search's; ``--write`` stores it in
the model folder's config.json (``captioner.beam_size``, ``rerank_weight``, ``rerank_length_alpha``).

Then ``--group-weights`` are tried on the regions made up of several detected objects ("two stars";
:func:`~regioncap.models.rerank.find_groups`), with ``captioner.group_beam_size`` (``--group-beam-size``):
the chosen weight maximises those regions' mean attribute rate among the weights whose BLEU-1 and
BLEU-4 on them stay within ``--bleu-drop`` of the best weight's (a large weight can name the objects'
shape in a caption of one of them, "a star" for two stars; BLEU keeps that in check); ``--write`` stores it
as ``captioner.group_weight`` / ``group_beam_size``.

Use a split that is neither trained on nor used for the test measurement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from regioncap import hub
from regioncap.data.dataset import Flickr30kEntities
from regioncap.errors import RegionCapError, fail
from regioncap.metrics import attribute_mention_rates, bleu
from regioncap.models.rerank import (best_per_region, candidate_similarities, group_candidate_similarities,
                                     group_members, rerank_scores)
from train.evaluate import AP_MAX_REGIONS, AP_SCORE_THRESHOLD, ATTRIBUTE_WORDS, truth_from_dataset

BATCH = 256  # regions per decoder / text-encoder call


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def collect(model, dataset, n: int, beam_sizes: list[int], progress: bool = True, groups: bool = False):
    """Region vectors and references of the first ``n`` images, then the candidates per beam size.

    Returns (refs: per region its tokenised reference phrases, {beam: (ids, region, log_probs,
    lengths, sims)}) with the candidates of all regions concatenated; with ``groups`` a third item,
    the regions made up of several objects: (their rows, (ids, region, log_probs, lengths, sims,
    member_sims)) for the group candidates at ``captioner.group_beam_size``, or None if there are none.
    """
    vectors, refs, boxes_seen, objects = [], [], [], []
    for i in tqdm(range(n), desc="regions", unit="img", disable=not progress):
        truth = truth_from_dataset(dataset, i)
        keep = [c for c, r in enumerate(truth.chain_refs) if r]
        if not keep:
            continue
        boxes = truth.caption_boxes[keep]
        res = model.analyze(truth.image, boxes=boxes.tolist(), captions=False)
        if groups:  # the objects in the image: the detections train.evaluate hands analyze() with the boxes
            det = model.analyze(truth.image, max_regions=AP_MAX_REGIONS, score_threshold=AP_SCORE_THRESHOLD,
                                captions=False)
            boxes_seen.append(boxes)
            objects.append((torch.tensor([r.box for r in det.regions], dtype=torch.float32).reshape(-1, 4),
                            torch.tensor([r.score for r in det.regions]), det.vectors))
        vectors.append(res.vectors.float())
        refs.extend(truth.chain_refs[c] for c in keep)
    if not vectors:
        raise RegionCapError("no image of the split has a boxed phrase to caption")
    v = torch.cat(vectors)
    out = {}
    with torch.inference_mode():
        for beam in beam_sizes:
            ids, region, logp, lengths, sims = [], [], [], [], []
            for start in range(0, len(v), BATCH):
                vb = v[start:start + BATCH].to(model.device)
                b_ids, b_region, b_logp, b_lengths, b_sims = candidate_similarities(
                    model.captioner, model.text_encoder, vb, beam)
                ids.extend(b_ids)
                region.append(b_region + start)
                logp.append(b_logp)
                lengths.append(b_lengths)
                sims.append(b_sims)
            out[beam] = (ids, torch.cat(region), torch.cat(logp), torch.cat(lengths), torch.cat(sims))
        if not groups:
            return refs, out
        members = group_members(boxes_seen, objects)  # rows: the regions in refs' order
        if members is None:
            return refs, out, None
        rows = torch.unique(members[1])
        vg = v[rows].to(model.device)
        group = (rows, group_candidate_similarities(model.captioner, model.text_encoder, vg,
                                                    members[0].to(model.device), torch.searchsorted(rows, members[1]),
                                                    model.singular_ids, model.config.captioner.group_beam_size))
    return refs, out, group


def choose(vocab, cands, num_regions: int, weight: float, alpha: float, member_weight: float = 0.0) -> list[list[str]]:
    """Each region's chosen caption (tokens) under one setting."""
    ids, region, logp, lengths, sims, *member = cands
    scores = rerank_scores(logp, lengths, sims, weight, alpha)
    if member:
        scores = scores + member_weight * member[0]
    return [vocab.decode(ids[i]).split() for i in best_per_region(scores, region, num_regions).tolist()]


def score_setting(vocab, refs, cands, weight: float, alpha: float) -> dict:
    return score_captions(choose(vocab, cands, len(refs), weight, alpha), refs)


def score_captions(captions, refs) -> dict:
    out = bleu(captions, refs)
    out.update(attribute_mention_rates(captions, refs, ATTRIBUTE_WORDS))
    out["mean_words"] = sum(len(c) for c in captions) / max(1, len(captions))
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Choose the caption reranking weights on validation data.")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", required=True, help="data root in the Flickr30k Entities layout")
    p.add_argument("--split", default="val")
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--beam-sizes", default="3,5", help="candidate beam widths to try (default 3,5)")
    p.add_argument("--weights", default="0,0.5,1,1.5,2,3,4,5,6,8,10")
    p.add_argument("--alphas", default="0,0.5,1")
    p.add_argument("--group-weights", default="0,5,10,20,40",
                   help="group_weight values to try on regions made up of several objects ('' skips them)")
    p.add_argument("--group-beam-size", type=int, default=None,
                   help="candidate beam width for those regions (default: the config's group_beam_size)")
    p.add_argument("--bleu-drop", type=float, default=0.03,
                   help="largest BLEU-1 / BLEU-4 loss against plain beam search allowed (default 0.03)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, metavar="OUT", help="write the whole grid here")
    p.add_argument("--write", action="store_true", help="store the chosen setting in the model's config.json")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(args) -> dict:
    from regioncap.models.model import RegionCaptioner

    try:
        model = RegionCaptioner.from_pretrained(args.model, device=args.device)
        dataset = Flickr30kEntities(Path(args.data), args.split, vocab=model.vocab)
    except (RegionCapError, OSError) as exc:
        fail(exc)
    n = len(dataset) if not args.max_images else min(args.max_images, len(dataset))
    if n == 0:
        fail(f"{Path(args.data) / (args.split + '.txt')}: no usable images")
    beams = [int(b) for b in args.beam_sizes.split(",")]
    group_weights = _floats(args.group_weights)
    if args.group_beam_size is not None:
        model.config.captioner.group_beam_size = args.group_beam_size
    try:
        model.config.captioner.validate()
        with torch.inference_mode():
            refs, cands, *group = collect(model, dataset, n, beams, progress=not args.no_progress,
                                          groups=bool(group_weights))
    except (RegionCapError, ValueError) as exc:
        fail(exc)
    base = score_setting(model.vocab, refs, cands[beams[0]], 0.0, 0.0)  # = plain beam search's captions
    grid = []
    for beam in beams:
        for alpha in _floats(args.alphas):
            for weight in _floats(args.weights):
                m = score_setting(model.vocab, refs, cands[beam], weight, alpha)
                grid.append({"beam_size": beam, "weight": weight, "length_alpha": alpha, **m})
    attrs = [k for k in base if k.startswith("attr_")]
    header = f"{'beam':>4} {'alpha':>5} {'weight':>6} {'bleu1':>6} {'bleu4':>6} " + " ".join(
        f"{a[5:]:>7}" for a in attrs) + f" {'words':>5}"
    print(f"{len(refs)} regions, {n} images of {args.data}/{args.split}")
    print(header)
    for g in grid:
        print(f"{g['beam_size']:>4} {g['length_alpha']:>5.2f} {g['weight']:>6.2f} {g['bleu1']:>6.3f} "
              f"{g['bleu4']:>6.3f} " + " ".join(f"{g[a]:>7.3f}" for a in attrs) + f" {g['mean_words']:>5.2f}")
    drop = args.bleu_drop
    ok = [g for g in grid if g["bleu1"] >= base["bleu1"] - drop and g["bleu4"] >= base["bleu4"] - drop]
    # best mean attribute rate; ties -> smaller beam (faster), then the smaller weight
    chosen = max(ok, key=lambda g: (round(sum(g[a] for a in attrs) / len(attrs), 4),
                                    -g["beam_size"], -g["weight"]))
    print("chosen:", json.dumps({k: chosen[k] for k in ("beam_size", "weight", "length_alpha")}))
    result = {"regions": len(refs), "images": n, "baseline": base, "chosen": chosen, "grid": grid}
    if group and group[0] is not None:
        result["groups"] = _tune_groups(model, refs, cands[chosen["beam_size"]], group[0], chosen,
                                        group_weights, drop)
    elif group_weights:
        print("no region is made up of several detected objects: group_weight not tuned")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.write:
        path = Path(args.model) / hub.CONFIG_FILE
        config = hub.load_config(path)
        config.captioner.beam_size = chosen["beam_size"]
        config.captioner.rerank_weight = chosen["weight"]
        config.captioner.rerank_length_alpha = chosen["length_alpha"]
        if "groups" in result:
            config.captioner.group_weight = result["groups"]["chosen"]["group_weight"]
            config.captioner.group_beam_size = model.config.captioner.group_beam_size
        hub.save_config(config, path)
        print(f"wrote {path}")
    return result


def _tune_groups(model, refs, cands, group, chosen: dict, weights: list[float], drop: float) -> dict:
    """Try ``weights`` as group_weight on the regions made up of several objects (the others keep
    ``chosen``'s captions); print the grid over those regions and over all, return it with the choice."""
    rows, group_cands = group
    vocab, cfg = model.vocab, model.config.captioner
    captions = choose(vocab, cands, len(refs), chosen["weight"], chosen["length_alpha"])
    group_refs = [refs[i] for i in rows.tolist()]
    grid = []
    for w in weights:
        mine = choose(vocab, group_cands, len(rows), chosen["weight"], chosen["length_alpha"], w)
        every = list(captions)
        for i, c in zip(rows.tolist(), mine):
            every[i] = c
        grid.append({"group_weight": w, "groups": score_captions(mine, group_refs), "all": score_captions(every, refs)})
    attrs = [k for k, v in grid[0]["groups"].items() if k.startswith("attr_")
             and grid[0]["groups"]["num_" + k] > 0]
    print(f"{len(rows)} regions made up of several objects (group_beam_size {cfg.group_beam_size}); "
          "rates on them | on all regions")
    print(f"{'weight':>6} {'bleu1':>6} {'bleu4':>6} " + " ".join(f"{a[5:]:>7}" for a in attrs)
          + f" | {'bleu4':>6} {'shape':>7}")
    for g in grid:
        gr, al = g["groups"], g["all"]
        print(f"{g['group_weight']:>6.2f} {gr['bleu1']:>6.3f} {gr['bleu4']:>6.3f} "
              + " ".join(f"{gr[a]:>7.3f}" for a in attrs)
              + f" | {al['bleu4']:>6.3f} {al.get('attr_shape', 0.0):>7.3f}")
    top1, top4 = (max(g["groups"][k] for g in grid) for k in ("bleu1", "bleu4"))
    ok = [g for g in grid if g["groups"]["bleu1"] >= top1 - drop and g["groups"]["bleu4"] >= top4 - drop]
    best = max(ok, key=lambda g: (round(sum(g["groups"][a] for a in attrs) / max(1, len(attrs)), 4),
                                  -g["group_weight"]))
    print("chosen:", json.dumps({"group_weight": best["group_weight"], "group_beam_size": cfg.group_beam_size}))
    return {"regions": len(rows), "group_beam_size": cfg.group_beam_size, "chosen": best, "grid": grid}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
