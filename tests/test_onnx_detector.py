"""The CPU fast path (ONNX Runtime backbone + box head) gives the eager detector's detections."""

import copy
import logging

import pytest
import torch

from regioncap.models import onnx_detector
from regioncap.models.config import DetectorConfig
from regioncap.models.model import RegionCaptioner

pytestmark = pytest.mark.skipif(not onnx_detector.available(), reason="onnxruntime is not installed")


def scrambled(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights with trained-like output statistics: BatchNorm statistics that are not 0/1 and head
    weights large enough that scores differ (random heads score every proposal alike: order would be ties)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.05)
        heads = module.roi_heads
        for layer in (heads.box_predictor.cls_score, heads.box_predictor.bbox_pred, module.rpn.head.cls_logits):
            layer.weight.mul_(40.0)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))


@pytest.fixture(scope="module")
def mobilenet(vocab_module):
    from tests.conftest import tiny_config

    config = tiny_config(len(vocab_module), detector={
        **DetectorConfig.for_arch("mobilenet_v3_large_fpn").__dict__, "min_size": 96, "max_size": 128,
        "rpn_score_thresh": 0.0})
    torch.manual_seed(0)
    model = RegionCaptioner(config, vocab_module, download=False).eval()
    scrambled(model.detector)
    return model


@pytest.fixture(scope="module")
def vocab_module():
    from regioncap.data.vocab import Vocabulary
    from tests.conftest import TEXTS

    return Vocabulary.build(TEXTS)


def eager_and_fast(model, image, monkeypatch, **kwargs):
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "0")
    eager = model.analyze(image, **kwargs)
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "1")
    fast = model.analyze(image, **kwargs)
    return eager, fast


def test_fast_path_is_used_on_cpu_for_coco_archs(mobilenet, monkeypatch):
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "1")
    assert isinstance(mobilenet._inference_detector(), onnx_detector.OnnxDetector)
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "0")
    assert mobilenet._inference_detector() is mobilenet.detector


@pytest.mark.parametrize("size", [(3, 90, 120), (3, 130, 70)])  # landscape and portrait: one export serves both
def test_fast_path_detections_equal_eager(mobilenet, monkeypatch, size):
    torch.manual_seed(1)
    image = torch.rand(*size)
    eager, fast = eager_and_fast(mobilenet, image, monkeypatch, max_regions=20, score_threshold=0.0)
    assert len(eager.regions) == len(fast.regions) > 5
    scores = [r.score for r in eager.regions]
    assert max(scores) - min(scores) > 1e-3  # the order compared below is not one of ties
    assert [r.label for r in fast.regions] == [r.label for r in eager.regions]
    for e, f in zip(eager.regions, fast.regions):
        assert max(abs(a - b) for a, b in zip(e.box, f.box)) < 0.05
        assert abs(e.score - f.score) < 1e-4
        assert e.caption == f.caption
    assert torch.allclose(fast.vectors, eager.vectors, atol=1e-4)


