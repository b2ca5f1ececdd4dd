"""Detector builders: the small from-scratch backbone, torchvision archs offline, download failure."""

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from regioncap.errors import ModelFileError
from regioncap.models.config import DetectorConfig
from regioncap.models.detector import DOWNLOAD_HINT, build_detector

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
