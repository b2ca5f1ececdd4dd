"""Metrics against hand-computed cases and against the reference implementations (pycocoevalcap, pycocotools)."""

import contextlib
import io
import math
import random

import numpy as np
import pytest
import torch

from regioncap.metrics import attribute_mention_rates, average_precision_50, bleu, grounding_accuracy, recall_at_k


# ----------------------------------------------------------------------------- BLEU

def _coco_bleu(candidates, references):
    from pycocoevalcap.bleu.bleu import Bleu

    res = {i: [" ".join(c)] for i, c in enumerate(candidates)}
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    with contextlib.redirect_stdout(io.StringIO()):
        scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {f"bleu{n + 1}": s for n, s in enumerate(scores)}


def test_bleu_hand_computed_brevity_and_short_candidate():
    # closest reference length to 2 is 3; p1 = 2/2, p2 = 1/1; BP = exp(1 - 3/2).
    # No trigram in a 2-word caption: COCO's p3 = (0 + 1e-15) / (0 + 1e-9) = 1e-6.
    out = bleu([["a", "dog"]], [[["a", "dog", "runs"], ["the", "big", "dog", "runs", "fast"]]])
    bp = math.exp(-0.5)
    assert out["bleu1"] == pytest.approx(bp, rel=1e-8)
    assert out["bleu2"] == pytest.approx(bp, rel=1e-8)
    assert out["bleu3"] == pytest.approx(bp * 1e-2, rel=1e-6)
    assert out["bleu4"] == pytest.approx(bp * (1e-6 * 1e-6) ** 0.25, rel=1e-6)  # p3 = p4 = 1e-6


def test_bleu_hand_computed_clipping_corpus_level():
    # candidate 1: "the the the" vs "the cat": unigram matches clipped to 1 of 3; bigram 0 of 2.
    # candidate 2: "a red circle" vs "a red square": unigrams 2/3, bigrams 1/2.
    # corpus: p1 = 3/6, p2 = 1/4; c = 6, r = 2 + 3 = 5 -> no brevity penalty.
    out = bleu([["the", "the", "the"], ["a", "red", "circle"]],
               [[["the", "cat"]], [["a", "red", "square"]]])
    assert out["bleu1"] == pytest.approx(0.5, rel=1e-9)
    assert out["bleu2"] == pytest.approx(math.sqrt(0.5 * 0.25), rel=1e-9)


def test_bleu_perfect_and_empty():
    assert bleu([["a", "b", "c", "d"]], [[["a", "b", "c", "d"]]]) == pytest.approx(
        {"bleu1": 1.0, "bleu2": 1.0, "bleu3": 1.0, "bleu4": 1.0})
    assert bleu([], []) == {"bleu1": 0.0, "bleu2": 0.0, "bleu3": 0.0, "bleu4": 0.0}
    assert bleu([[]], [[["a", "b"]]])["bleu1"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        bleu([["a"]], [])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_matches_pycocoevalcap(seed):
    rng = random.Random(seed)
    words = "a the red blue small large circle square dog man striped left of".split()
    cands, refs = [], []
    for _ in range(40):
        # short candidates (1-3 words) are where nltk.corpus_bleu and COCO disagree
        cands.append([rng.choice(words) for _ in range(rng.randint(1, 7))])
        refs.append([[rng.choice(words) for _ in range(rng.randint(1, 7))] for _ in range(rng.randint(1, 5))])
    ours, theirs = bleu(cands, refs), _coco_bleu(cands, refs)
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-12), key


def test_bleu_matches_pycocoevalcap_when_higher_orders_have_no_match():
    cands = [["a", "red", "dog"], ["blue", "square"]]
    refs = [[["a", "red", "circle"]], [["blue", "circle"], ["a", "square"]]]
    ours, theirs = bleu(cands, refs), _coco_bleu(cands, refs)
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-15), key


# ----------------------------------------------------------------------------- AP@0.5

def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


def _gt(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def test_ap50_hand_computed():
    gt = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    det = [_det([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 30, 30]], [0.9, 0.8, 0.7], [1, 1, 1])]
    # precision [1, 1/2, 2/3] at recall [1/2, 1/2, 1] -> envelope [1, 2/3, 2/3];
    # recall points 0..0.50 (51 of them) read 1, 0.51..1 (50) read 2/3.
    assert average_precision_50(det, gt, num_classes=3) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_ap50_iou_threshold_duplicates_and_empty_cases():
    gt = [_gt([[0, 0, 10, 10]], [2])]
    assert average_precision_50([_det([[0, 0, 10, 5]], [0.5], [2])], gt, 2) == pytest.approx(1.0)  # IoU 0.5 counts
    assert average_precision_50([_det([[0, 0, 10, 4.9]], [0.5], [2])], gt, 2) == 0.0
    # a duplicate of a matched detection is a false positive, ranked below the hit -> still AP 1
    assert average_precision_50([_det([[0, 0, 10, 10]] * 2, [0.9, 0.8], [2, 2])], gt, 2) == pytest.approx(1.0)
    # ... and above it halves precision at the only recall level
    dup = _det([[0, 0, 10, 10], [40, 40, 50, 50]], [0.8, 0.9], [2, 2])
    assert average_precision_50([dup], gt, 2) == pytest.approx(0.5)
    assert average_precision_50([_det([], [], [])], gt, 2) == 0.0  # no detections
    assert average_precision_50([_det([[0, 0, 1, 1]], [1.0], [1])], [_gt([], [])], 2) == 0.0  # no GT at all
    with pytest.raises(ValueError):
        average_precision_50([_det([[0, 0, 1, 1]], [1.0], [0])], gt, 2)  # label 0 is the background
    with pytest.raises(ValueError):
        average_precision_50([_det([[0, 5, 1, 1]], [1.0], [1])], gt, 2)  # inverted box


