"""RegionCaptioner: training losses, gradients, analyze, query/align reuse, text checks."""

import json

import pytest
import torch
from PIL import Image

from regioncap.errors import ImageError, RegionCapError, TextError
from regioncap.models.alignment import region_phrase_similarity


def test_training_returns_the_three_losses_and_grads_reach_every_part(tiny_model, tiny_batch):
    model = tiny_model.train()
    losses = model(*tiny_batch)
    assert set(losses) == {"loss_detector", "loss_align", "loss_caption"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    for part in ("detector", "region_encoder", "text_encoder", "captioner"):
        grads = [p.grad.abs().sum() for p in getattr(model, part).parameters()]
        assert sum(grads) > 0, part


def test_only_the_asked_losses_run(tiny_model, tiny_batch, monkeypatch):
    model = tiny_model.train()
    calls = []
    monkeypatch.setattr(model.detector.rpn, "forward", lambda *a, **k: calls.append("rpn"))
    out = model(*tiny_batch, losses=("align",))
    assert set(out) == {"loss_align"} and calls == []


def test_caption_loss_does_not_reach_the_joint_space(tiny_model, tiny_batch):
    model = tiny_model.train()
    model(*tiny_batch, losses=("caption",))["loss_caption"].backward()
    assert all(p.grad is None for p in model.region_encoder.parameters())
    assert all(p.grad is None for p in model.detector.parameters())
    assert any(p.grad is not None for p in model.captioner.parameters())


def test_caption_loss_can_train_the_encoder_when_not_detached(make_model, tiny_batch):
    model = make_model(captioner={"detach_regions": False}).train()
    model(*tiny_batch, losses=("caption",))["loss_caption"].backward()
    assert any(p.grad is not None for p in model.region_encoder.parameters())


def test_batch_without_phrases_and_image_without_boxes(tiny_model, tiny_batch):
    images, targets, text = tiny_batch
    empty = {"tokens": torch.zeros(0, 1, dtype=torch.long), "lengths": torch.zeros(0, dtype=torch.long),
             "region": torch.zeros(0, dtype=torch.long), "sentence": torch.zeros(0, dtype=torch.long),
             "sentence_image": torch.zeros(0, dtype=torch.long), "boxed": torch.zeros(0, dtype=torch.bool)}
    model = tiny_model.train()
    losses = model(images[1:], targets[1:], empty)  # one image, no boxes, no phrases
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_align"].item() == 0.0 and losses["loss_caption"].item() == 0.0
    sum(losses.values()).backward()


def test_training_without_targets_and_bad_loss_names_are_errors(tiny_model, tiny_batch):
    images, targets, text = tiny_batch
    model = tiny_model.train()
    with pytest.raises(ValueError, match="targets"):
        model(images)
    with pytest.raises(ValueError, match="losses"):
        model(images, targets, text, losses=("detector", "decoder"))
    model.eval()
    with pytest.raises(ValueError, match="training mode"):
        model(images, targets, text, losses=("detector",))
    assert set(model(images, targets, text, losses=("align", "caption"))) == {"loss_align", "loss_caption"}


def test_analyze_no_detections(tiny_model):
    image = torch.rand(3, 60, 80)
    assert tiny_model.analyze(image, score_threshold=1.0).regions == []
    result = tiny_model.analyze(image, max_regions=0, score_threshold=0.0)
    assert result.regions == [] and result.vectors.shape == (0, 16)
    assert result.query("a red circle") == []
    assert result.image_vector.shape == (16,)


def test_analyze_detections(tiny_model):
    result = tiny_model.analyze(torch.rand(3, 60, 80), max_regions=4, score_threshold=0.0)
    assert 1 <= len(result.regions) <= 4
    scores = [r.score for r in result.regions]
    assert scores == sorted(scores, reverse=True)
    for r in result.regions:
        x1, y1, x2, y2 = r.box
        assert 0 <= x1 < x2 <= 80 and 0 <= y1 < y2 <= 60
        assert r.caption and r.caption_score <= 0 and r.label in tiny_model.config.entity_types
    assert result.vectors.shape == (len(result.regions), 16)
    assert torch.allclose(result.vectors.norm(dim=1), torch.ones(len(result.regions)), atol=1e-5)
    d = json.loads(json.dumps(result.to_dict()))
    assert set(d) == {"width", "height", "regions", "timings_ms"} and (d["width"], d["height"]) == (80, 60)
    assert set(d["regions"][0]) == {"box", "caption", "score", "caption_score", "label"}
    assert tiny_model.training is False


def test_analyze_keeps_the_training_mode(tiny_model):
    tiny_model.train()
    tiny_model.detector.eval()  # e.g. a trainer that keeps the detector frozen
    tiny_model.analyze(torch.rand(3, 40, 40), score_threshold=0.0)
    assert tiny_model.training and tiny_model.captioner.training and not tiny_model.detector.training


def test_analyze_user_boxes(tiny_model, image_file):
    result = tiny_model.analyze(image_file, boxes=[[10, 10, 40, 40], [-5, 50, 500, 90]])
    assert [r.label for r in result.regions] == ["user", "user"]
    assert [r.score for r in result.regions] == [1.0, 1.0]
    assert result.regions[1].box == [0.0, 50.0, 96.0, 72.0]  # clamped into the 96x72 image
    again = tiny_model.analyze(Image.open(image_file), boxes=[[10, 10, 40, 40]])
    assert torch.allclose(again.vectors[0], result.vectors[0], atol=1e-5)
    assert again.regions[0].caption == result.regions[0].caption
    assert tiny_model.analyze(image_file, boxes=[]).regions == []
    for bad in ([[10, 10, 5, 40]], [[1, 2, 3]], [["a", 1, 2, 3]], [[0, 0, float("nan"), 4]], [[200, 0, 300, 10]]):
        with pytest.raises(RegionCapError):
            tiny_model.analyze(image_file, boxes=bad)


def test_analyze_bad_arguments(tiny_model, tmp_path):
    with pytest.raises(RegionCapError):
        tiny_model.analyze(torch.rand(3, 20, 20), max_regions=-1)
    with pytest.raises(RegionCapError):
        tiny_model.analyze(torch.rand(3, 20, 20), score_threshold=1.5)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError):
        tiny_model.analyze(bad)


