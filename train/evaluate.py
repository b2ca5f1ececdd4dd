"""Evaluate a RegionCaptioner on one split of a data root in the Flickr30k Entities layout.

    python -m train.evaluate --model DIR --data ROOT --split test [--json OUT] [--device cpu] [--max-images N]

Prints one JSON object (and writes it to OUT, atomically, with --json):

  det_ap50           detector AP at IoU 0.5 over the entity types (pycocotools' protocol,
                     analyze(max_regions=100, score_threshold=0.05))
  grounding_acc      phrase grounding, merged protocol: each phrase whose chain has boxes picks the
                     detected region most similar to it; correct at IoU >= 0.5 with the chain's union box
  grounding_acc_any  the same pick, correct at IoU >= 0.5 with any of the chain's boxes (MDETR)
  bleu1..bleu4       COCO-style BLEU of the caption of each chain's union box vs. the chain's phrases
  attr_shape attr_colour attr_size attr_pattern (+ num_attr_*)
                     of those captions, the fraction that name the attribute's value where the chain's
                     phrases name it (n = regions counted; words: ATTRIBUTE_WORDS below, everyday colour,
                     size and pattern words such as "grey", "huge", "plaid" and the synthetic world's shapes)
  group_attr_* group_num_attr_*
                     the same over the chains of several boxes ("two stars") alone
  i2t_r1/5/10, t2i_r1/5/10
                     image<->sentence retrieval over all evaluated images and their sentences, with
                     S_kl = sum over the sentence's phrases (notvisual excluded) of max_i v_i . s_t over
                     the image's regions (the grounding candidates + the whole image)
  num_images num_sentences num_phrases num_regions_captioned seconds

BLEU and the attribute rates are also printed as one table on stderr (stdout stays JSON).

Per image the model runs twice (once to detect, once to caption the ground-truth boxes, with the
detections as the objects a box may be made up of: ``analyze(..., objects=)``); phrase texts are
encoded afterwards, each distinct text once, in batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from regioncap.data.dataset import Flickr30kEntities, chain_boxes, chain_regions, is_notvisual, merged_box
from regioncap.data.image import load_image
from regioncap.data.synthetic import ATTRIBUTE_WORDS as SYNTHETIC_ATTRIBUTE_WORDS
from regioncap.data.vocab import tokenize
from regioncap.errors import RegionCapError, TextError, fail
from regioncap.fileio import write_text_atomic
from regioncap.metrics import (EVERYDAY_ATTRIBUTE_WORDS, attribute_mention_rates, average_precision_50, bleu,
                               grounding_accuracy, merge_attribute_words, recall_at_k)
from regioncap.models.alignment import image_sentence_scores

TEXT_BATCH = 512
AP_MAX_REGIONS, AP_SCORE_THRESHOLD = 100, 0.05  # the detections AP is measured on (and grounding, captions use)
# The attribute words the captions are checked for: the synthetic world's (shape, and its colours, sizes and
# patterns) and everyday ones, so the rates mean the same on Flickr30k and on the synthetic scenes.
ATTRIBUTE_WORDS = merge_attribute_words(SYNTHETIC_ATTRIBUTE_WORDS, EVERYDAY_ATTRIBUTE_WORDS)


@dataclass
class ImageTruth:
    """One image's annotation in the form the metrics need; boxes are FloatTensor[*, 4] xyxy pixels.

    Attributes:
        image: FloatTensor[3, H, W] in [0, 1], or a path / PIL image (decoded with load_image);
            dropped (set to None) once the image has been run.
        det_boxes, det_labels: the detector's ground truth, FloatTensor[N, 4] and Int64Tensor[N] in 1..C.
        merged: FloatTensor[C, 4], the union box of each chain that has boxes (chain_regions order).
        chain_boxes: C FloatTensors [n_c, 4], every box of each chain.
        chain_refs: C lists of tokenised phrases naming the chain (BLEU references; may be empty).
        caption_boxes: FloatTensor[C, 4], the boxes to caption (the union boxes clamped into the image).
        phrases: (phrase text, chain index) for every phrase whose chain has boxes (grounding).
        sentences: per sentence, the texts of its phrases except notvisual ones (retrieval).
    """

    image: object
    det_boxes: torch.Tensor
    det_labels: torch.Tensor
    merged: torch.Tensor
    chain_boxes: list[torch.Tensor]
    chain_refs: list[list[list[str]]]
    caption_boxes: torch.Tensor | None = None
    phrases: list[tuple[str, int]] = field(default_factory=list)
    sentences: list[list[str]] = field(default_factory=list)


@dataclass
class _ImageOutput:
    det: dict  # boxes FloatTensor[N, 4], scores FloatTensor[N], labels Int64Tensor[N]
    cand_boxes: torch.Tensor  # [R, 4] grounding candidates: the top detections
    cand_vectors: torch.Tensor  # [R, D]
    image_vector: torch.Tensor  # [D]
    captions: list[str]  # one per chain with references (non-empty chain_refs), in chain order


def truth_from_dataset(dataset: Flickr30kEntities, index: int) -> ImageTruth | None:
    """ImageTruth of image ``index``: detector targets from ``dataset[index]`` (the boxes and labels
    the detector is trained on), chains, phrases and sentences from the record the sample carries;
    None when the dataset skips the image (unreadable, ``on_unreadable="skip"``)."""
    sample = dataset[index]  # the evaluation transform only converts: original pixels and boxes
    if sample is None:
        return None
    image, target = sample
    rec = dataset.records[target["index"]]  # the sample's own record, whatever index was asked for
    chains = chain_regions(rec)
    order = {c: i for i, c in enumerate(chains)}
    boxes = chain_boxes(rec)  # continuous coordinates, as the detector predicts them
    refs: list[list[list[str]]] = [[] for _ in chains]
    phrases = []
    for sent in rec.sentences:
        for ph in sent.phrases:
            if ph.chain_id in order:
                refs[order[ph.chain_id]].append(tokenize(ph.text))
                phrases.append((ph.text, order[ph.chain_id]))
    return ImageTruth(
        image=image,
        det_boxes=target["boxes"], det_labels=target["labels"],
        merged=torch.tensor([merged_box(boxes[c]) for c in chains], dtype=torch.float32).reshape(-1, 4),
        chain_boxes=[torch.tensor(boxes[c], dtype=torch.float32).reshape(-1, 4) for c in chains],
        chain_refs=refs, caption_boxes=target["region_boxes"][1:], phrases=phrases,
        sentences=[[ph.text for ph in s.phrases if not is_notvisual(ph)] for s in rec.sentences])


def run_image(model, truth: ImageTruth, entity_types: list[str], regions: int = 36) -> _ImageOutput:
    """The two model calls for one image: detect (AP, grounding, retrieval) and caption the GT boxes.

    Detection uses analyze(max_regions=100, score_threshold=0.05), the usual setting for AP; its
    ``regions`` highest-scoring detections are the grounding and retrieval candidates.
    """
    image = truth.image if isinstance(truth.image, torch.Tensor) else load_image(truth.image)  # once for both calls
    res = model.analyze(image, max_regions=AP_MAX_REGIONS, score_threshold=AP_SCORE_THRESHOLD,
                        captions=False)  # no decoding needed
    n = len(res.regions)
    boxes = torch.tensor([r.box for r in res.regions], dtype=torch.float32).reshape(n, 4)
    scores = torch.tensor([r.score for r in res.regions], dtype=torch.float32)
    index = {name: i + 1 for i, name in enumerate(entity_types)}
    labels = torch.tensor([index.get(r.label, 0) for r in res.regions], dtype=torch.int64)
    known = labels > 0  # a label outside the config's entity types cannot be scored
    det = {"boxes": boxes[known], "scores": scores[known], "labels": labels[known]}
    top = torch.sort(-scores, stable=True).indices[:regions]
    vectors = res.vectors.detach().float().cpu()  # [N, D]
    to_caption = [i for i, refs in enumerate(truth.chain_refs) if refs]
    captions = []
    if to_caption:
        gt = truth.caption_boxes if truth.caption_boxes is not None else truth.merged
        # the detections are the objects a box may be made up of ("two stars"; captioner.group_weight)
        captioned = model.analyze(image, boxes=gt[to_caption].tolist(), objects=res)
        captions = [r.caption for r in captioned.regions]
        if len(captions) != len(to_caption):
            raise RuntimeError(f"analyze(boxes=...) returned {len(captions)} regions for {len(to_caption)} boxes")
    return _ImageOutput(det=det, cand_boxes=boxes[top], cand_vectors=vectors[top],
                        image_vector=res.image_vector.detach().float().cpu().reshape(-1), captions=captions)


def encode_texts(model, texts: list[str], batch_size: int = TEXT_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode distinct phrase texts in batches -> (FloatTensor[T, D], BoolTensor[T] usable).

    A phrase the model refuses (TextError: no word in its vocabulary) gets a zero vector and
    usable=False; a batch holding one is split in halves until the refused phrases are isolated.
    """
    vectors: list[torch.Tensor | None] = []
    ok: list[bool] = []

    def encode(batch: list[str]) -> None:
        try:
            vectors.append(model.encode_text(batch).detach().float().cpu())
            ok.extend([True] * len(batch))
        except TextError:
            if len(batch) == 1:
                vectors.append(None)
                ok.append(False)
            else:
                encode(batch[: len(batch) // 2])
                encode(batch[len(batch) // 2:])

    for start in range(0, len(texts), batch_size):
        encode(texts[start:start + batch_size])
    dim = next((v.shape[1] for v in vectors if v is not None), 1)
    rows = [v if v is not None else torch.zeros(1, dim) for v in vectors]
    return (torch.cat(rows) if rows else torch.zeros(0, dim)), torch.tensor(ok, dtype=torch.bool)


def compute_metrics(truths: list[ImageTruth], outputs: list[_ImageOutput], text_vectors: torch.Tensor,
                    text_ok: torch.Tensor, text_index: dict[str, int], num_classes: int) -> dict:
    """All metrics from the per-image outputs and the encoded phrase texts (rows of text_vectors)."""
    out = {"det_ap50": average_precision_50([o.det for o in outputs],
                                            [{"boxes": t.det_boxes, "labels": t.det_labels} for t in truths],
                                            num_classes)}
    # Grounding: each boxed phrase picks its most similar candidate region.
    preds, merged, anyb = [], [], []
    for t, o in zip(truths, outputs):
        for text, c in t.phrases:
            row = text_index[text]
            if len(o.cand_boxes) and text_ok[row]:
                preds.append(o.cand_boxes[int(torch.argmax(o.cand_vectors @ text_vectors[row]))])
            else:
                preds.append(None)
            merged.append(t.merged[c:c + 1])
            anyb.append(t.chain_boxes[c])
    out["grounding_acc"] = grounding_accuracy(preds, merged)
    out["grounding_acc_any"] = grounding_accuracy(preds, anyb)
    # Captions of the ground-truth boxes vs. the phrases of their chains.
    cands = [tokenize(cap) for o in outputs for cap in o.captions]
    refs = [r for t in truths for r in t.chain_refs if r]
    out.update(bleu(cands, refs))
    out.update(attribute_mention_rates(cands, refs, ATTRIBUTE_WORDS))
    # the same rates over the regions of several boxes ("two stars"): a few percent of the regions, the
    # hardest to caption
    several = [len(t.chain_boxes[c]) > 1 for t in truths for c, r in enumerate(t.chain_refs) if r]
    groups = attribute_mention_rates([c for c, g in zip(cands, several) if g],
                                     [r for r, g in zip(refs, several) if g], ATTRIBUTE_WORDS)
    out.update({f"group_{k}": v for k, v in groups.items()})
    out.update(_retrieval(truths, outputs, text_vectors, text_ok, text_index))
    out.update(num_images=len(truths), num_sentences=sum(len(t.sentences) for t in truths),
               num_phrases=len(preds), num_regions_captioned=len(cands))
    return out


def _retrieval(truths, outputs, text_vectors, text_ok, text_index) -> dict:
    """recall@K over the [images, sentences] matrix of S_kl (phrases the model refused are left out)."""
    rows, phrase_sentence, sentence_image = [], [], []
    for k, t in enumerate(truths):
        for words in t.sentences:
            for text in words:
                if text_ok[text_index[text]]:
                    rows.append(text_index[text])
                    phrase_sentence.append(len(sentence_image))
            sentence_image.append(k)
    num_sentences = len(sentence_image)
    scores = torch.zeros(len(truths), num_sentences)
    if not rows:  # no usable phrase anywhere: every score is 0 (ties count as misses)
        return recall_at_k(scores, torch.tensor(sentence_image, dtype=torch.long))
    phrases = text_vectors[torch.tensor(rows, dtype=torch.long)]  # [P, D]
    phrase_sentence = torch.tensor(phrase_sentence, dtype=torch.long)
    step = 64  # images per similarity block: [P, 64 * R] stays small
    for start in range(0, len(truths), step):
        block = outputs[start:start + step]
        vecs = [torch.cat([o.cand_vectors, o.image_vector.unsqueeze(0)]) for o in block]  # [R_k + 1, D] each
        region_image = torch.cat([torch.full((len(v),), i, dtype=torch.long) for i, v in enumerate(vecs)])
        sim = phrases @ torch.cat(vecs).T  # [P, R]
        scores[start:start + len(block)] = image_sentence_scores(sim, region_image, phrase_sentence,
                                                                 len(block), num_sentences)
    return recall_at_k(scores, torch.tensor(sentence_image, dtype=torch.long))


def evaluate(model, truths, num_classes: int, entity_types: list[str], regions: int = 36,
             progress: bool = True, total: int | None = None) -> dict:
    """Run ``model`` over ``truths`` (an iterable of ImageTruth) and return the metrics dict."""
    t0 = time.perf_counter()
    kept, outputs = [], []
    with torch.inference_mode():
        for truth in tqdm(truths, total=total, desc="evaluate", unit="img", disable=not progress,
                          dynamic_ncols=True):
            outputs.append(run_image(model, truth, entity_types, regions))
            kept.append(replace(truth, image=None))  # keep the annotations, not the pixels
        texts = list(dict.fromkeys(text for t in kept for text in
                                   [p for p, _ in t.phrases] + [p for s in t.sentences for p in s]))
        vectors, ok = encode_texts(model, texts)
        result = compute_metrics(kept, outputs, vectors, ok, {t: i for i, t in enumerate(texts)}, num_classes)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a RegionCaptioner: detection AP, grounding, BLEU, retrieval.")
    p.add_argument("--model", required=True, help="model folder or Hub repo id")
    p.add_argument("--data", required=True, help="data root in the Flickr30k Entities layout")
    p.add_argument("--split", default="test", help="split file name without .txt (default: test)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the metrics JSON here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images (0: all)")
    p.add_argument("--regions", type=int, default=36,
                   help="top detections per image used as grounding and retrieval candidates (default 36)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args) -> dict:
    """Evaluate ``args.model`` on ``args.data``/``args.split``; print (and optionally write) the JSON."""
    from regioncap.models.model import RegionCaptioner

    root = Path(args.data)
    if not root.is_dir():
        fail(f"{root}: no such data folder")
    try:
        model = RegionCaptioner.from_pretrained(args.model, device=args.device)
        dataset = Flickr30kEntities(root, args.split, vocab=getattr(model, "vocab", None), on_unreadable="skip")
    except (RegionCapError, OSError, RuntimeError) as exc:
        fail(exc)
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} image(s) with malformed or missing files; first: "
              f"{dataset.skipped[0][0]}: {dataset.skipped[0][1]}", file=sys.stderr)
    n = len(dataset) if not args.max_images else min(args.max_images, len(dataset))
    if n == 0:
        fail(f"{root / (args.split + '.txt')}: no usable images")
    entity_types = list(model.config.entity_types)
    try:
        truths = (t for t in (truth_from_dataset(dataset, i) for i in range(n)) if t is not None)
        result = evaluate(model, truths, num_classes=len(entity_types),
                          entity_types=entity_types, regions=args.regions, progress=not args.no_progress, total=n)
    except RegionCapError as exc:
        fail(exc)
    result = {"model": str(args.model), "data": str(root), "split": args.split, **result}
    print(caption_table(result), file=sys.stderr)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        write_text_atomic(args.json, text + "\n")
    return result


def caption_table(metrics: dict) -> str:
    """BLEU and the attribute mention rates of ``metrics`` as one small text table (a second row: the
    rates over regions of several boxes, when ``metrics`` has them)."""
    attrs = [k[len("attr_"):] for k in metrics if k.startswith("attr_")]
    names = ["", "bleu1", "bleu4"] + [f"{a} named" for a in attrs]

    def rates(prefix):
        return [f"{metrics[prefix + 'attr_' + a]:.4f} (n={metrics.get(prefix + 'num_attr_' + a, 0)})" for a in attrs]

    rows = [names, ["all regions", f"{metrics['bleu1']:.4f}", f"{metrics['bleu4']:.4f}"] + rates("")]
    if all("group_attr_" + a in metrics for a in attrs):
        rows.append(["several boxes", "", ""] + rates("group_"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(names))]
    return "\n".join(" | ".join(x.rjust(w) for x, w in zip(row, widths)) for row in rows)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
