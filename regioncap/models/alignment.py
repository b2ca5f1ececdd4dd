"""Region-phrase alignment: similarities, the image-sentence score S_kl and ranking losses.

Pure functions (open_clip's ``loss.py``, torchvision's ``fastrcnn_loss``), after Karpathy &
Fei-Fei (CVPR 2015), section 3.1.3 ("simplified objective"):

    S_kl = sum_{t in g_l} max_{i in g_k} v_i . s_t

    C = sum_k [ sum_l max(0, S_kl - S_kk + 1) + sum_l max(0, S_lk - S_kk + 1) ]
"""

from __future__ import annotations

import torch
from torch import Tensor


def region_phrase_similarity(v: Tensor, s: Tensor) -> Tensor:
    """Dot products of every phrase with every region.

    Args:
        v: FloatTensor[R, D] region vectors.  s: FloatTensor[P, D] phrase vectors.

    Returns:
        FloatTensor[P, R] with ``sim[t, i] = v_i . s_t``.
    """
    return s @ v.T


def image_sentence_scores(
    sim: Tensor, region_image: Tensor, phrase_sentence: Tensor, num_images: int, num_sentences: int
) -> Tensor:
    """Karpathy's S_kl: each phrase of sentence l picks its best region in image k; scores are summed.

    Args:
        sim: FloatTensor[P, R] region-phrase similarities.
        region_image: LongTensor[R] image index (0..K-1) of each region.
        phrase_sentence: LongTensor[P] sentence index (0..S-1) of each phrase.

    Returns:
        FloatTensor[K, S]. A sentence without phrases scores 0 everywhere; an image without
        regions contributes 0 for every phrase.

    The per-image maximum is a segment max (``scatter_reduce`` amax by image index): memory is
    O(P x R) plus O(P x K), never P x K x R (at Flickr30k's test split that would be ~9 GB per
    64-image block). The gradient goes to the best region, shared evenly among ties, as with ``amax``.
    """
    num_phrases, num_regions = sim.shape
    best = sim.new_full((num_phrases, num_images), float("-inf"))
    if num_regions:
        best = best.scatter_reduce(1, region_image[None, :].expand(num_phrases, -1), sim, "amax")  # [P, K]
    has_regions = torch.zeros(num_images, dtype=torch.bool, device=sim.device)
    has_regions[region_image] = True
    best = torch.where(has_regions[None, :], best, torch.zeros_like(best))
    scores = sim.new_zeros((num_images, num_sentences))
    return scores.index_add(1, phrase_sentence, best.T)


def _reduce(loss: Tensor, count: int, reduction: str) -> Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / max(count, 1)
    raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")


def sentence_ranking_loss(
    scores: Tensor, sentence_image: Tensor, margin: float = 1.0, reduction: str = "sum"
) -> Tensor:
    """Bidirectional max-margin ranking loss over image-sentence scores.

    Each sentence l with its image k = ``sentence_image[l]`` is a positive pair with score S_kl.
    It is ranked against (a) every other image k' in the column: max(0, S_k'l - S_kl + margin),
    and (b) every sentence l' of another image in the row: max(0, S_kl' - S_kl + margin).
    With one sentence per image this is exactly Karpathy's C.

    Args:
        scores: FloatTensor[K, S].  sentence_image: LongTensor[S] in 0..K-1.
        reduction: ``"sum"`` (the seed's) or ``"mean"`` (divided by the number of positive pairs S).

    Returns:
        scalar FloatTensor.
    """
    num_images, num_sentences = scores.shape
    if num_sentences == 0:
        return scores.sum() * 0.0
    cols = torch.arange(num_sentences, device=scores.device)
    positive = scores[sentence_image, cols]  # [S]
    is_own = sentence_image[None, :] == torch.arange(num_images, device=scores.device)[:, None]  # [K, S]
    # (a) rank images for each sentence: other rows of column l
    image_cost = (scores - positive[None, :] + margin).clamp(min=0).masked_fill(is_own, 0.0)  # [K, S]
    # (b) rank sentences for each positive pair (k, l): entries (k, l') with l' not of image k
    row = scores[sentence_image]  # [S(pairs), S] row k of each pair
    other = ~is_own[sentence_image]  # [S, S]: l' belongs to another image
    sentence_cost = (row - positive[:, None] + margin).clamp(min=0) * other
    return _reduce(image_cost.sum() + sentence_cost.sum(), num_sentences, reduction)


def phrase_region_loss(
    sim: Tensor,
    phrase_region: Tensor,
    margin: float = 0.2,
    region_image: Tensor | None = None,
    reduction: str = "sum",
) -> Tensor:
    """Max-margin ranking over ground-truth phrase-region pairs, both directions.

    For each phrase t with its region r = ``phrase_region[t]``:
    (a) every other region i: max(0, sim[t, i] - sim[t, r] + margin);
    (b) every phrase t' whose region is not r: max(0, sim[t', r] - sim[t, r] + margin).
    With ``region_image`` given, negatives are limited to the positive region's image (regions of
    that image, phrases grounded in that image), which is what grounding asks the model to tell apart.

    Args:
        sim: FloatTensor[P, R].  phrase_region: LongTensor[P] in 0..R-1.
        region_image: optional LongTensor[R] image index of each region.
        reduction: ``"sum"`` or ``"mean"`` (divided by P).

    Returns:
        scalar FloatTensor (0 when P == 0).
    """
    num_phrases, num_regions = sim.shape
    if num_phrases == 0:
        return sim.sum() * 0.0
    rows = torch.arange(num_phrases, device=sim.device)
    positive = sim[rows, phrase_region]  # [P]
    region_neg = torch.ones_like(sim, dtype=torch.bool)
    region_neg[rows, phrase_region] = False  # [P, R]
    phrase_neg = phrase_region[None, :] != phrase_region[:, None]  # [P(t), P(t')]
    if region_image is not None:
        pos_image = region_image[phrase_region]  # [P]
        region_neg &= region_image[None, :] == pos_image[:, None]
        phrase_neg &= pos_image[None, :] == pos_image[:, None]
    cost_regions = (sim - positive[:, None] + margin).clamp(min=0) * region_neg
    cost_phrases = (sim[:, phrase_region].T - positive[:, None] + margin).clamp(min=0) * phrase_neg
    return _reduce(cost_regions.sum() + cost_phrases.sum(), num_phrases, reduction)
