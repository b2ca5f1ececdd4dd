"""Phrase encoder: shapes, unit norm, padding and batch-order invariance, empty rows."""

import torch

from regioncap.models.config import TextEncoderConfig
from regioncap.models.text_encoder import TextEncoder


def make(**kw):
    torch.manual_seed(0)
    return TextEncoder(20, TextEncoderConfig(embed_dim=8, hidden_dim=16, max_len=5, **kw), 12).eval()


def test_shape_and_unit_norm():
    enc = make()
    out = enc(torch.tensor([[4, 5, 6], [7, 0, 0]]), torch.tensor([3, 1]))
    assert out.shape == (2, 12)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_padding_and_batch_order_do_not_change_a_row():
    enc = make(bidirectional=True)
    a = enc(torch.tensor([[4, 5, 6]]), torch.tensor([3]))
    batch = enc(torch.tensor([[7, 0, 0, 0, 0], [4, 5, 6, 9, 9]]), torch.tensor([1, 3]))  # 9s lie past the length
    assert torch.allclose(batch[1], a[0], atol=1e-6)


def test_zero_length_rows_and_empty_batch():
    enc = make()
    out = enc(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 12) and torch.isfinite(out).all()
    assert enc(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long)).shape == (0, 12)


def test_tokens_past_max_len_are_ignored():
    enc = make()
    long = enc(torch.tensor([[4, 5, 6, 7, 8, 9, 10, 11]]), torch.tensor([8]))
    cut = enc(torch.tensor([[4, 5, 6, 7, 8]]), torch.tensor([5]))
    assert torch.allclose(long, cut)


def test_gradients_reach_every_parameter():
    enc = make(num_layers=2)
    enc.train()
    enc(torch.tensor([[4, 5, 6], [7, 8, 0]]), torch.tensor([3, 2])).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())


def test_concept_targets_and_loss_hand_computed():
    from regioncap.models.text_encoder import concept_loss, concept_targets

    tokens = torch.tensor([[4, 5, 0], [6, 0, 0], [4, 7, 8]])  # PAD = 0
    lengths = torch.tensor([2, 1, 3])
    region = torch.tensor([1, 1, 2])  # region 0 has no phrase
    t = concept_targets(tokens, lengths, region, num_regions=3, vocab_size=9)
    expected = torch.zeros(3, 9)
    expected[1, [4, 5, 6]] = 1.0
    expected[2, [4, 7, 8]] = 1.0
    assert torch.equal(t, expected)
    logits = torch.zeros(3, 9)
    logits[1, 4] = 2.0
    # softmax cross-entropy against the even distribution over each region's words, regions 1 and 2
    log_p1 = torch.log_softmax(logits[1], 0)
    region_1 = -(log_p1[4] + log_p1[5] + log_p1[6]) / 3
    region_2 = torch.log(torch.tensor(9.0))  # uniform logits: -log(1/9) for each word
    torch.testing.assert_close(concept_loss(logits, t), (region_1 + region_2) / 2)
    assert concept_loss(logits, torch.zeros(3, 9)) == 0.0
    logits[1, 5] = logits[1, 6] = 2.0  # all three of region 1's words up: lower loss
    assert concept_loss(logits, t) < (region_1 + region_2) / 2


def test_concept_targets_also_mark_the_mapped_word():
    from regioncap.models.text_encoder import concept_targets

    tokens = torch.tensor([[4, 5, 0], [6, 0, 0]])
    also = torch.arange(9)
    also[5] = 7  # word 5 ("stars") also marks word 7 ("star")
    t = concept_targets(tokens, torch.tensor([2, 1]), torch.tensor([0, 1]), num_regions=2, vocab_size=9, also=also)
    expected = torch.zeros(2, 9)
    expected[0, [4, 5, 7]] = 1.0
    expected[1, 6] = 1.0
    assert torch.equal(t, expected)
    plain = concept_targets(tokens, torch.tensor([2, 1]), torch.tensor([0, 1]), num_regions=2, vocab_size=9)
    assert plain[0, 7] == 0.0
