"""The CPU fast path (ONNX Runtime backbone + box head) gives the eager detector's detections."""

import copy

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


def test_detector_level_outputs_match_torchvision(mobilenet):
    """OnnxDetector.detect == RegionDetector.detect on the same features (all 100 detections, in order)."""
    det = mobilenet.detector
    fast = onnx_detector.OnnxDetector(det)
    assert not any(m.training for m in det.modules())  # exporting left every module in eval mode
    images = [torch.rand(3, 100, 120), torch.rand(3, 120, 100)]  # a batch of two shapes
    with torch.inference_mode():
        il, feats, _ = det.features(images)
        il2, feats2, _ = fast.features(images)
        for k in feats:
            assert torch.allclose(feats[k], feats2[k], atol=1e-5, rtol=1e-4)
        sizes = [tuple(im.shape[-2:]) for im in images]
        eager, ours = det.detect(il, feats, sizes), fast.detect(il, feats, sizes)
    for e, o in zip(eager, ours):
        assert torch.equal(e["labels"], o["labels"])
        assert torch.allclose(e["boxes"], o["boxes"], atol=0.05)


def test_weight_changes_rebuild_the_graphs(mobilenet, monkeypatch):
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "1")
    mobilenet._inference_detector()
    model = copy.deepcopy(mobilenet)  # a model that holds ONNX Runtime sessions can still be copied
    first = model._inference_detector()
    assert model._inference_detector() is first  # cached while the weights stay
    with torch.no_grad():
        model.detector.roi_heads.box_predictor.cls_score.bias.add_(1.0)
    assert model._inference_detector() is not first


def test_small_arch_stays_eager(tiny_model, monkeypatch):
    monkeypatch.setenv("REGIONCAP_ONNXRUNTIME", "1")
    assert tiny_model._inference_detector() is tiny_model.detector


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_pool_by_level_gives_multiscale_roi_align_rows(pieces):
    """Level-by-level pooling in pieces: the rows of torchvision's MultiScaleRoIAlign, in ``order``."""
    from torchvision.ops import MultiScaleRoIAlign

    g = torch.Generator().manual_seed(0)
    features = {"0": torch.rand(2, 8, 32, 40, generator=g), "1": torch.rand(2, 8, 16, 20, generator=g),
                "pool": torch.rand(2, 8, 8, 10, generator=g)}
    boxes = []
    for n in (37, 0):  # an image without boxes too
        xy = torch.rand(n, 2, generator=g) * torch.tensor([120.0, 90.0])
        wh = torch.rand(n, 2, generator=g) * 150 + 2  # small boxes map to level 0, large ones to level 1
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    boxes[1] = torch.tensor([[10.0, 10.0, 200.0, 150.0], [3.0, 4.0, 9.0, 12.0]])
    sizes = [(128, 160), (128, 160)]
    reference = MultiScaleRoIAlign(["0", "1"], 7, 2)(features, boxes, sizes)
    pool = MultiScaleRoIAlign(["0", "1"], 7, 2)
    jobs, order = onnx_detector.pool_by_level(pool, features, boxes, sizes, pieces)
    pooled = torch.cat([job() for job in jobs])
    assert sorted(order.tolist()) == list(range(39))
    assert len(jobs) >= 2 * min(pieces, 2)  # both levels are used, each in pieces
    torch.testing.assert_close(pooled, reference[order], rtol=0, atol=0)