def _coco_ap50(dets, gts, num_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        x1, y1, x2, y2 = (float(v) for v in b)
        return [x1, y1, x2 - x1, y2 - y1]

    anns, results = [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        for b, lab in zip(g["boxes"], g["labels"]):
            bb = xywh(b)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab), "bbox": bb,
                         "area": bb[2] * bb[3], "iscrowd": 0})
        for b, s, lab in zip(d["boxes"], d["scores"], d["labels"]):
            results.append({"image_id": i + 1, "category_id": int(lab), "bbox": xywh(b), "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i + 1} for i in range(len(gts))], "annotations": anns,
                        "categories": [{"id": c} for c in range(1, num_classes + 1)]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, 2]  # [recall points, classes] at area "all", maxDets 100
    return float(prec[prec > -1].mean())


# seeds 28 and 34 hit recalls of exactly k/100, where the 101 recall thresholds must equal numpy's bit for bit
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 28, 34])
def test_ap50_matches_pycocotools(seed):
    g = torch.Generator().manual_seed(seed)
    num_classes, dets, gts = 4, [], []
    for _ in range(6):
        n = int(torch.randint(0, 6, (1,), generator=g))
        xy = torch.randint(0, 80, (n, 2), generator=g).float()
        wh = torch.randint(4, 40, (n, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(1, num_classes, (n,), generator=g)  # class 4 never has GT: left out of the mean
        gts.append({"boxes": boxes, "labels": labels})
        # detections: jittered copies of GT (some matches, some misses), exact duplicates, random boxes
        jitter = boxes + torch.round(torch.randn(n, 4, generator=g) * 6) / 4
        jitter[:, 2:] = torch.maximum(jitter[:, 2:], jitter[:, :2] + 0.5)  # keep x1 < x2, y1 < y2
        dup = boxes[: n // 2]
        rnd_xy = torch.randint(0, 80, (5, 2), generator=g).float() + 0.25
        rnd = torch.cat([rnd_xy, rnd_xy + torch.randint(4, 40, (5, 2), generator=g).float()], 1)
        d_boxes = torch.cat([jitter, dup, rnd])
        d_labels = torch.cat([labels, labels[: n // 2], torch.randint(1, num_classes + 1, (5,), generator=g)])
        flip = torch.rand(len(d_labels), generator=g) < 0.15  # some wrong classes
        d_labels = torch.where(flip, torch.randint(1, num_classes + 1, d_labels.shape, generator=g), d_labels)
        d_scores = torch.round(torch.rand(len(d_boxes), generator=g) * 5) / 5  # few distinct values: many ties
        dets.append({"boxes": d_boxes, "scores": d_scores, "labels": d_labels})
    # one image with 130 detections of a class: only the top 100 count (maxDets)
    many = torch.tensor([[1.0, 1.0, 11.0, 11.0]]).repeat(130, 1) + torch.arange(130).unsqueeze(1) * 0.5
    dets.append({"boxes": many, "scores": torch.linspace(0.2, 0.9, 130), "labels": torch.ones(130, dtype=torch.long)})
    gts.append({"boxes": many[[0, 60, 129]], "labels": torch.ones(3, dtype=torch.long)})
    ours = average_precision_50(dets, gts, num_classes)
    assert ours == pytest.approx(_coco_ap50(dets, gts, num_classes), abs=1e-12)
    assert 0.0 < ours < 1.0


# ----------------------------------------------------------------------------- recall@K

def test_recall_at_k_hand_computed():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.2],
                           [0.3, 0.4, 0.2, 0.8],
                           [0.1, 0.0, 0.6, 0.7]])
    sentence_image = torch.tensor([0, 0, 1, 2])
    out = recall_at_k(scores, sentence_image, ks=(1, 2, 5))
    # i2t ranks (wrong sentences at or above the best own one): image 0 -> 0, image 1 -> 3, image 2 -> 0
    assert out["i2t_r1"] == pytest.approx(2 / 3) and out["i2t_r2"] == pytest.approx(2 / 3)
    assert out["i2t_r5"] == 1.0
    # t2i ranks: sentence 0 -> 0, sentence 1 -> 1 (0.4 > 0.1), sentence 2 -> 2, sentence 3 -> 1 (0.8 > 0.7)
    assert out["t2i_r1"] == pytest.approx(1 / 4) and out["t2i_r2"] == pytest.approx(3 / 4)
    assert out["t2i_r5"] == 1.0
    assert set(recall_at_k(scores, sentence_image)) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}


def test_recall_at_k_ties_count_against_and_images_without_sentences():
    out = recall_at_k(torch.zeros(2, 2), torch.tensor([0, 1]), ks=(1, 2))
    assert out == {"i2t_r1": 0.0, "i2t_r2": 1.0, "t2i_r1": 0.0, "t2i_r2": 1.0}
    # image 2 has no sentence: left out of i2t (which is perfect here), present as a distractor in t2i
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 2.0]])
    out = recall_at_k(scores, torch.tensor([0, 1]), ks=(1,))
    assert out == {"i2t_r1": 1.0, "t2i_r1": 0.5}
    assert recall_at_k(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), ks=(1,)) == {"i2t_r1": 0.0, "t2i_r1": 0.0}