@pytest.fixture(scope="module")
def fast(mobilenet):
    """The mobilenet model's fast path, exported once for the tests that use it (an export takes seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGIONCAP_ONNXRUNTIME", "1")
        detector = mobilenet._inference_detector()  # cached on the model: analyze() reuses it
    assert isinstance(detector, onnx_detector.OnnxDetector)
    return detector


def test_detector_level_outputs_match_torchvision(mobilenet, fast):
    """OnnxDetector.features + detect (its ONNX backbone, RPN head and box head) == RegionDetector's, on a
    batch of two shapes: the same detections (all 100, in order)."""
    det = mobilenet.detector
    assert not any(m.training for m in det.modules())  # exporting left every module in eval mode
    images = [torch.rand(3, 100, 120), torch.rand(3, 120, 100)]  # a batch of two shapes
    with torch.inference_mode():
        il, feats, _ = det.features(images)
        il2, feats2, _ = fast.features(images)
        assert feats2.rpn_head is not None  # the RPN head's outputs come from the ONNX graph
        for k in feats:
            assert torch.allclose(feats[k], feats2[k], atol=1e-5, rtol=1e-4)
        sizes = [tuple(im.shape[-2:]) for im in images]
        eager, ours = det.detect(il, feats, sizes), fast.detect(il2, feats2, sizes)
    for e, o in zip(eager, ours):
        assert len(e["boxes"]) == len(o["boxes"]) == det.roi_heads.detections_per_img
        assert torch.equal(e["labels"], o["labels"])
        assert torch.allclose(e["boxes"], o["boxes"], atol=0.05)
        assert torch.allclose(e["scores"], o["scores"], atol=1e-4)


def test_weight_changes_rebuild_the_graphs(mobilenet, fast, monkeypatch):
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "1")
    assert mobilenet._inference_detector() is fast
    model = copy.deepcopy(mobilenet)  # a model that holds ONNX Runtime sessions can still be copied
    built = []  # the copy's exports, counted (an export takes seconds; what is built is tested above)
    monkeypatch.setattr(onnx_detector, "OnnxDetector", lambda det: built.append(det) or object())
    first = model._inference_detector()
    assert built == [model.detector]  # the copy exports its own
    assert model._inference_detector() is first  # cached while the weights stay
    with torch.no_grad():
        model.detector.roi_heads.box_predictor.cls_score.bias.add_(1.0)
    assert model._inference_detector() is not first and len(built) == 2
    assert mobilenet._inference_detector() is fast  # the original's weights did not change


def test_a_failed_export_leaves_the_eager_detector_with_one_warning(mobilenet, monkeypatch, caplog):
    """An export or session that fails (an operator the exporter does not know, no onnxscript, ...): analyze()
    runs the eager detector and gives its result, with one warning in the log, not one per call."""
    model = copy.deepcopy(mobilenet)

    exporters = []

    def broken(*args, **kwargs):
        exporters.append(kwargs.get("dynamo"))
        raise RuntimeError("unsupported operator aten::made_up\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", broken)
    image = torch.rand(3, 90, 120)
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "0")
    eager = model.analyze(image, max_regions=5, score_threshold=0.0)
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "1")
    with caplog.at_level(logging.WARNING):
        results = [model.analyze(image, max_regions=5, score_threshold=0.0) for _ in range(2)]
    assert model._inference_detector() is model.detector
    assert exporters == [True]  # torch.export's exporter (the TorchScript one is deprecated); tried once
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "aten::made_up" in warnings[0].getMessage()
    assert "eager detector" in warnings[0].getMessage() and "more detail" not in warnings[0].getMessage()
    for r in results:
        assert [x.box for x in r.regions] == [x.box for x in eager.regions] and len(r.regions) == 5
    assert not any(m.training for m in model.detector.modules())


def test_small_arch_stays_eager(tiny_model, monkeypatch):
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "1")
    assert tiny_model._inference_detector() is tiny_model.detector


def test_pool_rows_gives_multiscale_roi_align_rows():
    """Channels-last pooling (embedding_bag over bilinear neighbours) = torchvision's MultiScaleRoIAlign,
    row for row, for boxes on both levels, crossing the map's edges, under a pixel, on two images."""
    from torchvision.ops import MultiScaleRoIAlign

    g = torch.Generator().manual_seed(0)
    features = {"0": torch.randn(2, 8, 32, 40, generator=g), "1": torch.randn(2, 8, 16, 20, generator=g),
                "pool": torch.randn(2, 8, 8, 10, generator=g)}
    xy = torch.rand(60, 2, generator=g) * torch.tensor([200.0, 160.0]) - 20  # some start outside the image
    wh = torch.rand(60, 2, generator=g) * 300 + 0.2  # from under a pixel to larger than the image
    boxes = [torch.cat([xy[:50], xy[:50] + wh[:50]], dim=1),
             torch.cat([torch.tensor([[0.0, 0.0, 160.0, 128.0], [158.0, 126.0, 160.0, 128.0]]),
                        torch.cat([xy[50:], xy[50:] + wh[50:]], dim=1)])]
    sizes = [(128, 160), (128, 160)]
    reference = MultiScaleRoIAlign(["0", "1"], 7, 2)(features, boxes, sizes)  # [62, 8, 7, 7]
    rows, order = onnx_detector.pool_rows(MultiScaleRoIAlign(["0", "1"], 7, 2), features, boxes, sizes)
    rows = list(rows)
    assert len(rows) == 2  # one per level
    blocks, same_order = onnx_detector.pool_rows(MultiScaleRoIAlign(["0", "1"], 7, 2), features, boxes, sizes, block=8)
    blocks = list(blocks)
    assert torch.equal(same_order, order) and max(len(b) for b in blocks) == 8 and len(blocks) > 2
    rows = torch.cat(rows)
    torch.testing.assert_close(torch.cat(blocks), rows, rtol=0, atol=0)
    assert sorted(order.tolist()) == list(range(62))
    levels = MultiScaleRoIAlign(["0", "1"], 7, 2)
    levels(features, boxes, sizes)
    assert len(set(levels.map_levels(boxes).tolist())) == 2  # both levels used
    expected = reference[order].flatten(2).transpose(1, 2)  # [N, 49, C]
    torch.testing.assert_close(rows, expected, rtol=1e-5, atol=1e-6)


