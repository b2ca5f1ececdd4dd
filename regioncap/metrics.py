"""Evaluation metrics, as pure functions: caption BLEU, detection AP@0.5, retrieval recall@K, grounding.

Each one reproduces the protocol that published numbers use, so that ours can be compared:

- :func:`bleu` is the COCO caption evaluation's BLEU (``pycocoevalcap.bleu``), corpus level;
- :func:`average_precision_50` is ``pycocotools.COCOeval``'s AP at IoU 0.5 (area "all", maxDets 100);
- :func:`recall_at_k` is the image-sentence ranking recall of Karpathy & Fei-Fei (CVPR 2015);
- :func:`grounding_accuracy` is phrase-grounding accuracy at IoU >= 0.5 (Plummer et al.; MDETR's "any");
- :func:`attribute_mention_rates` says how often a caption names the attributes (colour, pattern, ...)
  that the region's reference phrases name: BLEU rewards the short generic caption, this does not.

The tests check the first two against the reference implementations on the same inputs.

Why AP@0.5 does not simply call pycocotools (kept as the tests' oracle only): ``train.evaluate``
runs from the runtime requirements, and pycocotools would add a compiled dependency there for
about 60 lines; ``COCOeval`` wants COCO-format JSON (xywh boxes, image and annotation ids, areas)
built from our tensors, and prints its progress on stdout, where ``train.evaluate`` writes its
JSON; and it silently drops inverted boxes, which we refuse. The pure function below follows its
procedure step by step and is checked against it on random cases (tests/test_metrics.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from nltk.translate.bleu_score import closest_ref_length, modified_precision
from torchvision.ops import box_iou

__all__ = ["bleu", "average_precision_50", "recall_at_k", "grounding_accuracy", "attribute_mention_rates"]

# pycocoevalcap's BleuScorer adds these to every numerator / denominator ("so that if guess is 0
# still return 0" and no division by zero); we keep them so that the numbers agree to ~1e-12.
_TINY = 1e-15
_SMALL = 1e-9


def bleu(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]],
         max_n: int = 4) -> dict[str, float]:
    """Corpus-level BLEU-1..BLEU-``max_n`` exactly as the COCO caption evaluation computes it.

    Args:
        candidates: one token list per generated caption, e.g. ``[["a", "red", "circle"], ...]``.
        references: for each candidate, its reference captions as token lists (at least one).

    Returns:
        ``{"bleu1": float, ..., "bleu4": float}`` in [0, 1]; all 0.0 for an empty corpus.

    Clipped n-gram matches come from ``nltk.translate.bleu_score.modified_precision`` and the
    brevity penalty's reference length from nltk's ``closest_ref_length`` (the closest reference
    length, shorter on ties), both summed over the corpus. Two details follow pycocoevalcap rather
    than ``nltk.corpus_bleu``, which would otherwise disagree on short region captions:

    - the n-gram count of a candidate shorter than n is 0 (nltk counts 1 to avoid a division by zero,
      which lowers BLEU-2..4 whenever some captions are one or two words long);
    - an order with no match gives a tiny, not zero, precision: p_n = (matches + 1e-15) / (count + 1e-9),
      so BLEU-4 stays slightly positive when BLEU-1..3 are.

    BLEU-n is the geometric mean of p_1..p_n times exp(1 - r/c) when the corpus length c is below
    the reference length r.
    """
    if len(candidates) != len(references):
        raise ValueError(f"bleu: {len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        return {f"bleu{n}": 0.0 for n in range(1, max_n + 1)}
    matches = [0] * max_n
    counts = [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references):
        cand, refs = list(cand), [list(r) for r in refs]
        if not refs:
            raise ValueError("bleu: every candidate needs at least one reference")
        for n in range(1, max_n + 1):
            matches[n - 1] += modified_precision(refs, cand, n).numerator  # clipped matches
            counts[n - 1] += max(0, len(cand) - n + 1)
        cand_len += len(cand)
        ref_len += closest_ref_length(refs, len(cand))
    ratio = (cand_len + _TINY) / (ref_len + _SMALL)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    out, log_sum = {}, 0.0
    for n in range(1, max_n + 1):
        log_sum += math.log((matches[n - 1] + _TINY) / (counts[n - 1] + _SMALL))
        out[f"bleu{n}"] = math.exp(log_sum / n) * brevity
    return out


def _as_boxes(boxes) -> torch.Tensor:
    return torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)


def average_precision_50(detections: Sequence[dict], ground_truth: Sequence[dict], num_classes: int,
                         max_dets: int = 100) -> float:
    """COCO-style mean average precision at IoU 0.5 (= pycocotools' AP50 for area "all", maxDets 100).

    Args:
        detections: one dict per image: ``"boxes"`` FloatTensor[N, 4] in [x1, y1, x2, y2] pixels,
            ``"scores"`` FloatTensor[N], ``"labels"`` Int64Tensor[N] in 1..num_classes.
        ground_truth: one dict per image (same order): ``"boxes"`` FloatTensor[M, 4] xyxy,
            ``"labels"`` Int64Tensor[M] in 1..num_classes.
        num_classes: number of foreground classes (label 0, the background, is not a class).
        max_dets: per image and class, only the ``max_dets`` highest-scoring detections count.

    Returns:
        The mean over classes that have ground truth of each class's AP; 0.0 when no class has any.

    Per class, pycocotools' procedure: in each image the detections are sorted by score (stable,
    so ties keep their input order), each is greedily matched to the unmatched ground-truth box of
    highest IoU (>= 0.5; on equal IoU the later box, as pycocotools does), unmatched ones are false
    positives (also in images without ground truth of that class). All images' detections are then
    ranked by score (stable: ties in image order), and precision is made monotone and sampled at
    the 101 recall points 0, 0.01, ..., 1 (0 beyond the highest recall reached). IoU has no "+1"
    in widths and heights and is computed in float64 like pycocotools' C code. An inverted box
    (x2 < x1 or y2 < y1) is a ValueError: pycocotools would silently drop it as outside the area range.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"average_precision_50: {len(detections)} detection dicts but {len(ground_truth)} images")
    for item in list(detections) + list(ground_truth):
        _check_labels(item["labels"], num_classes)
        boxes = _as_boxes(item["boxes"])
        if bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
            # pycocotools would silently ignore such a box (its negative area is outside every area range)
            raise ValueError("average_precision_50: boxes must have x1 <= x2 and y1 <= y2")
    # Exactly numpy's linspace(0, 1, 101) = k * 0.01 (torch.linspace differs in the last bit for 10 of
    # the points, which moves a recall of exactly k/100 to the other side of a threshold).
    rec_thresholds = torch.arange(101, dtype=torch.float64) * 0.01
    rec_thresholds[-1] = 1.0
    aps = []
    for c in range(1, num_classes + 1):
        scores_c, tp_c, n_gt = [], [], 0
        for det, gt in zip(detections, ground_truth):
            g = _as_boxes(gt["boxes"])[torch.as_tensor(gt["labels"]).reshape(-1) == c]
            keep = torch.as_tensor(det["labels"]).reshape(-1) == c
            d = _as_boxes(det["boxes"])[keep]
            s = torch.as_tensor(det["scores"], dtype=torch.float64).reshape(-1)[keep]
            order = torch.sort(-s, stable=True).indices[:max_dets]  # numpy's mergesort on -score
            d, s = d[order], s[order]
            n_gt += len(g)
            tp = torch.zeros(len(d), dtype=torch.bool)
            if len(g) and len(d):
                ious = box_iou(d, g)  # [D, G]
                matched = torch.zeros(len(g), dtype=torch.bool)
                for i in range(len(d)):
                    row = ious[i].masked_fill(matched, -1.0)
                    best = row.max()
                    if best >= 0.5:
                        j = int((row == best).nonzero()[-1])  # the last of equal IoUs, like pycocotools
                        matched[j] = True
                        tp[i] = True
            scores_c.append(s)
            tp_c.append(tp)
        if n_gt == 0:
            continue  # pycocotools marks the class -1 and leaves it out of the mean
        s = torch.cat(scores_c)
        tp = torch.cat(tp_c)[torch.sort(-s, stable=True).indices]
        tp_sum = torch.cumsum(tp.double(), 0)
        fp_sum = torch.cumsum((~tp).double(), 0)
        recall = tp_sum / n_gt
        precision = tp_sum / (tp_sum + fp_sum + 2.220446049250313e-16)  # np.spacing(1)
        precision = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])  # monotone envelope
        idx = torch.searchsorted(recall, rec_thresholds, side="left")
        sampled = torch.zeros_like(rec_thresholds)
        ok = idx < len(precision)
        sampled[ok] = precision[idx[ok]]
        aps.append(float(sampled.mean()))
    return sum(aps) / len(aps) if aps else 0.0


