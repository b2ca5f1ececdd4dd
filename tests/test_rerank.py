"""Caption reranking: combined scores, the per-region choice, and the batched rerank() call."""

import pytest
import torch
from torch import nn

from regioncap.models.captioner import CaptionDecoder
from regioncap.models.config import CaptionerConfig, TextEncoderConfig
from regioncap.models.rerank import best_per_region, rerank, rerank_scores
from regioncap.models.text_encoder import TextEncoder

V, D = 12, 8


def test_rerank_scores_hand_computed():
    # candidate 0: "a black square"          log p = -1, 3 words, v.s = 0.2
    # candidate 1: "a black striped square"  log p = -3, 4 words, v.s = 0.9
    logp, lengths, sims = torch.tensor([-1.0, -3.0]), torch.tensor([3, 4]), torch.tensor([0.2, 0.9])
    assert rerank_scores(logp, lengths, sims, 0.0).tolist() == pytest.approx([-1.0, -3.0])
    # weight 4: -1 + 0.8 = -0.2 and -3 + 3.6 = 0.6
    assert rerank_scores(logp, lengths, sims, 4.0).tolist() == pytest.approx([-0.2, 0.6])
    # alpha 1 divides by words + 1: -1/4 + 0.2 = -0.05 and -3/5 + 0.9 = 0.3
    assert rerank_scores(logp, lengths, sims, 1.0, 1.0).tolist() == pytest.approx([-0.05, 0.3])


def test_best_per_region_takes_the_highest_and_the_earlier_on_ties():
    scores = torch.tensor([-1.0, 0.5, 0.2, 0.7, 0.7, -2.0])
    region = torch.tensor([0, 0, 1, 1, 1, 2])
    assert best_per_region(scores, region, 3).tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match="no candidate"):
        best_per_region(scores, region, 4)


class FixedDecoder:
    """Candidates given by hand: per region [(word ids, log-prob)], most probable first."""

    def __init__(self, cands):
        self.cands = cands

    def candidates(self, v, beam_size=None):
        return self.cands


class TableEncoder(nn.Module):
    """Text 'encoder' mapping a phrase's first word id to a fixed unit vector; counts its calls."""

    def __init__(self, table):
        super().__init__()
        self.table, self.calls = table, []

    def forward(self, tokens, lengths):
        self.calls.append(tokens.shape[0])
        return self.table[tokens[:, 0]]


def test_rerank_picks_the_higher_combined_score_on_a_hand_built_case():
    # Region 0's vector points at word 5's phrase vector; word 4's phrase is orthogonal to it.
    table = torch.zeros(V, 2)
    table[4], table[5], table[6] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.6, 0.8])
    v = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    cands = [[([4, 7], -1.0), ([5, 8, 7], -2.5)],   # region 0: v.s = 0 and 1
             [([6, 7], -0.5), ([4, 7, 9], -1.0)]]   # region 1: v.s = 0.6 and 1
    enc = TableEncoder(table)
    # weight 0: the most probable caption of each region, scored by its log-probability
    ids, scores, per = rerank(FixedDecoder(cands), enc, v, weight=0.0)
    assert ids == [[4, 7], [6, 7]] and scores.tolist() == pytest.approx([-1.0, -0.5])
    # weight 2: region 0: -1 + 0 = -1 < -2.5 + 2 = -0.5 -> the second; region 1: -0.5 + 1.2 = 0.7 < -1 + 2 = 1
    ids, scores, per = rerank(FixedDecoder(cands), enc, v, weight=2.0)
    assert ids == [[5, 8, 7], [4, 7, 9]] and scores.tolist() == pytest.approx([-0.5, 1.0])
    assert [c[0] for c in per[0]] == [[5, 8, 7], [4, 7]]  # candidates best first
    assert per[1][1][1:] == pytest.approx((-0.5, 0.6, 0.7))  # (log_prob, similarity, score)
    # weight 1: region 1: -0.5 + 0.6 = 0.1 > -1 + 1 = 0 -> back to the first
    assert rerank(FixedDecoder(cands), enc, v, weight=1.0)[0][1] == [6, 7]
    assert enc.calls == [4, 4, 4]  # one text-encoder call per rerank, holding every candidate


def make_parts(seed=0):
    torch.manual_seed(seed)
    dec = CaptionDecoder(V, CaptionerConfig(embed_dim=8, hidden_dim=16, dropout=0.0, max_len=6), D).eval()
    enc = TextEncoder(V, TextEncoderConfig(embed_dim=8, hidden_dim=16, max_len=8), D).eval()
    return dec, enc


def test_rerank_with_real_modules_is_batched_deterministic_and_exact():
    dec, enc = make_parts()
    v = nn.functional.normalize(torch.randn(5, D), dim=-1)
    calls = []
    enc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    with torch.inference_mode():
        ids, scores, per = rerank(dec, enc, v, weight=3.0, length_alpha=0.5, beam_size=3)
        again = rerank(dec, enc, v, weight=3.0, length_alpha=0.5, beam_size=3)
        assert (ids, scores.tolist(), per) == (again[0], again[1].tolist(), again[2])
        assert calls == [sum(len(p) for p in per)] * 2  # all regions' candidates in one call
        for r in range(5):
            assert ids[r] == per[r][0][0] and scores[r].item() == pytest.approx(per[r][0][3])
            for seq, logp, sim, score in per[r]:
                alone = enc(torch.tensor([seq]), torch.tensor([len(seq)]))[0]  # encoded alone = batched
                assert sim == pytest.approx(float(alone @ v[r]), abs=1e-5)
                assert score == pytest.approx(logp / (len(seq) + 1) ** 0.5 + 3.0 * sim, abs=1e-5)
            assert [c[3] for c in per[r]] == sorted((c[3] for c in per[r]), reverse=True)
    assert rerank(dec, enc, torch.zeros(0, D), 1.0)[0] == []