def test_rows_box_net_is_the_box_head_on_reordered_input(mobilenet):
    """Channels-last rows through fc6 with reordered columns (TwoMLPHead), or transposed back (the conv
    head of resnet50_fpn_v2): the box head's outputs on [N, C, 7, 7]."""
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor

    heads = mobilenet.detector.roi_heads
    torch.manual_seed(0)
    conv_head = FastRCNNConvFCHead((256, 7, 7), [16, 16], [32]).eval()
    for head, predictor in ((heads.box_head, heads.box_predictor), (conv_head, FastRCNNPredictor(32, 5))):
        pooled = torch.randn(5, 256, 7, 7)
        net = onnx_detector._RowsBoxNet(head, predictor, 256, 7).eval()
        with torch.no_grad():
            expected = predictor(head(pooled))
            got = net(pooled.flatten(2).transpose(1, 2))
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _clustered_boxes(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n boxes around a few centres (heavy overlap, so NMS suppresses), scores and class ids."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 2, generator=g) * 200
    xy = centres[torch.randint(6, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 8
    wh = torch.rand(n, 2, generator=g) * 40 + 10
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g), torch.randint(classes, (n,), generator=g)


@pytest.mark.parametrize("n", [300, 3000])  # under and over torchvision's 4,000-coordinate switch
@pytest.mark.parametrize("k", [1, 10, 100, 5000])
def test_batched_nms_top_is_batched_nms_cut_at_k(n, k):
    from torchvision.ops import batched_nms

    boxes, scores, idxs = _clustered_boxes(n, 8, seed=n + k)
    expected = batched_nms(boxes, scores, idxs, 0.5)[:k]
    assert len(expected) == min(k, len(batched_nms(boxes, scores, idxs, 0.5)))
    assert torch.equal(onnx_detector.batched_nms_top(boxes, scores, idxs, 0.5, k), expected)


def test_batched_nms_top_looks_further_when_the_best_boxes_suppress_each_other():
    """The 400 best boxes are one box repeated (one kept): the search must widen past them."""
    from torchvision.ops import batched_nms

    boxes, scores, idxs = _clustered_boxes(3000, 4, seed=1)
    boxes[:400], idxs[:400] = torch.tensor([10.0, 10.0, 60.0, 60.0]), 0
    scores[:400] = 2.0 + torch.rand(400)
    expected = batched_nms(boxes, scores, idxs, 0.5)[:100]
    assert (scores[expected] < 2.0).sum() == 99
    assert torch.equal(onnx_detector.batched_nms_top(boxes, scores, idxs, 0.5, 100), expected)


@pytest.mark.parametrize("where", ["at", "above", "below"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_nms_top_is_batched_nms_with_tied_scores(where, seed, monkeypatch):
    """20 boxes share one score (a saturated softmax gives many boxes 1.0): the tie at the 10th kept box,
    above it or below it. torchvision's sorts are not stable, so ties at or above the cut take its own
    call; ties below the cut change nothing and keep the short way."""
    from torchvision.ops import batched_nms

    boxes, scores, idxs = _clustered_boxes(3000, 8, seed=seed)
    cut = scores[batched_nms(boxes, scores, idxs, 0.5)[9]].item()
    tied = torch.randperm(3000, generator=torch.Generator().manual_seed(seed))[:20]
    scores[tied] = {"at": cut, "above": 1.5, "below": 0.01}[where]
    expected = batched_nms(boxes, scores, idxs, 0.5)[:10]
    calls = []
    monkeypatch.setattr(onnx_detector, "batched_nms", lambda *a: calls.append(1) or batched_nms(*a))
    assert torch.equal(onnx_detector.batched_nms_top(boxes, scores, idxs, 0.5, 10), expected)
    assert calls == ([] if where == "below" else [1])
    if where != "below":
        assert (scores[expected] == scores[tied[0]]).any()  # the tie is among the boxes compared


def test_proposals_and_detections_are_torchvisions(mobilenet):
    """propose() == RegionProposalNetwork.forward and postprocess_detections() == RoIHeads' own, exactly,
    on the same head outputs, with the detections cut at fewer than NMS keeps."""
    det = mobilenet.detector
    heads = copy.copy(det.roi_heads)
    heads.detections_per_img = 5
    with torch.inference_mode():
        il, feats, _ = det.features([torch.rand(3, 100, 120), torch.rand(3, 120, 90)])
        levels = list(feats.values())
        expected, _ = det.rpn(il, feats)
        proposals = onnx_detector.propose(det.rpn, il, levels, *det.rpn.head(levels))
        assert [len(p) for p in proposals] == [len(p) for p in expected] and len(expected[0]) > 50
        for a, b in zip(proposals, expected):
            assert torch.equal(a, b)
        logits, regression = heads.box_predictor(heads.box_head(heads.box_roi_pool(feats, expected, il.image_sizes)))
        ours = onnx_detector.postprocess_detections(heads, logits, regression, expected, il.image_sizes)
        theirs = heads.postprocess_detections(logits, regression, expected, il.image_sizes)
    assert [len(b) for b in ours[0]] == [5, 5]
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_backbone_graph_carries_the_rpn_heads_outputs(mobilenet, fast):
    det = mobilenet.detector
    with torch.inference_mode():
        il, feats, _ = fast.features([torch.rand(3, 100, 120), torch.rand(3, 120, 90)])  # a padded batch of two
        logits, deltas = det.rpn.head(list(feats.values()))
        assert len(logits[0]) == 2
    assert list(feats) == ["0", "1", "pool"]
    for ours, theirs in zip(feats.rpn_head, (logits, deltas)):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
