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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from regioncap.data.dataset import pad_sequences


@dataclass
class CaptionCandidate:
    """One candidate caption of a region: ``score`` is what it was ranked by (see the module doc)."""

    caption: str
    log_prob: float
    similarity: float
    score: float

    def to_dict(self) -> dict:
        return {"caption": self.caption, "log_prob": round(self.log_prob, 4),
                "similarity": round(self.similarity, 4), "score": round(self.score, 4)}


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


def candidate_similarities(decoder, text_encoder, v: Tensor, beam_size: int | None = None
                           ) -> tuple[list[list[int]], Tensor, Tensor, Tensor, Tensor]:
    """Every region's decoder candidates, flattened, with their region-phrase similarities.

    All candidates go through the text encoder in one call. Returns (word ids per candidate,
    region LongTensor[C], log_probs FloatTensor[C], lengths LongTensor[C] (words), similarities
    FloatTensor[C] v_region . s(candidate)), on the CPU; candidates of a region come most probable first.
    """
    cands = decoder.candidates(v, beam_size)
    ids = [c[0] for per in cands for c in per]
    region = torch.repeat_interleave(torch.arange(v.shape[0]), torch.tensor([len(per) for per in cands]))
    log_probs = torch.tensor([c[1] for per in cands for c in per], dtype=torch.float32)
    tokens, lengths = pad_sequences([torch.tensor(i, dtype=torch.long) for i in ids])
    s = text_encoder(tokens.to(v.device), lengths).float()  # [C, D], one call for every region
    sims = (v.float()[region.to(v.device)] * s).sum(-1).cpu()  # [C]
    return ids, region, log_probs, lengths, sims


def rerank(decoder, text_encoder, v: Tensor, weight: float, length_alpha: float = 0.0,
           beam_size: int | None = None) -> tuple[list[list[int]], Tensor, list[list[tuple]]]:
    """Candidates for every region, scored and chosen; batched (one text-encoder call for all of them).

    Args:
        decoder: a :class:`~regioncap.models.captioner.CaptionDecoder`.
        text_encoder: a :class:`~regioncap.models.text_encoder.TextEncoder` over the same vocabulary.
        v: FloatTensor[R, D] region vectors (unit norm, the joint space).

    Returns:
        (chosen word ids per region, FloatTensor[R] their combined scores, per region its candidates
        as (word ids, log_prob, similarity, score) tuples, best first).
    """
    r = v.shape[0]
    if r == 0:
        return [], v.new_zeros(0), []
    ids, region, log_probs, lengths, sims = candidate_similarities(decoder, text_encoder, v, beam_size)
    scores = rerank_scores(log_probs, lengths, sims, weight, length_alpha)
    best = best_per_region(scores, region, r)
    per_region: list[list[tuple]] = [[] for _ in range(r)]
    for k, (row, seq) in enumerate(zip(region.tolist(), ids)):
        per_region[row].append((seq, float(log_probs[k]), float(sims[k]), float(scores[k])))
    per_region = [sorted(p, key=lambda c: -c[3]) for p in per_region]
    return [ids[i] for i in best.tolist()], scores[best], per_region
