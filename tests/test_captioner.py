"""Caption decoder: teacher-forcing loss, greedy and beam search."""

import pytest
import torch

from regioncap.data.vocab import END, PAD, START, UNK
from regioncap.models.captioner import CaptionDecoder
from regioncap.models.config import CaptionerConfig

V, D = 12, 8


def make(rnn="gru", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = CaptionerConfig(rnn=rnn, embed_dim=8, hidden_dim=16, dropout=0.0, max_len=6, **kw)
    return CaptionDecoder(V, cfg, D).eval()


def seq_logprob(dec, v, words, ended):
    """Log-probability of ``words`` (+ <end> if ended) for one region by stepping the decoder by hand."""
    state = dec._initial_state(v[None])
    prev, total = torch.tensor([START]), 0.0
    for step, w in enumerate(words + ([END] if ended else [])):
        logp, state = dec._step(v[None], prev, state)
        total += float(dec._mask(logp, step)[0, w])
        prev = torch.tensor([w])
    return total


def test_loss_matches_hand_stepped_cross_entropy():
    dec = make()
    v = torch.randn(2, D)
    tokens = torch.tensor([[4, 5, 6], [7, PAD, PAD]])
    lengths = torch.tensor([3, 1])
    loss = dec.loss(v, tokens, lengths)
    terms = []
    for r, words in enumerate([[4, 5, 6], [7]]):
        state, prev = dec._initial_state(v[r : r + 1]), torch.tensor([START])
        for w in words + [END]:  # unmasked log-softmax: the loss sees the raw distribution
            with torch.no_grad():
                logp, state = dec._step(v[r : r + 1], prev, state)
            terms.append(-logp[0, w].item())
            prev = torch.tensor([w])
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_loss_ignores_padding_and_values_past_length():
    dec = make()
    v = torch.randn(3, D)
    tokens = torch.tensor([[4, 5, PAD], [6, PAD, PAD], [7, 8, 9]])
    lengths = torch.tensor([2, 1, 3])
    base = dec.loss(v, tokens, lengths)
    wider = torch.cat([tokens, torch.full((3, 4), PAD)], dim=1)
    garbage = tokens.clone()
    garbage[0, 2], garbage[1, 1:] = 11, 10  # values past each row's length
    assert torch.allclose(dec.loss(v, wider, lengths), base)
    assert torch.allclose(dec.loss(v, garbage, lengths), base)


def test_loss_empty_batch_and_zero_length_rows():
    dec = make()
    empty = dec.loss(torch.zeros(0, D), torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad
    only_end = dec.loss(torch.randn(2, D), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    assert torch.isfinite(only_end)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_greedy_scores_are_sequence_log_probabilities(rnn):
    dec = make(rnn)
    v = torch.randn(5, D)
    with torch.no_grad():
        ids, scores = dec.greedy(v)
        for r in range(5):
            ended = len(ids[r]) < dec.cfg.max_len
            assert scores[r].item() == pytest.approx(seq_logprob(dec, v[r], ids[r], ended), abs=1e-4)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_beam_one_is_greedy(rnn):
    dec = make(rnn, seed=3)
    v = torch.randn(6, D)
    with torch.no_grad():
        g_ids, g_scores = dec.greedy(v)
        (b_ids, b_scores), = dec._beams(v, (1,))  # the plain beam, not the greedy fallback
        p_ids, p_scores = dec.beam_search(v, beam_size=1)
    assert b_ids == g_ids == p_ids
    assert torch.allclose(b_scores, g_scores, atol=1e-5) and torch.allclose(p_scores, g_scores)


def test_beam_never_scores_below_greedy_and_scores_are_exact():
    for seed in range(4):
        dec = make(seed=seed)
        v = torch.randn(16, D) * 3
        with torch.no_grad():
            _, g_scores = dec.greedy(v)
            ids, scores = dec.beam_search(v, beam_size=3)
            assert (scores >= g_scores - 1e-5).all()
            for r in range(16):
                ended = len(ids[r]) < dec.cfg.max_len
                assert scores[r].item() == pytest.approx(seq_logprob(dec, v[r], ids[r], ended), abs=1e-4)


def test_batched_beam_equals_each_region_alone():
    dec = make(seed=1)
    v = torch.randn(5, D)
    with torch.no_grad():
        ids, scores = dec.beam_search(v, beam_size=3)
        for r in range(5):
            one_ids, one_score = dec.beam_search(v[r : r + 1], beam_size=3)
            assert one_ids[0] == ids[r]
            assert one_score[0].item() == pytest.approx(scores[r].item(), abs=1e-5)


def test_decoding_never_emits_specials_and_has_a_word():
    dec = make(seed=2)
    with torch.no_grad():
        dec.out.bias.data[[PAD, START, UNK, END]] += 50.0  # make the specials the likeliest tokens
        for ids in (dec.greedy(torch.randn(4, D))[0], dec.beam_search(torch.randn(4, D), 4)[0]):
            for row in ids:
                assert len(row) >= 1
                assert not {PAD, START, UNK, END} & set(row)


def test_no_regions():
    dec = make()
    ids, scores = dec.beam_search(torch.zeros(0, D), beam_size=3)
    assert ids == [] and scores.shape == (0,)
    ids, scores = dec.greedy(torch.zeros(0, D))
    assert ids == [] and scores.shape == (0,)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_candidates_are_exact_distinct_and_hold_the_beam_search_caption(rnn):
    dec = make(rnn, seed=4)
    v = torch.randn(8, D) * 2
    with torch.no_grad():
        cands = dec.candidates(v, beam_size=4)
        ids, scores = dec.beam_search(v, beam_size=4)
        for r in range(8):
            seqs = [tuple(c[0]) for c in cands[r]]
            assert len(seqs) == len(set(seqs)) >= 1
            assert [c[1] for c in cands[r]] == sorted((c[1] for c in cands[r]), reverse=True)
            assert (ids[r], pytest.approx(scores[r].item(), abs=1e-5)) in [(c[0], c[1]) for c in cands[r]]
            for words, logp in cands[r]:
                ended = len(words) < dec.cfg.max_len
                assert logp == pytest.approx(seq_logprob(dec, v[r], words, ended), abs=1e-4)
                assert len(words) >= 1 and not {PAD, START, UNK, END} & set(words)


def test_candidates_batched_equal_each_region_alone_and_are_deterministic():
    dec = make(seed=5)
    v = torch.randn(6, D)
    with torch.no_grad():
        batched = dec.candidates(v, beam_size=3)
        assert dec.candidates(v, beam_size=3) == batched
        for r in range(6):
            alone = dec.candidates(v[r : r + 1], beam_size=3)[0]
            assert [c[0] for c in alone] == [c[0] for c in batched[r]]
            assert [c[1] for c in alone] == pytest.approx([c[1] for c in batched[r]], abs=1e-5)
        assert dec.candidates(torch.zeros(0, D), beam_size=3) == []
        assert all(len(c) == 1 for c in dec.candidates(v, beam_size=1))  # width 1: greedy's caption only


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_beam_search_and_candidates_in_one_loop_equal_the_two_calls(rnn):
    dec = make(rnn, seed=6)
    v, cand_v = torch.randn(5, D) * 2, torch.randn(3, D) * 2
    steps = []
    real = dec._step
    dec._step = lambda *a: steps.append(1) or real(*a)
    with torch.no_grad():
        (ids, scores), cands = dec.beam_search_and_candidates(v, 3, cand_v, 4)
        together = len(steps)
        alone_ids, alone_scores = dec.beam_search(v, 3)
        alone_cands = dec.candidates(cand_v, 4)
        assert together < len(steps) - together  # fewer RNN calls than the two calls made
        assert ids == alone_ids and scores.tolist() == pytest.approx(alone_scores.tolist(), abs=1e-5)
        assert [[c[0] for c in per] for per in cands] == [[c[0] for c in per] for per in alone_cands]
        for per, alone in zip(cands, alone_cands):
            assert [c[1] for c in per] == pytest.approx([c[1] for c in alone], abs=1e-5)
        # nothing to beam-search (every box a group), and greedy for both
        (none, none_scores), only = dec.beam_search_and_candidates(v[:0], 3, cand_v, 4)
        assert none == [] and none_scores.shape == (0,) and [[c[0] for c in p] for p in only] == [
            [c[0] for c in p] for p in alone_cands]
        (g_ids, _), g_cands = dec.beam_search_and_candidates(v, 1, cand_v, 1)
        assert g_ids == dec.greedy(v)[0]
        assert [[(c[0], pytest.approx(c[1], abs=1e-5)) for c in p] for p in g_cands] == dec.candidates(cand_v, 1)