def test_query_and_align_reuse_the_cached_vectors(tiny_model, monkeypatch):
    calls = []
    real = tiny_model.detector.backbone.forward
    monkeypatch.setattr(tiny_model.detector.backbone, "forward", lambda x: calls.append(1) or real(x))
    result = tiny_model.analyze(torch.rand(3, 60, 80), max_regions=5, score_threshold=0.0)
    assert len(calls) == 1  # one backbone pass for detection and region vectors
    matches = result.query("the red circle", top_k=3)
    alignment = result.align("a large red circle next to the small blue square")
    assert len(calls) == 1  # no image work
    assert len(matches) == 3 and [m[1] for m in matches] == sorted((m[1] for m in matches), reverse=True)
    s = tiny_model.encode_text(["the red circle"])[0]
    assert matches[0][1] == pytest.approx(float((result.vectors @ s).max()), abs=1e-5)
    assert [a.phrase for a in alignment] == ["a large red circle", "the small blue square"]
    assert alignment.score == pytest.approx(sum(a.similarity for a in alignment), abs=1e-5)
    for a in alignment:
        assert (a.region is None) == (a.region_index is None)
        if a.region is not None:
            assert a.region is result.regions[a.region_index]


def test_align_picks_the_best_of_regions_and_whole_image(tiny_model):
    result = tiny_model.analyze(torch.rand(3, 60, 80), max_regions=5, score_threshold=0.0)
    alignment = result.align("a red circle")
    s = tiny_model.encode_text(["a red circle"])
    sims = region_phrase_similarity(torch.cat([result.image_vector[None], result.vectors]), s)[0]
    assert alignment[0].similarity == pytest.approx(float(sims.max()), abs=1e-5)
    assert (alignment[0].region_index is None) == (int(sims.argmax()) == 0)


def test_text_errors(tiny_model):
    result = tiny_model.analyze(torch.rand(3, 40, 40), max_regions=2, score_threshold=0.0)
    for phrase in ("", "   "):
        with pytest.raises(TextError, match="empty"):
            result.query(phrase)
    with pytest.raises(TextError, match="vocabulary"):
        result.query("zebra quokka")
    with pytest.raises(TextError, match="no phrase"):
        result.align("with and of the")
    with pytest.raises(TextError, match="empty"):
        result.align(" ")
    with pytest.raises(RegionCapError):
        result.query("red", top_k=0)
    long = tiny_model.encode_text(["red " * 500])  # capped to text_encoder.max_len tokens
    assert torch.allclose(long, tiny_model.encode_text(["red " * 8]))


def test_eval_forward_returns_one_result_per_image(tiny_model):
    results = tiny_model([torch.rand(3, 60, 80), torch.rand(3, 40, 50)])
    assert [(r.width, r.height) for r in results] == [(80, 60), (50, 40)]


@pytest.mark.parametrize("kind, encoder", [("vgg19", "VGG19RegionEncoder"), ("vgg19-crops", "VGG19CropEncoder")])
def test_vgg19_encoder_model(make_model, tiny_batch, image_file, kind, encoder):
    model = make_model(region_encoder={"kind": kind}).train()
    assert type(model.region_encoder).__name__ == encoder
    losses = model(*tiny_batch, losses=("align", "caption"))
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.region_encoder.project.parameters())
    result = model.eval().analyze(image_file, boxes=[[10, 10, 40, 40]])
    assert len(result.regions) == 1 and result.regions[0].caption


