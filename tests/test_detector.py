"""Detector builders: the small from-scratch backbone, torchvision archs offline, download failure."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from regioncap.errors import ModelFileError
from regioncap.models.config import DetectorConfig
from regioncap.models.detector import DOWNLOAD_HINT, RegionDetector

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-model"
SMALL = DetectorConfig(min_size=64, max_size=96, backbone_channels=[8, 8, 16, 16], fpn_channels=16, box_head_dim=32,
                       rpn_batch_size_per_image=32, box_batch_size_per_image=32)


def test_small_backbone_levels_and_strides():
    torch.manual_seed(0)
    det = RegionDetector(SMALL, num_classes=9).eval()
    feats = det.backbone(torch.rand(1, 3, 64, 96))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(f.shape[1] == 16 for f in feats.values())
    assert det.roi_heads.box_predictor.cls_score.out_features == 9
    assert det.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))


def test_small_detector_trains_with_and_without_boxes():
    torch.manual_seed(0)
    det = RegionDetector(SMALL, num_classes=9).train()
    images = [torch.rand(3, 60, 80), torch.rand(3, 50, 50)]
    targets = [{"boxes": torch.tensor([[5.0, 5, 30, 40]]), "labels": torch.tensor([3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = det(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    det.eval()
    with torch.no_grad():
        out = det([torch.rand(3, 60, 80)])
    assert len(out[0]["boxes"]) <= SMALL.box_detections_per_img


def test_mobilenet_offline_and_its_pretrained_layout():
    plain = RegionDetector(DetectorConfig(arch="mobilenet_v3_large_fpn"), num_classes=9)
    assert plain.roi_heads.box_predictor.cls_score.out_features == 9
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.backbone.modules())
    # a COCO-initialised model rebuilt for loading (no download) has torchvision's frozen batch norm
    rebuilt = RegionDetector(DetectorConfig(arch="mobilenet_v3_large_fpn", pretrained=True), 9, download=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in rebuilt.backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in rebuilt.backbone.modules())


def test_download_failure_is_a_clear_error(monkeypatch):
    from torchvision.models import _api

    def offline(self, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(_api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ModelFileError) as err:
        RegionDetector(DetectorConfig(arch="mobilenet_v3_large_fpn", pretrained=True), num_classes=9)
    assert str(err.value) == DOWNLOAD_HINT


# -- RegionDetector: torchvision's FasterRCNN, stage by stage ------------------------------------------
def test_region_detector_has_fasterrcnns_keys_and_outputs():
    from torchvision.models.detection import FasterRCNN

    from regioncap.models.detector import _small

    torch.manual_seed(0)
    reference = _small(SMALL, num_classes=9).eval()
    det = RegionDetector(SMALL, num_classes=9).eval()
    assert list(det.state_dict()) == list(reference.state_dict()) and isinstance(reference, FasterRCNN)
    det.load_state_dict(reference.state_dict(), strict=True)
    images = [torch.rand(3, 70, 90), torch.rand(3, 64, 64)]
    with torch.no_grad():
        want, got = reference(images), det(images)
    assert len(want[0]["boxes"]) > 0
    for w, g in zip(want, got):
        assert all(torch.equal(w[k], g[k]) for k in ("boxes", "scores", "labels"))
    # the stages one by one give the same, and the features are there for the region encoder
    with torch.no_grad():
        image_list, features, _ = det.features(images)
        staged = det.detect(image_list, features, [tuple(im.shape[-2:]) for im in images])
    assert list(features) == ["0", "1", "2", "3", "pool"] and det.featmap_names == ["0", "1", "2", "3"]
    assert all(torch.equal(w["boxes"], s["boxes"]) for w, s in zip(want, staged))


def test_demo_model_detector_equals_torchvision_with_the_same_weights():
    from safetensors.torch import load_file

    from regioncap import RegionCaptioner
    from regioncap.data.prepare import to_tensor
    from regioncap.models.detector import _small

    model = RegionCaptioner.from_pretrained(DEMO)  # strict
    state = load_file(DEMO / "model.safetensors")
    reference = _small(model.config.detector, len(model.config.entity_types) + 1).eval()
    reference.load_state_dict({k[len("detector."):]: v for k, v in state.items() if k.startswith("detector.")},
                              strict=True)
    image = to_tensor(DEMO.parent / "examples" / "shapes-grey.jpg")
    with torch.no_grad():
        want = reference([image])[0]
        got = model.detector.eval()([image])[0]
    assert len(want["boxes"]) > 0
    assert all(torch.equal(want[k], got[k]) for k in ("boxes", "scores", "labels"))


def test_more_detections_on_request_without_changing_the_module():
    torch.manual_seed(0)
    det = RegionDetector(DetectorConfig(**{**SMALL.__dict__, "box_detections_per_img": 3, "box_score_thresh": 0.0}),
                         num_classes=9).eval()
    images = [torch.rand(3, 80, 80)]
    with torch.no_grad():
        image_list, features, _ = det.features(images)
        few = det.detect(image_list, features, [(80, 80)])[0]
        many = det.detect(image_list, features, [(80, 80)], max_detections=20)[0]
    assert len(few["boxes"]) == 3 and len(many["boxes"]) > 3 and det.roi_heads.detections_per_img == 3
    assert torch.equal(many["boxes"][:3], few["boxes"])


def test_frozen_layers_stay_frozen_and_in_eval_mode():
    cfg = DetectorConfig.for_arch("mobilenet_v3_large_fpn", pretrained=True, trainable_backbone_layers=2)
    det = RegionDetector(cfg, num_classes=9, download=False)
    frozen = {n for n, p in det.named_parameters() if not p.requires_grad}
    assert frozen == det.frozen and "backbone.body.0.0.weight" in frozen
    assert all(n.startswith("backbone.body.") for n in frozen)
    assert not any(n.startswith("backbone.fpn") or n.startswith("rpn") for n in frozen)
    det.requires_grad_(True).train()
    assert {n for n, p in det.named_parameters() if not p.requires_grad} == frozen
    assert not det.get_submodule("backbone.body.0").training and det.backbone.fpn.training
    # resnet50_fpn_v2 keeps plain BatchNorm2d: a COCO model's statistics must not move
    r50 = RegionDetector(DetectorConfig.for_arch("resnet50_fpn_v2", pretrained=True), 9, download=False).train()
    norms = [m for m in r50.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and r50.rpn.training
    # a randomly initialised model trains everything, BatchNorm included
    scratch = RegionDetector(DetectorConfig.for_arch("resnet50_fpn_v2"), 9).train()
    assert not scratch.frozen and all(m.training for m in scratch.modules() if isinstance(m, nn.BatchNorm2d))


def _exact_heads(det):
    """Heads whose outputs are exactly representable in bf16 (zero weights, bias on the bf16 grid): the
    same deltas and scores in fp32 and bf16, so any difference downstream is the box arithmetic's."""
    with torch.no_grad():
        for layer in (det.rpn.head.cls_logits, det.rpn.head.bbox_pred,
                      det.roi_heads.box_predictor.cls_score, det.roi_heads.box_predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor([0.125, -0.25, 0.0625, 0.5])[torch.arange(len(layer.bias)) % 4])
        det.rpn.head.cls_logits.bias.copy_(torch.linspace(-1, 1, len(det.rpn.head.cls_logits.bias)).bfloat16())
        det.roi_heads.box_predictor.cls_score.bias[2] = 3.0


