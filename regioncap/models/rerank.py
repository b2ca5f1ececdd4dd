"""Caption reranking: choose each region's caption among the decoder's candidates with the joint space.

Beam search returns the most probable caption, and because people leave words out when they describe
things, the most probable caption is the short, generic one ("a large black square" for a black
checkered square). The alignment model already says how well a phrase fits a region (v_i . s), so
the decoder proposes several captions per region (:meth:`CaptionDecoder.candidates`), the text
encoder encodes all of them in one call, and each region takes the candidate with the highest

    score = log_prob / n ** length_alpha + weight * (v_i . s(candidate))

where ``log_prob`` is the candidate's sequence log-probability (words + <end>), ``n`` its number of
words + 1 (the <end> token) and ``weight`` / ``length_alpha`` come from the captioner's config
(``rerank_weight``, ``rerank_length_alpha``; chosen on validation data by ``train/tune_rerank.py``).
With both 0 this is plain beam search, which is then run as before (no candidates, no text encoding).

A box made up of several detected objects ("two stars", "a group of people"; :func:`find_groups`) is
hard to name from its own vector: the union box of two stars looks like neither. Its objects are each
easy to name, so when the captioner's ``group_weight`` is set, such a box takes its caption among the
decoder's candidates for the box and those it proposes when it also sees the objects
(:func:`group_candidates`, ``group_beam_size`` wide; every ``log_prob`` is the decoder's given the box
alone) by

    score = (the score above) + group_weight * mean over its objects m of (v_m . s(singular(candidate)))

where ``singular`` reads every plural noun in the singular ("two stars" -> "two star": each object is
one star; :meth:`~regioncap.data.vocab.Vocabulary.singular_ids`). The box's own vector still decides,
through ``log_prob``, that it shows several things.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_area

from regioncap.data.dataset import pad_sequences


@dataclass
class CaptionCandidate:
    """One candidate caption of a region: ``score`` is what it was ranked by (see the module doc);
    ``member_similarity`` is set for a box made up of several objects (:func:`find_groups`)."""

    caption: str
    log_prob: float
    similarity: float
    score: float
    member_similarity: float | None = None

    def to_dict(self) -> dict:
        out = {"caption": self.caption, "log_prob": round(self.log_prob, 4),
               "similarity": round(self.similarity, 4), "score": round(self.score, 4)}
        if self.member_similarity is not None:
            out["member_similarity"] = round(self.member_similarity, 4)
        return out


# What makes a box a group of detected objects (find_groups); chosen on validation scenes.
MEMBER_MIN_SCORE = 0.5  # a detection this confident is an object
MEMBER_MIN_INSIDE = 0.85  # at least this share of the object's box lies inside the box
MEMBER_MAX_AREA = 0.7  # and its box is clearly smaller than the box (not the box's own detection)
GROUP_MIN_COVER = 0.7  # IoU of the box with the box enclosing its objects: they make the box up


def _enclosing_iou(lo: Tensor, hi: Tensor, boxes: Tensor) -> Tensor:
    """IoU of the boxes (x1, y1) = lo, (x2, y2) = hi [..., 2] with ``boxes`` broadcast to them."""
    inter = (torch.min(hi, boxes[..., 2:]) - torch.max(lo, boxes[..., :2])).clamp(min=0).prod(-1)
    union = (hi - lo).clamp(min=0).prod(-1) + (boxes[..., 2:] - boxes[..., :2]).prod(-1) - inter
    return inter / union.clamp(min=1e-6)


def find_groups(boxes: Tensor, det_boxes: Tensor, det_scores: Tensor) -> Tensor:
    """Which detections make up which box: BoolTensor[R, N], all False in rows that are not groups.

    The objects inside a box are the detections scoring ``MEMBER_MIN_SCORE`` or more that lie inside
    it (``MEMBER_MIN_INSIDE`` of their area), each clearly smaller than it (``MEMBER_MAX_AREA``). The
    ones that make it up are the fewest of them whose enclosing box fits it best: the best pair, then
    one more at a time while that raises the IoU (the middle one of three in a row adds nothing; a
    small object lying between two large ones is not one of them). The box is a group when that
    IoU is at least ``GROUP_MIN_COVER``: "two stars" drawn around two detected stars is one, a large
    square with two small circles on it is not.

    Args:
        boxes: FloatTensor[R, 4] the boxes to caption.  det_boxes: FloatTensor[N, 4] detections,
            det_scores: FloatTensor[N]; all in the same pixels (x1, y1, x2, y2).
    """
    r, n = boxes.shape[0], det_boxes.shape[0]
    if r == 0 or n < 2:
        return torch.zeros(r, n, dtype=torch.bool, device=boxes.device)
    boxes, det = boxes.float(), det_boxes.float().to(boxes.device)
    area, det_area = box_area(boxes), box_area(det)
    lt = torch.max(boxes[:, None, :2], det[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], det[None, :, 2:])
    inside = (rb - lt).clamp(min=0).prod(-1)  # [R, N]
    inner = ((inside >= MEMBER_MIN_INSIDE * det_area) & (det_area <= MEMBER_MAX_AREA * area[:, None])
             & (det_scores.to(boxes.device) >= MEMBER_MIN_SCORE))
    # the best pair of inner objects per box
    lo = torch.min(det[:, None, :2], det[None, :, :2])  # [N, N, 2] enclosing box of each pair
    hi = torch.max(det[:, None, 2:], det[None, :, 2:])
    pair_iou = _enclosing_iou(lo[None], hi[None], boxes[:, None, None, :])  # [R, N, N]
    ok = inner[:, :, None] & inner[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=boxes.device)
    best, flat = pair_iou.masked_fill(~ok, -1.0).flatten(1).max(1)  # [R]
    rows = torch.arange(r, device=boxes.device)
    member = torch.zeros(r, n, dtype=torch.bool, device=boxes.device)
    member[rows, flat // n] = True
    member[rows, flat % n] = True
    lo, hi = lo.flatten(0, 1)[flat], hi.flatten(0, 1)[flat]  # [R, 2]
    for _ in range(n - 2):  # then one more object at a time while the fit improves
        lo_k = torch.min(lo[:, None], det[None, :, :2])  # [R, N, 2]
        hi_k = torch.max(hi[:, None], det[None, :, 2:])
        gain = _enclosing_iou(lo_k, hi_k, boxes[:, None, :]).masked_fill(~inner | member, -1.0)
        better, k = gain.max(1)
        grow = better > best + 1e-6
        if not bool(grow.any()):
            break
        member[rows[grow], k[grow]] = True
        lo[grow], hi[grow] = lo_k[rows, k][grow], hi_k[rows, k][grow]
        best = torch.where(grow, better, best)
    return member & (best >= GROUP_MIN_COVER)[:, None]


def group_members(boxes: list[Tensor], objects: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor] | None:
    """The objects that make up each box, over several images (:func:`find_groups`).

    Args:
        boxes: per image FloatTensor[N_i, 4] the boxes to caption.  objects: per image (boxes [M_i, 4],
            scores [M_i], vectors [M_i, D]) of its detected objects, in the same pixels.

    Returns:
        (the objects' vectors FloatTensor[K, D], owner LongTensor[K] (CPU) each one's box among all
        images' boxes, in order), or None when no box is made up of objects.
    """
    rows, owner, offset = [], [], 0
    for b, (obj_boxes, obj_scores, obj_vectors) in zip(boxes, objects):
        region, obj = find_groups(b, obj_boxes, obj_scores).nonzero(as_tuple=True)  # [N_i, M_i]
        rows.append(obj_vectors[obj.to(obj_vectors.device)].float())
        owner.append(region.cpu() + offset)
        offset += len(b)
    owner = torch.cat(owner) if owner else torch.zeros(0, dtype=torch.long)
    return (torch.cat(rows), owner) if len(owner) else None


def rerank_scores(log_probs: Tensor, lengths: Tensor, similarities: Tensor, weight: float,
                  length_alpha: float = 0.0) -> Tensor:
    """Combined scores FloatTensor[C] of C candidates.

    Args:
        log_probs: FloatTensor[C] sequence log-probabilities (sum over the words and <end>).
        lengths: LongTensor[C] number of words (without <end>).
        similarities: FloatTensor[C] region-phrase similarity v_i . s of each candidate.
        weight: the similarity's weight.  length_alpha: log_prob is divided by (words + 1) ** alpha.
    """
    norm = (lengths.to(log_probs.dtype) + 1.0).pow(length_alpha)
    return log_probs / norm + weight * similarities


def best_per_region(scores: Tensor, region: Tensor, num_regions: int) -> Tensor:
    """Index (into the C candidates) of the highest score of each region: LongTensor[num_regions].

    ``region`` LongTensor[C] gives each candidate's region; every region must have a candidate.
    Ties go to the earlier candidate (the more probable one, as candidates come most probable first).
    """
    best = torch.full((num_regions,), float("-inf"), dtype=scores.dtype).scatter_reduce(
        0, region, scores, reduce="amax")
    is_best = scores == best[region]
    index = torch.arange(len(scores))
    first = torch.full((num_regions,), len(scores), dtype=torch.long).scatter_reduce(
        0, region[is_best], index[is_best], reduce="amin")
    if (first == len(scores)).any():
        raise ValueError("best_per_region: a region has no candidate")
    return first


def candidate_similarities(decoder, text_encoder, v: Tensor, beam_size: int | None = None,
                           singular_ids: Tensor | None = None, cands: list | None = None):
    """Every region's decoder candidates, flattened, with their region-phrase similarities.

    All candidates go through the text encoder in one call. Returns (word ids per candidate,
    region LongTensor[C], log_probs FloatTensor[C], lengths LongTensor[C] (words), similarities
    FloatTensor[C] v_region . s(candidate)), on the CPU; candidates of a region come most probable first.
    With ``singular_ids`` (LongTensor[V], each word id's singular) the candidates read in the singular
    are encoded in the same call and their vectors FloatTensor[C, D] (on v's device) come sixth.
    ``cands``: the candidates per region as (word ids, log_prob) pairs, instead of the decoder's own.
    """
    cands = decoder.candidates(v, beam_size) if cands is None else cands
    ids = [c[0] for per in cands for c in per]
    region = torch.repeat_interleave(torch.arange(v.shape[0]), torch.tensor([len(per) for per in cands]))
    log_probs = torch.tensor([c[1] for per in cands for c in per], dtype=torch.float32)
    tokens, lengths = pad_sequences([torch.tensor(i, dtype=torch.long) for i in ids])
    tokens = tokens.to(v.device)
    if singular_ids is None:
        s = text_encoder(tokens, lengths).float()  # [C, D], one call for every region
    else:  # the candidates as they are and in the singular: each distinct text once, in one call
        both = torch.cat([torch.cat([tokens, singular_ids.to(v.device)[tokens]]),
                          torch.cat([lengths, lengths]).to(v.device)[:, None]], 1)
        distinct, where = torch.unique(both, dim=0, return_inverse=True)
        s = text_encoder(distinct[:, :-1], distinct[:, -1].cpu()).float()[where]  # [2C, D]
    c = len(ids)
    sims = (v.float()[region.to(v.device)] * s[:c]).sum(-1).cpu()  # [C]
    if singular_ids is not None:
        return ids, region, log_probs, lengths[:c], sims, s[c:]
    return ids, region, log_probs, lengths, sims


def group_vectors(v: Tensor, members: Tensor, owner: Tensor) -> Tensor:
    """FloatTensor[R, D]: each region's vector plus the mean of its objects' vectors, unit norm (what
    the decoder is shown besides v in :func:`group_candidates`). owner: LongTensor[K] rows of v."""
    owner = owner.to(v.device)
    total = v.new_zeros(v.shape).index_add_(0, owner, members.to(v))
    count = torch.bincount(owner, minlength=v.shape[0]).clamp(min=1).to(v.dtype)[:, None]
    return F.normalize(v + total / count, dim=-1)


def group_candidates(decoder, v: Tensor, members: Tensor, owner: Tensor, beam_size: int | None = None,
                     proposed: list | None = None) -> list[list[tuple[list[int], float]]]:
    """Candidates of boxes made up of several objects, per region (word ids, log_prob), most probable first.

    The decoder's own candidates for v, and those it proposes for v plus the mean of the objects'
    vectors (:func:`group_vectors`; given the box of two circles it says "two circles" more often when
    it also sees the circles); all of them scored by the decoder given v alone
    (:meth:`~regioncap.models.captioner.CaptionDecoder.sequence_log_probs`), so that the box's own
    vector decides how probable each is.

    Args:
        v: FloatTensor[R, D].  members: FloatTensor[K, D] the objects' vectors, owner: LongTensor[K]
            their rows of v (every row has at least one).
        proposed: ``decoder.candidates(cat([v, group_vectors(...)]), beam_size)`` if already decoded.
    """
    r = v.shape[0]
    both = proposed if proposed is not None else decoder.candidates(
        torch.cat([v, group_vectors(v, members, owner)]), beam_size)
    own = [{tuple(c): lp for c, lp in both[i]} for i in range(r)]  # log-probs given v already
    new = [(i, c) for i in range(r) for c, _ in both[r + i] if tuple(c) not in own[i]]
    if new:  # the others' log-probabilities given v, in one teacher-forced pass
        region = torch.tensor([i for i, _ in new], device=v.device)
        tokens, lengths = pad_sequences([torch.tensor(c, dtype=torch.long) for _, c in new])
        for (i, c), lp in zip(new, decoder.sequence_log_probs(v[region], tokens.to(v.device), lengths).tolist()):
            own[i].setdefault(tuple(c), lp)
    return [sorted(((list(c), lp) for c, lp in d.items()), key=lambda c: -c[1]) for d in own]


def member_similarities(singular_vectors: Tensor, region: Tensor, members: Tensor, owner: Tensor) -> Tensor:
    """FloatTensor[C]: per candidate, the mean of v_m . s over its region's objects m.

    Args:
        singular_vectors: FloatTensor[C, D] the candidates' text vectors (read in the singular).
        region: LongTensor[C] each candidate's region.  members: FloatTensor[K, D] the objects' vectors,
        owner: LongTensor[K] the region each object belongs to; a region without one gets 0.
    """
    dev = singular_vectors.device
    sims = singular_vectors @ members.to(dev, singular_vectors.dtype).T  # [C, K]
    mine = region.to(dev)[:, None] == owner.to(dev)[None, :]  # [C, K]
    count = mine.sum(1).clamp(min=1)
    return ((sims * mine).sum(1) / count).cpu()


def group_candidate_similarities(decoder, text_encoder, v: Tensor, members: Tensor, owner: Tensor,
                                 singular_ids: Tensor, beam_size: int | None = None, proposed: list | None = None):
    """:func:`candidate_similarities` of the boxes made up of objects (rows of v), over
    :func:`group_candidates`, with a sixth item: each candidate's :func:`member_similarities`."""
    ids, region, log_probs, lengths, sims, singular = candidate_similarities(
        decoder, text_encoder, v, beam_size, singular_ids, group_candidates(decoder, v, members, owner, beam_size,
                                                                             proposed))
    return ids, region, log_probs, lengths, sims, member_similarities(singular, region, members, owner)


def rerank(decoder, text_encoder, v: Tensor, weight: float, length_alpha: float = 0.0,
           beam_size: int | None = None, members: tuple[Tensor, Tensor, Tensor] | None = None,
           member_weight: float = 0.0, proposed: list | None = None
           ) -> tuple[list[list[int]], Tensor, list[list[tuple]]]:
    """Candidates for every region, scored and chosen; batched (one text-encoder call for all of them).

    Args:
        decoder: a :class:`~regioncap.models.captioner.CaptionDecoder`.
        text_encoder: a :class:`~regioncap.models.text_encoder.TextEncoder` over the same vocabulary.
        v: FloatTensor[R, D] region vectors (unit norm, the joint space).
        members: for boxes made up of several objects, (vectors FloatTensor[K, D] of the objects,
            owner LongTensor[K] the row of v each belongs to, singular_ids LongTensor[V]);
            ``member_weight`` times :func:`member_similarities` is added to the score (module doc);
            ``proposed``: the decoder's candidates for them, if already decoded (see :func:`group_candidates`).

    Returns:
        (chosen word ids per region, FloatTensor[R] their combined scores, per region its candidates
        as (word ids, log_prob, similarity, score) tuples, best first; with ``members`` each tuple
        ends with the candidate's member similarity).
    """
    r = v.shape[0]
    if r == 0:
        return [], v.new_zeros(0), []
    if members is None:
        ids, region, log_probs, lengths, sims = candidate_similarities(decoder, text_encoder, v, beam_size)
        scores = rerank_scores(log_probs, lengths, sims, weight, length_alpha)
        extra = None
    else:
        ids, region, log_probs, lengths, sims, extra = group_candidate_similarities(
            decoder, text_encoder, v, *members, beam_size, proposed)
        scores = rerank_scores(log_probs, lengths, sims, weight, length_alpha) + member_weight * extra
    best = best_per_region(scores, region, r)
    per_region: list[list[tuple]] = [[] for _ in range(r)]
    for k, (row, seq) in enumerate(zip(region.tolist(), ids)):
        cand = (seq, float(log_probs[k]), float(sims[k]), float(scores[k]))
        per_region[row].append(cand if extra is None else cand + (float(extra[k]),))
    per_region = [sorted(p, key=lambda c: -c[3]) for p in per_region]
    return [ids[i] for i in best.tolist()], scores[best], per_region