def test_analyze_returns_up_to_max_regions_beyond_the_detectors_default(make_model):
    # evaluate's det_ap50 asks for 100 detections; a detector configured for fewer must still give them
    model = make_model(detector={"box_detections_per_img": 3, "box_score_thresh": 0.0})
    image = torch.rand(3, 60, 80)
    few = model.analyze(image, max_regions=2, score_threshold=0.0, captions=False)
    many = model.analyze(image, max_regions=100, score_threshold=0.0, captions=False)
    assert len(few.regions) == 2 and len(many.regions) > 3
    assert model.detector.roi_heads.detections_per_img == 3  # the module itself is unchanged


def test_analyze_with_reranking_returns_the_chosen_caption_and_its_candidates(make_model, image_file):
    plain = make_model(seed=3)
    reranked = make_model(seed=3, captioner={"rerank_weight": 5.0, "rerank_length_alpha": 1.0})
    boxes = [[10, 10, 40, 40], [0, 30, 90, 70], [50, 5, 95, 35]]
    a, b = plain.analyze(image_file, boxes=boxes), reranked.analyze(image_file, boxes=boxes)
    assert a.candidates == [[], [], []]  # plain beam search: no candidates
    assert torch.equal(a.vectors, b.vectors)
    calls = []
    reranked.text_encoder.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    b = reranked.analyze(image_file, boxes=boxes)
    assert calls == [sum(len(c) for c in b.candidates)]  # every region's candidates in one call
    for i, (region, cands) in enumerate(zip(b.regions, b.candidates)):
        assert cands and region.caption == cands[0].caption and region.caption_score == cands[0].score
        assert all(c.score <= cands[0].score for c in cands)
        for c in cands:
            assert c.score == pytest.approx(c.log_prob / (len(c.caption.split()) + 1) + 5.0 * c.similarity, abs=1e-4)
            sim = float(region_phrase_similarity(b.vectors[i][None],
                                                 reranked.encode_text([c.caption]))[0, 0])
            assert c.similarity == pytest.approx(sim, abs=1e-4)
    assert [r.caption for r in reranked.analyze(image_file, boxes=boxes).regions] == [r.caption for r in b.regions]
    assert set(b.regions[0].to_dict()) == {"box", "caption", "score", "caption_score", "label"}


def _fixed_objects(boxes, scores):
    """A stand-in for RegionCaptioner._detect that always finds ``boxes`` (work pixels)."""
    def detect(detector, images, image_list, features, max_regions, score_threshold, frames):
        keep = [i for i, s in enumerate(scores) if s >= score_threshold][:max_regions]
        return [(torch.tensor(boxes)[keep], torch.tensor(scores)[keep], ["people"] * len(keep)) for _ in images]
    return detect


def test_a_box_made_up_of_detected_objects_is_captioned_with_their_help(make_model, monkeypatch):
    from regioncap.models.rerank import rerank_scores

    image = torch.rand(3, 60, 80)
    objects = [[10.0, 10.0, 30.0, 40.0], [34.0, 10.0, 60.0, 40.0]]
    plain = make_model()
    model = make_model(captioner={"group_weight": 5.0, "group_beam_size": 3})
    monkeypatch.setattr(model, "_detect", _fixed_objects(objects, [0.9, 0.8]))
    found = model.analyze(image, score_threshold=0.0)  # the two objects, detected
    assert [r.box for r in found.regions] == objects and found.candidates == [[], []]
    boxes = [[10.0, 10.0, 60.0, 40.0], [0.0, 0.0, 20.0, 20.0]]  # the two objects' box; one of neither
    result = model.analyze(image, boxes=boxes, objects=found)
    group, other = result.candidates
    assert other == [] and len(group) >= 1 and all(c.member_similarity is not None for c in group)
    # the box that is no group gets plain beam search's caption, as without group captions
    base = plain.analyze(image, boxes=boxes)
    assert result.regions[1].caption == base.regions[1].caption
    assert result.regions[1].caption_score == pytest.approx(base.regions[1].caption_score, abs=1e-5)
    # the group's caption is its best candidate; each candidate's member similarity is the mean of the
    # objects' vectors . the candidate read in the singular, and its score adds 5 times that
    assert result.regions[0].caption == group[0].caption
    assert result.regions[0].caption_score == pytest.approx(group[0].score)
    for c in group:
        ids = torch.tensor([model.singular_ids[model.phrase_ids(c.caption)].tolist()])
        with torch.inference_mode():
            s = model.text_encoder(ids, torch.tensor([ids.shape[1]]))[0]
        assert c.member_similarity == pytest.approx(float((found.vectors @ s).mean()), abs=1e-4)
        combined = rerank_scores(torch.tensor([c.log_prob]), torch.tensor([1]), torch.tensor([c.similarity]), 0.0)
        assert c.score == pytest.approx(float(combined) + 5.0 * c.member_similarity, abs=1e-4)
    assert [c.score for c in group] == sorted((c.score for c in group), reverse=True)
    assert "member_similarity" in group[0].to_dict()
    # without objects (or with only user boxes among them) a box is captioned as before: no detection runs
    monkeypatch.setattr(model, "_detect", lambda *a: pytest.fail("detection ran for user boxes"))
    users = model.analyze(image, boxes=boxes, captions=False)  # this model's result of user boxes alone
    for alone in (model.analyze(image, boxes=boxes), model.analyze(image, boxes=boxes, objects=users)):
        assert alone.candidates == [[], []] and [r.caption for r in alone.regions] == [r.caption for r in base.regions]
    assert model.analyze(image, boxes=boxes, objects=found, captions=False).candidates == [[], []]
    # objects of another image, or not a result at all: a clear error
    with pytest.raises(RegionCapError, match="80x60"):
        model.analyze(torch.rand(3, 50, 50), boxes=boxes, objects=found)
    with pytest.raises(RegionCapError, match="AnalysisResult"):
        model.analyze(image, boxes=boxes, objects=[[0, 0, 1, 1]])
    other = make_model(joint_dim=8).analyze(image, boxes=objects, captions=False)
    with pytest.raises(RegionCapError, match="another model"):  # another config: 8-d vectors
        model.analyze(image, boxes=boxes, objects=other)
    # detected regions: a detection made up of two others is captioned with their help
    monkeypatch.setattr(model, "_detect", _fixed_objects(boxes[:1] + objects, [0.95, 0.9, 0.8]))
    detected = model.analyze(image, score_threshold=0.0)
    assert [bool(c) for c in detected.candidates] == [True, False, False]