def test_box_arithmetic_is_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    cfg = DetectorConfig(**{**SMALL.__dict__, "min_size": 800, "max_size": 1024, "box_detections_per_img": 100})
    det = RegionDetector(cfg, num_classes=9).eval()
    _exact_heads(det)
    images = [torch.rand(3, 800, 1000)]

    def run():
        image_list, features, _ = det.features(images)
        proposals, _ = det.rpn(image_list, features)
        anchors = det.rpn.anchor_generator(image_list, list(features.values()))
        return anchors[0], proposals[0], det.detect(image_list, features, [(800, 1000)])[0]

    with torch.no_grad():
        anchors32, proposals32, det32 = run()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            anchors16, proposals16, det16 = run()
    assert anchors16.dtype == proposals16.dtype == det16["boxes"].dtype == torch.float32
    assert torch.equal(anchors16, anchors32) and torch.equal(proposals16, proposals32)
    assert torch.equal(det16["boxes"], det32["boxes"]) and torch.equal(det16["labels"], det32["labels"])
    far = det16["boxes"][(det16["boxes"] >= 512) & (det16["boxes"] < 1000)]
    assert len(far) > 20 and (far % 4 != 0).float().mean() > 0.5  # not on bf16's 4-pixel grid


def test_training_losses_under_bf16_autocast_are_finite_and_fp32():
    torch.manual_seed(0)
    det = RegionDetector(SMALL, num_classes=9).train()
    targets = [{"boxes": torch.tensor([[5.0, 5, 30, 40]]), "labels": torch.tensor([3])}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = det([torch.rand(3, 60, 80)], targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
