"""Detector builders: the small from-scratch backbone, torchvision archs offline, download failure."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from regioncap.errors import ModelFileError
from regioncap.models.config import DetectorConfig
from regioncap.models.detector import DOWNLOAD_HINT, build_detector

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-model"
SMALL = DetectorConfig(min_size=64, max_size=96, backbone_channels=[8, 8, 16, 16], fpn_channels=16, box_head_dim=32,
                       rpn_batch_size_per_image=32, box_batch_size_per_image=32)


def test_small_backbone_levels_and_strides():
    torch.manual_seed(0)
    det = build_detector(SMALL, num_classes=9).eval()
    feats = det.backbone(torch.rand(1, 3, 64, 96))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(f.shape[1] == 16 for f in feats.values())
    assert det.roi_heads.box_predictor.cls_score.out_features == 9
    assert det.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))


def test_small_detector_trains_with_and_without_boxes():
    torch.manual_seed(0)
    det = build_detector(SMALL, num_classes=9).train()
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
    plain = build_detector(DetectorConfig(arch="mobilenet_v3_large_fpn"), num_classes=9)
    assert plain.roi_heads.box_predictor.cls_score.out_features == 9
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.backbone.modules())
    # a COCO-initialised model rebuilt for loading (no download) has torchvision's frozen batch norm
    rebuilt = build_detector(DetectorConfig(arch="mobilenet_v3_large_fpn", pretrained=True), 9, download=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in rebuilt.backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in rebuilt.backbone.modules())


def test_download_failure_is_a_clear_error(monkeypatch):
    from torchvision.models import _api

    def offline(self, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(_api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ModelFileError) as err:
        build_detector(DetectorConfig(arch="mobilenet_v3_large_fpn", pretrained=True), num_classes=9)
    assert str(err.value) == DOWNLOAD_HINT


# -- RegionDetector: torchvision's FasterRCNN, stage by stage ------------------------------------------
def test_region_detector_has_fasterrcnns_keys_and_outputs():
    from torchvision.models.detection import FasterRCNN

    from regioncap.models.detector import _small

    torch.manual_seed(0)
    reference = _small(SMALL, num_classes=9).eval()
    det = build_detector(SMALL, num_classes=9).eval()
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
    det = build_detector(DetectorConfig(**{**SMALL.__dict__, "box_detections_per_img": 3, "box_score_thresh": 0.0}),
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
    det = build_detector(cfg, num_classes=9, download=False)
    frozen = {n for n, p in det.named_parameters() if not p.requires_grad}
    assert frozen == det.frozen and "backbone.body.0.0.weight" in frozen
    assert all(n.startswith("backbone.body.") for n in frozen)
    assert not any(n.startswith("backbone.fpn") or n.startswith("rpn") for n in frozen)
    det.requires_grad_(True).train()
    assert {n for n, p in det.named_parameters() if not p.requires_grad} == frozen
    assert not det.get_submodule("backbone.body.0").training and det.backbone.fpn.training
    # resnet50_fpn_v2 keeps plain BatchNorm2d: a COCO model's statistics must not move
    r50 = build_detector(DetectorConfig.for_arch("resnet50_fpn_v2", pretrained=True), 9, download=False).train()
    norms = [m for m in r50.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and r50.rpn.training
    # a randomly initialised model trains everything, BatchNorm included
    scratch = build_detector(DetectorConfig.for_arch("resnet50_fpn_v2"), 9).train()
    assert not scratch.frozen and all(m.training for m in scratch.modules() if isinstance(m, nn.BatchNorm2d))
