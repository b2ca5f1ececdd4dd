"""Alignment functions against values worked out by hand."""

import pytest
import torch

from regioncap.models.alignment import (image_sentence_scores, phrase_region_loss, region_phrase_similarity,
                                        sentence_ranking_loss)


def test_similarity_is_phrase_by_region_dot_product():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # R=3
    s = torch.tensor([[1.0, 0.0], [0.0, -1.0]])  # P=2
    sim = region_phrase_similarity(v, s)
    assert torch.allclose(sim, torch.tensor([[1.0, 0.0, 0.6], [0.0, -1.0, -0.8]]))


def test_image_sentence_scores_sum_of_best_region_per_phrase():
    # regions 0,1 in image 0; region 2 in image 1. Phrases 0,1 form sentence 0; phrase 2 sentence 1.
    sim = torch.tensor([[0.1, 0.7, 0.3],
                        [0.5, -0.2, 0.9],
                        [-0.4, -0.6, 0.2]])
    scores = image_sentence_scores(sim, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), 2, 2)
    # S_00 = max(.1,.7) + max(.5,-.2) = 1.2 ; S_10 = .3 + .9 = 1.2
    # S_01 = max(-.4,-.6) = -.4           ; S_11 = .2
    assert torch.allclose(scores, torch.tensor([[1.2, -0.4], [1.2, 0.2]]))


def test_image_sentence_scores_empty_cases():
    sim = torch.tensor([[0.5, 0.2]])
    # image 1 has no regions -> contributes 0; sentence 1 has no phrases -> 0
    scores = image_sentence_scores(sim, torch.tensor([0, 0]), torch.tensor([0]), 2, 2)
    assert torch.allclose(scores, torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
    none = image_sentence_scores(torch.zeros(0, 3), torch.tensor([0, 1, 1]), torch.zeros(0, dtype=torch.long), 2, 1)
    assert torch.equal(none, torch.zeros(2, 1))


def test_sentence_ranking_loss_hand_computed():
    scores = torch.tensor([[1.0, 0.8], [0.5, 1.2]])
    # images for sentence 0: .5-1+1=.5 ; for sentence 1: .8-1.2+1=.6
    # sentences for image 0: .8-1+1=.8 ; for image 1: .5-1.2+1=.3          -> 2.2
    loss = sentence_ranking_loss(scores, torch.tensor([0, 1]), margin=1.0)
    assert loss.item() == pytest.approx(2.2)
    assert sentence_ranking_loss(scores, torch.tensor([0, 1]), 1.0, "mean").item() == pytest.approx(1.1)
    assert sentence_ranking_loss(scores, torch.tensor([0, 1]), margin=0.0).item() == pytest.approx(0.0)


def test_sentence_ranking_loss_sentences_of_the_same_image_are_not_negatives():
    # sentences 0 and 1 both describe image 0
    scores = torch.tensor([[1.0, 0.9, 0.2], [0.0, 0.3, 1.0]])
    # column terms: s0: 0-1+1=0 ; s1: .3-.9+1=.4 ; s2: .2-1+1=.2
    # row terms: (0,s0) vs s2: .2-1+1=.2 ; (0,s1) vs s2: .2-.9+1=.3 ; (1,s2) vs s0,s1: 0-1+1=0, .3-1+1=.3
    loss = sentence_ranking_loss(scores, torch.tensor([0, 0, 1]), margin=1.0)
    assert loss.item() == pytest.approx(0.4 + 0.2 + 0.2 + 0.3 + 0.3)


def test_sentence_ranking_loss_gradients_and_empty():
    scores = torch.tensor([[1.0, 0.8], [0.5, 1.2]], requires_grad=True)
    sentence_ranking_loss(scores, torch.tensor([0, 1])).backward()
    # d/dS00 = -1 (col) -1 (row) ; d/dS01 = +1 (col of s1) +1 (row of pair 0)
    assert torch.allclose(scores.grad, torch.tensor([[-2.0, 2.0], [2.0, -2.0]]))
    empty = sentence_ranking_loss(torch.zeros(2, 0, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad


def test_phrase_region_loss_hand_computed():
    sim = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, 0.6]])
    gt = torch.tensor([0, 2])
    # regions for t0: (.2-.9+.5)<0, .5-.9+.5=.1 ; for t1: .1-.6+.5=0, .3-.6+.5=.2
    # phrases for region 0: t1 .1-.9+.5<0 ; for region 2: t0 .5-.6+.5=.4      -> .7
    assert phrase_region_loss(sim, gt, margin=0.5).item() == pytest.approx(0.7)
    assert phrase_region_loss(sim, gt, 0.5, reduction="mean").item() == pytest.approx(0.35)
    same_image = phrase_region_loss(sim, gt, 0.5, region_image=torch.tensor([0, 0, 0]))
    assert same_image.item() == pytest.approx(0.7)
    # region 2 in another image: only region 1 is a negative for t0 (0), none for t1, no phrase negatives
    assert phrase_region_loss(sim, gt, 0.5, region_image=torch.tensor([0, 0, 1])).item() == pytest.approx(0.0)