def _check_labels(labels, num_classes: int) -> None:
    labels = torch.as_tensor(labels)
    if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
        raise ValueError(f"average_precision_50: labels must be in 1..{num_classes}, got {labels.tolist()}")


def recall_at_k(scores: torch.Tensor, sentence_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Image-sentence retrieval recall@K in both directions (Karpathy & Fei-Fei's protocol).

    Args:
        scores: FloatTensor[K, S], scores[k, l] = S_kl, the score of image k with sentence l.
        sentence_image: Int64Tensor[S], the index (0..K-1) of the image each sentence describes.
        ks: the K of recall@K.

    Returns:
        ``{"i2t_r1": ..., "i2t_r5": ..., "i2t_r10": ..., "t2i_r1": ..., ...}`` (fractions in [0, 1]).

    i2t: for each image, all S sentences are ranked; a hit at K when one of its own sentences is
    among the top K. t2i: for each sentence all K images are ranked; a hit when its image is among
    the top K. Ties count against the query: the rank of the correct item is the number of wrong
    items scoring at least as high, so a constant score matrix gives chance-level, not perfect,
    recall. Images without a sentence are left out of i2t; an empty side gives 0.0.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    sentence_image = torch.as_tensor(sentence_image, dtype=torch.long).reshape(-1)
    num_images, num_sentences = scores.shape
    if len(sentence_image) != num_sentences:
        raise ValueError(f"recall_at_k: scores has {num_sentences} sentences, sentence_image {len(sentence_image)}")
    if num_images == 0 or num_sentences == 0:
        return {f"{name}_r{k}": 0.0 for name in ("i2t", "t2i") for k in ks}
    own = sentence_image.unsqueeze(0) == torch.arange(num_images).unsqueeze(1)  # [K, S]
    # i2t: best own sentence per image vs. the other images' sentences.
    has_sentence = own.any(1)
    best_own = scores.masked_fill(~own, -math.inf).max(1, keepdim=True).values  # [K, 1]
    i2t_rank = ((scores >= best_own) & ~own).sum(1)[has_sentence]  # [K'] wrong sentences at or above it
    # t2i: the correct image's score per sentence vs. the other images'.
    correct = scores[sentence_image, torch.arange(num_sentences)]  # [S]
    t2i_rank = ((scores >= correct.unsqueeze(0)) & ~own).sum(0)  # [S]
    out = {}
    for name, rank in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        for k in ks:
            out[f"{name}_r{k}"] = float((rank < k).double().mean()) if len(rank) else 0.0
    return out


def grounding_accuracy(pred_boxes, gt_boxes: Sequence, iou: float = 0.5) -> float:
    """Fraction of phrases whose predicted box overlaps one of its ground-truth boxes at IoU >= ``iou``.

    Args:
        pred_boxes: FloatTensor[P, 4] xyxy, or a list of P boxes where ``None`` (or an empty tensor)
            means the model predicted nothing for that phrase: a miss.
        gt_boxes: P FloatTensors [n_p, 4] xyxy. The *merged* protocol (Plummer et al.) passes the
            union box of the phrase's chain (n_p = 1); the *any* protocol (MDETR) passes all its boxes.

    Returns:
        Accuracy in [0, 1]; 0.0 for no phrases.
    """
    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(f"grounding_accuracy: {len(pred_boxes)} predictions but {len(gt_boxes)} phrases")
    if len(gt_boxes) == 0:
        return 0.0
    hits = 0
    for pred, gts in zip(pred_boxes, gt_boxes):
        if pred is None:
            continue
        pred, gts = _as_boxes(pred), _as_boxes(gts)
        if len(pred) == 0 or len(gts) == 0:
            continue
        hits += bool((box_iou(pred[:1], gts) >= iou).any())
    return hits / len(gt_boxes)


# Everyday attribute words (Flickr30k's phrases: "a man in a red shirt", "a little girl in a plaid dress"),
# word -> value, for attribute_mention_rates. Shape is the synthetic world's own attribute (its words:
# regioncap.data.synthetic.ATTRIBUTE_WORDS, which train.evaluate merges with these).
EVERYDAY_ATTRIBUTE_WORDS: dict[str, dict[str, str]] = {
    "colour": {c: c for c in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black",
                              "white", "grey", "tan", "beige", "gold", "silver", "blond", "maroon", "navy",
                              "teal", "turquoise")} | {"gray": "grey", "blonde": "blond"},
    "size": {"small": "small", "little": "small", "tiny": "small",
             "large": "large", "big": "large", "huge": "large", "giant": "large"},
    "pattern": {"striped": "striped", "stripes": "striped", "stripe": "striped", "dotted": "dotted",
                "dots": "dotted", "polka": "dotted", "spotted": "dotted", "checkered": "checkered",
                "checks": "checkered", "checked": "checkered", "plaid": "plaid", "floral": "floral",
                "flowered": "floral", "camouflage": "camouflage", "camo": "camouflage"},
}


def merge_attribute_words(*lists: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """One ``{attribute: {word: value}}`` from several, attributes in first-seen order; a word two lists
    give different values for is an error (it would be counted for either)."""
    out: dict[str, dict[str, str]] = {}
    for words in lists:
        for attribute, names in words.items():
            merged = out.setdefault(attribute, {})
            for word, value in names.items():
                if merged.setdefault(word, value) != value:
                    raise ValueError(f"attribute {attribute!r}: {word!r} names both {merged[word]!r} and {value!r}")
    return out


def attribute_mention_rates(captions: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]],
                            words: dict[str, dict[str, str]]) -> dict[str, float | int]:
    """Per attribute, how often a caption names the value that its region's reference phrases name.

    Args:
        captions: one token list per region, e.g. ``["a", "large", "red", "circle"]``.
        references: per region, its reference phrases as token lists.
        words: ``{attribute: {word: value}}``; several words may name one value
            (``{"size": {"large": "large", "big": "large"}}``). Multi-word names are given by the
            word that tells them apart ("with stripes" -> ``"stripes": "striped"``).

    Returns:
        ``{"attr_<attribute>": rate, "num_attr_<attribute>": n}`` for every attribute, in ``words``'
        order: n is the number of regions whose references name the attribute (any value, in any
        reference), rate the fraction of those whose caption names one of the values the references
        name (a wrong value is a miss); rate is 0.0 when n is 0.
    """
    if len(captions) != len(references):
        raise ValueError(f"attribute_mention_rates: {len(captions)} captions but {len(references)} reference lists")
    out: dict[str, float | int] = {}
    for attribute, names in words.items():
        hits = total = 0
        for caption, refs in zip(captions, references):
            wanted = {names[w] for ref in refs for w in ref if w in names}
            if wanted:
                total += 1
                hits += any(names.get(w) in wanted for w in caption)
        out[f"attr_{attribute}"] = hits / total if total else 0.0
        out[f"num_attr_{attribute}"] = total
    return out