# ----------------------------------------------------------------------------- grounding

def test_grounding_accuracy_protocols_and_misses():
    pred = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    merged = [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 0, 15, 10]]), torch.tensor([[0.0, 0, 10, 5]])]
    # IoU 1 (hit), 50/150 (miss), exactly 0.5 (hit)
    assert grounding_accuracy(pred, merged) == pytest.approx(2 / 3)
    any_boxes = [merged[0], torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 9]]), merged[2]]  # second: IoU 0.9 with one
    assert grounding_accuracy(pred, any_boxes) == 1.0
    assert grounding_accuracy([None, pred[1], torch.zeros(0, 4)], any_boxes) == pytest.approx(1 / 3)
    assert grounding_accuracy([], []) == 0.0
    assert grounding_accuracy(pred[:1], [torch.tensor([[0.0, 0, 10, 10]])], iou=0.99) == 1.0
    with pytest.raises(ValueError):
        grounding_accuracy(pred, merged[:2])


# ----------------------------------------------------------------------------- attribute mentions

WORDS = {"colour": {"red": "red", "blue": "blue"},
         "pattern": {"striped": "striped", "stripes": "striped", "dotted": "dotted"}}


def test_attribute_mention_rates_hand_computed():
    captions = [["a", "red", "striped", "circle"], ["a", "blue", "circle"], ["a", "red", "circle"], ["a", "circle"]]
    references = [
        [["a", "red", "circle", "with", "stripes"], ["the", "circle"]],  # colour red: hit; striped (synonym): hit
        [["a", "red", "dotted", "square"]],  # colour red vs blue: miss; dotted: miss
        [["a", "circle"]],  # names neither: not counted
        [["a", "blue", "circle"], ["a", "red", "circle"]],  # colour named, caption names none: miss
    ]
    out = attribute_mention_rates(captions, references, WORDS)
    assert out == {"attr_colour": pytest.approx(1 / 3), "num_attr_colour": 3,
                   "attr_pattern": pytest.approx(1 / 2), "num_attr_pattern": 2}
    assert list(out) == ["attr_colour", "num_attr_colour", "attr_pattern", "num_attr_pattern"]


def test_attribute_mention_rates_any_reference_value_counts_and_empty():
    # references disagree (two objects named together): either value is right
    out = attribute_mention_rates([["the", "blue", "one"]], [[["red", "x"], ["blue", "x"]]], WORDS)
    assert out["attr_colour"] == 1.0 and out["num_attr_pattern"] == 0 and out["attr_pattern"] == 0.0
    assert attribute_mention_rates([], [], WORDS)["attr_colour"] == 0.0
    with pytest.raises(ValueError):
        attribute_mention_rates([["a"]], [], WORDS)


def test_everyday_attribute_words_flickr30k_phrases_and_merge():
    """train.evaluate's words read Flickr30k's colours, sizes and patterns ("gray" = "grey", "plaid"), and keep
    the synthetic world's; merging lists that give one word two values is refused."""
    from regioncap.metrics import merge_attribute_words
    from train.evaluate import ATTRIBUTE_WORDS

    captions = [["a", "man", "in", "a", "gray", "plaid", "shirt"], ["a", "huge", "dog"], ["a", "red", "star"]]
    refs = [[["a", "man", "in", "a", "grey", "plaid", "shirt"]], [["a", "tiny", "brown", "dog"]],
            [["the", "red", "stars"]]]
    rates = attribute_mention_rates(captions, refs, ATTRIBUTE_WORDS)
    # colour: grey named (1), brown not (2), red named (3); size: small asked, large said; pattern: plaid
    assert (rates["attr_colour"], rates["num_attr_colour"]) == (2 / 3, 3)
    assert (rates["attr_size"], rates["num_attr_size"]) == (0.0, 1)
    assert (rates["attr_pattern"], rates["num_attr_pattern"]) == (1.0, 1)
    assert (rates["attr_shape"], rates["num_attr_shape"]) == (1.0, 1)
    assert merge_attribute_words({"size": {"big": "large"}}, {"size": {"big": "large", "wee": "small"}}) == {
        "size": {"big": "large", "wee": "small"}}
    with pytest.raises(ValueError, match="big"):
        merge_attribute_words({"size": {"big": "large"}}, {"size": {"big": "small"}})