def test_objects_of_another_model_are_refused(make_model, monkeypatch):
    """analyze(objects=) takes a result of this model only (regioncap.models.identity): another model of the
    same config and vector width (other weights) is a clear error; a copy with the same weights is not."""
    import copy

    image = torch.rand(3, 60, 80)
    objects = [[10.0, 10.0, 30.0, 40.0], [34.0, 10.0, 60.0, 40.0]]
    model = make_model(captioner={"group_weight": 5.0, "group_beam_size": 3})
    other = make_model(seed=1, captioner={"group_weight": 5.0, "group_beam_size": 3})
    for m in (model, other):
        monkeypatch.setattr(m, "_detect", _fixed_objects(objects, [0.9, 0.8]))
    boxes = [[10.0, 10.0, 60.0, 40.0]]
    theirs = other.analyze(image, score_threshold=0.0)
    assert theirs.model is other and theirs.vectors.shape == (2, model.config.joint_dim)
    with pytest.raises(RegionCapError, match="another model"):
        model.analyze(image, boxes=boxes, objects=theirs)
    twin = copy.deepcopy(model)
    ours = twin.analyze(image, score_threshold=0.0)
    grouped = model.analyze(image, boxes=boxes, objects=ours)
    assert grouped.candidates[0] and grouped.candidates[0][0].member_similarity is not None


def test_a_vgg19_model_saved_before_the_encoder_changed_computes_what_it_did(make_model, tmp_path):
    """A folder saved as 'vgg19' with the per-crop encoder (version 1, e6c7a03) loads as 'vgg19-crops':
    the same region vectors as when it was saved; without a version it is refused, naming the change."""
    from regioncap.errors import ModelFileError
    from regioncap.models.model import RegionCaptioner

    model = make_model(region_encoder={"kind": "vgg19-crops", "vgg_crop_size": 32})
    image, boxes = torch.rand(3, 48, 64), [[4.0, 4.0, 40.0, 30.0], [20.0, 10.0, 60.0, 44.0]]
    saved = model.analyze(image, boxes=boxes, captions=False).vectors
    folder = model.save_pretrained(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    config["region_encoder"]["kind"] = "vgg19"  # what the per-crop encoder was called then
    del config["region_encoder"]["version"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="e6c7a03"):
        RegionCaptioner.from_pretrained(folder)
    config["region_encoder"]["version"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    old = RegionCaptioner.from_pretrained(folder)
    assert old.config.region_encoder.kind == "vgg19-crops"
    assert torch.allclose(old.analyze(image, boxes=boxes, captions=False).vectors, saved, atol=1e-5)
    config["region_encoder"]["version"] = 2  # today's 'vgg19': other vectors from the same weights
    (folder / "config.json").write_text(json.dumps(config))
    new = RegionCaptioner.from_pretrained(folder).analyze(image, boxes=boxes, captions=False).vectors
    assert not torch.allclose(new, saved, atol=1e-3)