def test_phrase_region_loss_phrases_of_the_same_region_are_not_negatives():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.4]])
    gt = torch.tensor([0, 1, 0])
    # t0: region1 .1-.9+.5=0 (clamped -0.3) ; phrases for r0 other region: t1 .2-.9+.5<0
    # t1: region0 .2-.8+.5<0 ; phrases for r1: t0 .1-.8+.5<0, t2 .4-.8+.5=.1
    # t2: region1 .4-.5+.5=.4 ; phrases for r0: t1 .2-.5+.5=.2
    assert phrase_region_loss(sim, gt, 0.5).item() == pytest.approx(0.1 + 0.4 + 0.2)


def test_phrase_region_loss_empty_keeps_graph():
    sim = torch.zeros(0, 4, requires_grad=True)
    loss = phrase_region_loss(sim, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()



def _scores_dense(sim, region_image, phrase_sentence, num_images, num_sentences):
    """The earlier [P, K, R] formula, kept here as the reference."""
    images = torch.arange(num_images)
    member = region_image[None, :] == images[:, None]  # [K, R]
    masked = sim[:, None, :].masked_fill(~member[None], float("-inf"))  # [P, K, R]
    best = masked.amax(dim=-1) if sim.shape[1] else sim.new_zeros((sim.shape[0], num_images))
    best = torch.where(member.any(dim=1)[None, :], best, torch.zeros_like(best))
    return sim.new_zeros((num_images, num_sentences)).index_add(1, phrase_sentence, best.T)


def test_image_sentence_scores_equal_the_dense_formula_values_and_gradients():
    torch.manual_seed(0)
    for num_images, regions in ((5, [3, 0, 4, 1, 2]), (1, [6]), (3, [0, 0, 0])):
        region_image = torch.arange(num_images).repeat_interleave(torch.tensor(regions))
        phrase_sentence = torch.randint(0, 7, (20,))
        base = torch.randn(20, len(region_image)).round(decimals=1)  # rounding makes ties
        grads = []
        for f in (image_sentence_scores, _scores_dense):
            sim = base.clone().requires_grad_(True)
            out = f(sim, region_image, phrase_sentence, num_images, 7)
            if len(region_image):
                (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
            grads.append((out.detach(), sim.grad))
        assert torch.equal(grads[0][0], grads[1][0])
        if len(region_image):
            torch.testing.assert_close(grads[0][1], grads[1][1])


def test_image_sentence_scores_memory_is_phrases_times_regions():
    P, K, per = 200, 64, 37  # one evaluation block of 64 images x 37 regions
    sim = torch.randn(P, K * per)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        image_sentence_scores(sim, torch.arange(K).repeat_interleave(per), torch.randint(0, 50, (P,)), K, 50)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest <= 2 * P * K * per * 8  # [P, R] (an int64 index at most), not [P, K, R] (~121 MB)


def test_model_align_loss_phrase_negatives_and_concept_term(make_model, tiny_batch):
    """``phrase_negatives='batch'`` ranks phrases against other images' regions too (more hinge terms),
    and ``concept_loss_weight`` adds exactly weight x concept_loss of the region vectors."""
    from regioncap.models.text_encoder import concept_loss, concept_targets

    images, targets, text = tiny_batch

    def align(**top):
        model = make_model(seed=3, **top).train()
        torch.manual_seed(0)
        return model, model(images, targets, text, losses=("align",))["loss_align"]

    _, image = align()
    _, batch = align(phrase_negatives="batch")
    assert batch > image  # image 1's region is a negative for image 0's phrases only with 'batch'
    model, with_concepts = align(concept_loss_weight=0.5)
    assert model.text_encoder.concepts is not None
    with torch.no_grad():
        v = model._encode_regions(images, *model.detector.features(images)[:2],
                                  [t["region_boxes"] for t in targets])
        boxed = text["boxed"]
        t = concept_targets(text["tokens"][boxed], text["lengths"][boxed], text["region"][boxed], len(v),
                            model.config.vocab_size)
        expected = image + 0.5 * concept_loss(model.text_encoder.concepts(v), t)
    torch.testing.assert_close(with_concepts.detach(), expected, rtol=1e-5, atol=1e-5)
    # concept_singulars: a plural also marks its singular (the model's vocabulary's map): region 2's "circles"
    from regioncap.data.dataset import pad_sequences
    phrases = ["a large red circle", "two blue circles", "a red circle", "a grey background",
               "a grey background"]
    text = dict(text, **dict(zip(("tokens", "lengths"),
                                  pad_sequences([torch.tensor(model.vocab.encode(p)) for p in phrases]))))
    _, image = align()
    model, with_singulars = align(concept_loss_weight=0.5, concept_singulars=True)
    assert torch.equal(model.concept_also, torch.tensor(model.vocab.singular_ids()))
    with torch.no_grad():
        args = text["tokens"][boxed], text["lengths"][boxed], text["region"][boxed], len(v), model.config.vocab_size
        t, plain = concept_targets(*args, model.concept_also), concept_targets(*args)
        assert (t - plain).sum() == 1.0 and t[2, model.vocab.token_to_id["circle"]] == 1.0
        expected = image + 0.5 * concept_loss(model.text_encoder.concepts(v), t)
    torch.testing.assert_close(with_singulars.detach(), expected, rtol=1e-5, atol=1e-5)
