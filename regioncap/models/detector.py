"""The region proposal stage: a torchvision Faster R-CNN over the dataset's entity types.

``arch="small"`` builds a from-scratch 4-stage conv backbone (strides 4/8/16/32) inside
torchvision's :class:`BackboneWithFPN`, with anchors sized for the small objects of the
synthetic scenes. ``mobilenet_v3_large_fpn`` and ``resnet50_fpn_v2`` are torchvision's
builders; with ``cfg.pretrained`` they start from COCO weights (downloaded by torchvision,
so this needs a network once) and get a new box predictor for our classes.
"""

from __future__ import annotations

import logging

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.misc import FrozenBatchNorm2d

from regioncap.errors import ModelFileError
from regioncap.models.config import DetectorConfig

logger = logging.getLogger(__name__)

DOWNLOAD_HINT = "could not download torchvision's COCO weights (offline?); use --detector small or connect"


def _conv(c_in: int, c_out: int, stride: int, norm: str) -> nn.Sequential:
    norm_layer = nn.GroupNorm(8, c_out) if norm == "group" else nn.BatchNorm2d(c_out)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), norm_layer, nn.ReLU(inplace=True))


class SmallBackbone(nn.Module):
    """Four conv stages; ``stage{k}`` outputs have strides 4, 8, 16, 32.

    Input FloatTensor[B, 3, H, W] (normalised by the detector's transform).
    """

    def __init__(self, channels: list[int], norm: str = "group") -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        stem = max(8, (c1 // 2) // 8 * 8)
        self.stem = _conv(3, stem, 2, norm)  # stride 2
        self.stage1 = nn.Sequential(_conv(stem, c1, 2, norm), _conv(c1, c1, 1, norm))  # 4
        self.stage2 = nn.Sequential(_conv(c1, c2, 2, norm), _conv(c2, c2, 1, norm))  # 8
        self.stage3 = nn.Sequential(_conv(c2, c3, 2, norm), _conv(c3, c3, 1, norm))  # 16
        self.stage4 = nn.Sequential(_conv(c3, c4, 2, norm), _conv(c4, c4, 1, norm))  # 32

    def forward(self, x):  # pragma: no cover - IntermediateLayerGetter walks the children itself
        for child in self.children():
            x = child(x)
        return x


def _rcnn_kwargs(cfg: DetectorConfig) -> dict:
    return dict(
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
    )


def _small(cfg: DetectorConfig, num_classes: int) -> FasterRCNN:
    body = SmallBackbone(cfg.backbone_channels, cfg.norm)
    backbone = BackboneWithFPN(
        body,
        return_layers={"stage1": "0", "stage2": "1", "stage3": "2", "stage4": "3"},
        in_channels_list=list(cfg.backbone_channels),
        out_channels=cfg.fpn_channels,
    )
    # One size per FPN level ("0".."3" and the max-pooled "pool"), three aspect ratios each.
    anchors = AnchorGenerator(
        sizes=tuple((s,) for s in cfg.anchor_sizes),
        aspect_ratios=(tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes),
    )
    resolution = 7  # torchvision's box_roi_pool output size
    box_head = TwoMLPHead(cfg.fpn_channels * resolution**2, cfg.box_head_dim)
    return FasterRCNN(backbone, rpn_anchor_generator=anchors, box_head=box_head,
                      box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes), **_rcnn_kwargs(cfg))


def _freeze_batchnorm(module: nn.Module) -> None:
    """Swap BatchNorm2d for FrozenBatchNorm2d in place, as torchvision does for a COCO-trained mobilenet.

    A model rebuilt for loading (no download) must have the same buffers as the one that was saved.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            _freeze_batchnorm(child)


def _torchvision(cfg: DetectorConfig, num_classes: int, download: bool) -> FasterRCNN:
    from torchvision.models.detection import faster_rcnn as frc

    if cfg.arch == "mobilenet_v3_large_fpn":
        builder, weights = frc.fasterrcnn_mobilenet_v3_large_fpn, frc.FasterRCNN_MobileNet_V3_Large_FPN_Weights
    else:
        builder, weights = frc.fasterrcnn_resnet50_fpn_v2, frc.FasterRCNN_ResNet50_FPN_V2_Weights
    kwargs = _rcnn_kwargs(cfg)
    if download:
        try:
            model = builder(weights=weights.COCO_V1, weights_backbone=None,
                            trainable_backbone_layers=cfg.trainable_backbone_layers, **kwargs)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            logger.debug("COCO weight download failed: %s", exc)
            raise ModelFileError(DOWNLOAD_HINT) from None
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
        return model
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if cfg.pretrained and cfg.arch == "mobilenet_v3_large_fpn":
        _freeze_batchnorm(model.backbone)
    return model


def build_detector(cfg: DetectorConfig, num_classes: int, download: bool | None = None) -> FasterRCNN:
    """Build the Faster R-CNN detector.

    Args:
        cfg: detector settings.
        num_classes: entity types + 1 (class 0 is background).
        download: fetch COCO weights; defaults to ``cfg.pretrained``. Loading a saved model passes
            ``False``: the architecture is rebuilt identically and the weights come from the file.

    Returns:
        torchvision ``FasterRCNN``; ``model.backbone(images)`` returns an OrderedDict of FPN levels
        ``"0".."3"`` (fewer for mobilenet) plus ``"pool"``, each FloatTensor[B, C, H/s, W/s].

    Raises:
        ModelFileError: the COCO weights could not be downloaded.
    """
    cfg.validate()
    if cfg.arch == "small":
        if cfg.pretrained:
            logger.warning("detector.pretrained is ignored for arch 'small' (trained from scratch)")
        return _small(cfg, num_classes)
    download = cfg.pretrained if download is None else (download and cfg.pretrained)
    return _torchvision(cfg, num_classes, download)
