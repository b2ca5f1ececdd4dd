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


# -- boxes made up of several objects ("two stars") ------------------------------------------------------


def test_find_groups_hand_built_cases():
    from regioncap.models.rerank import find_groups

    boxes = torch.tensor([[0.0, 0, 100, 50],     # two objects side by side fill it: a group
                          [0.0, 0, 100, 100],    # a large square with the two in its top half: IoU 0.5, not
                          [0.0, 0, 150, 50]])    # three in a row: the outer two make it up
    det = torch.tensor([[0.0, 0, 40, 50], [60, 0, 100, 50],  # 0, 1: the two objects
                        [45, 20, 55, 30],                    # 2: a small one between them
                        [0, 0, 100, 100],                    # 3: box 1's own detection (not smaller)
                        [110, 0, 150, 50]])                  # 4: the third in the row
    scores = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.9])
    member = find_groups(boxes, det, scores)
    assert member.tolist() == [[True, True, False, False, False],   # not the small one between
                               [False, False, False, False, False],
                               [True, False, False, False, True]]   # 0 and 4 span it; 1 and 2 add nothing
    # an object the detector is not sure of is not one
    assert not find_groups(boxes[:1], det, torch.tensor([0.9, 0.3, 0.9, 0.9, 0.9])).any()
    # a third object that widens the fit is added: box [0, 0, 100, 70] and one at the bottom
    grown = find_groups(torch.tensor([[0.0, 0, 100, 70]]), torch.cat([det[:2], torch.tensor([[10.0, 55, 30, 70]])]),
                        torch.ones(3))
    assert grown.tolist() == [[True, True, True]]
    assert find_groups(boxes, det[:0], scores[:0]).shape == (3, 0)
    assert find_groups(boxes[:0], det, scores).shape == (0, 5)


def test_member_similarities_are_the_mean_over_each_regions_objects():
    from regioncap.models.rerank import member_similarities

    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # candidates 0, 1 of region 0; 2 of region 1
    region = torch.tensor([0, 0, 1])
    members = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    owner = torch.tensor([0, 0, 1])
    # candidate 0: (1 + 0.8) / 2; candidate 1: (0 + 0.6) / 2; candidate 2: 0.8
    assert member_similarities(s, region, members, owner).tolist() == pytest.approx([0.9, 0.3, 0.8])


def test_rerank_with_members_reads_candidates_in_the_singular_and_weighs_the_objects():
    # words: 4 "two", 5 "circles", 6 "stars", 8 "circle", 9 "star"; the table encoder looks at the 2nd word
    table = torch.zeros(V, 2)
    table[5] = table[6] = torch.tensor([0.0, 1.0])  # plurals: both far from either object
    table[8], table[9] = torch.tensor([1.0, 0.0]), torch.tensor([0.6, 0.8])

    class SecondWord(TableEncoder):
        def forward(self, tokens, lengths):
            self.calls.append(tokens.shape[0])
            return self.table[tokens[:, 1]]

    singular = torch.arange(V)
    singular[5], singular[6] = 8, 9
    v = torch.tensor([[0.0, 1.0]])
    cands = [[([4, 6], -1.0), ([4, 5], -1.5)]]  # the decoder prefers "two stars"
    stars = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    circles = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    enc = SecondWord(table)

    class Decoder(FixedDecoder):  # group_candidates asks for candidates of [v; v + objects]
        def candidates(self, v, beam_size=None):
            return self.cands * v.shape[0]

        def sequence_log_probs(self, v, tokens, lengths):
            return torch.tensor([dict((tuple(c), lp) for c, lp in self.cands[0])[tuple(t.tolist())] for t in tokens])

    owner = torch.tensor([0, 0])
    ids, scores, per = rerank(Decoder(cands), enc, v, 0.0, members=(circles, owner, singular), member_weight=2.0)
    # "two stars": -1 + 2 * 0.6 = 0.2; "two circles": -1.5 + 2 * 1.0 = 0.5
    assert ids == [[4, 5]] and scores.tolist() == pytest.approx([0.5])
    assert per[0][0][1:] == pytest.approx((-1.5, 1.0, 0.5, 1.0))  # (log_prob, similarity, score, members)
    assert enc.calls == [4]  # the candidates as they are and in the singular, in one call
    ids, _, _ = rerank(Decoder(cands), enc, v, 0.0, members=(stars, owner, singular), member_weight=2.0)
    assert ids == [[4, 6]]  # stars: 0.2 + 2 * 1.0 vs -1.5 + 2 * 0.6
    # weight 0: the decoder's choice
    assert rerank(Decoder(cands), enc, v, 0.0, members=(circles, owner, singular))[0] == [[4, 6]]


def test_sequence_log_probs_match_the_decoders_own_scores():
    dec, _ = make_parts()
    v = nn.functional.normalize(torch.randn(4, D), dim=-1)
    with torch.inference_mode():
        for r, per in enumerate(dec.candidates(v, 3)):
            tokens = torch.zeros(len(per), max(len(c[0]) for c in per), dtype=torch.long)
            for i, (seq, _) in enumerate(per):
                tokens[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            lengths = torch.tensor([len(c[0]) for c in per])
            got = dec.sequence_log_probs(v[r:r + 1].expand(len(per), -1), tokens, lengths)
            assert got.tolist() == pytest.approx([c[1] for c in per], abs=1e-5)


def test_group_candidates_pool_both_proposals_scored_given_the_box():
    from regioncap.models.rerank import group_candidates

    dec, _ = make_parts(1)
    v = nn.functional.normalize(torch.randn(2, D), dim=-1)
    members = nn.functional.normalize(torch.randn(3, D), dim=-1)
    owner = torch.tensor([0, 0, 1])
    with torch.inference_mode():
        pooled = group_candidates(dec, v, members, owner, 3)
        own = dec.candidates(v, 3)
        seen = torch.stack([v[0] + members[:2].mean(0), v[1] + members[2]])
        helped = dec.candidates(nn.functional.normalize(seen, dim=-1), 3)
        for r in range(2):
            got = {tuple(c[0]): c[1] for c in pooled[r]}
            assert set(got) == {tuple(c[0]) for c in own[r] + helped[r]} and len(got) == len(pooled[r])
            for seq, logp in own[r]:  # the box's own candidates keep their beam log-probabilities
                assert got[tuple(seq)] == pytest.approx(logp, abs=1e-5)
            assert [c[1] for c in pooled[r]] == sorted((c[1] for c in pooled[r]), reverse=True)
