"""The region proposal stage: :class:`RegionDetector`, a torchvision Faster R-CNN over the entity types.

``arch="small"`` builds a from-scratch 4-stage conv backbone (strides 4/8/16/32) inside
torchvision's :class:`BackboneWithFPN`, with anchors sized for the small objects of the
synthetic scenes. ``mobilenet_v3_large_fpn`` and ``resnet50_fpn_v2`` are torchvision's
builders; with ``cfg.pretrained`` they start from COCO weights (downloaded by torchvision,
so this needs a network once, or a checkpoint in ``$TORCH_HOME/hub/checkpoints/``) and get a
new box predictor for our classes.

:class:`RegionDetector` owns the detector's stages (``transform``, ``backbone``, ``rpn``,
``roi_heads``: torchvision's attribute names, so the state-dict keys are those of a
``FasterRCNN``) and exposes them one by one, so that one backbone pass per image serves both
detection and the RoI region encoder. It keeps frozen parts frozen:

* the layers ``trainable_backbone_layers`` excludes (torchvision's rule, applied whether or not the
  COCO weights were just downloaded, so a reloaded or resumed model is frozen the same way) have
  ``requires_grad=False`` and stay so through :meth:`requires_grad_`;
* frozen layers, and every BatchNorm of a COCO-pretrained torchvision model (resnet50_fpn_v2 uses
  plain BatchNorm2d), stay in eval mode across :meth:`train`: their running statistics never move and
  region features are computed the same way in training and at inference;
* the box arithmetic (anchors, ``BoxCoder`` decode, clipping, NMS, postprocess) runs in fp32 under
  autocast: the RPN head and the box predictor hand fp32 outputs to it (bf16 has a 4-pixel step
  between 512 and 1024 px), while the convolutions and MLPs still run in the autocast dtype.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops.misc import FrozenBatchNorm2d

from regioncap.errors import ModelFileError
from regioncap.models.config import DetectorConfig

logger = logging.getLogger(__name__)

DOWNLOAD_HINT = "could not download torchvision's COCO weights (offline?); use --detector small or connect"
# The file names torchvision's COCO weights are cached under in $TORCH_HOME/hub/checkpoints/.
COCO_CHECKPOINTS = {"mobilenet_v3_large_fpn": "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
                    "resnet50_fpn_v2": "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"}


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
        rpn_score_thresh=cfg.rpn_score_thresh,
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


def frozen_backbone_parameters(cfg: DetectorConfig, body: nn.Module) -> list[str]:
    """Names (relative to ``body``) of the backbone parameters torchvision freezes for a COCO model.

    The rule of torchvision's ``_mobilenet_extractor`` / ``_resnet_fpn_extractor`` for
    ``trainable_backbone_layers``; nothing is frozen for ``small`` or a randomly initialised model.
    """
    if cfg.arch == "small" or not cfg.pretrained:
        return []
    k = cfg.trainable_backbone_layers
    if cfg.arch == "mobilenet_v3_large_fpn":
        blocks = list(body.children())
        stages = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
        if not 0 <= k <= len(stages):
            raise ValueError(f"detector.trainable_backbone_layers must be in [0, {len(stages)}], got {k}")
        freeze_before = len(blocks) if k == 0 else stages[len(stages) - k]
        return [n for n, _ in body.named_parameters() if int(n.split(".", 1)[0]) < freeze_before]
    if not 0 <= k <= 5:
        raise ValueError(f"detector.trainable_backbone_layers must be in [0, 5], got {k}")
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:k] + (["bn1"] if k == 5 else [])
    return [n for n, _ in body.named_parameters() if not any(n.startswith(layer) for layer in train)]


def _float_outputs(module: nn.Module, args, output):
    """Forward hook: a head's tensors (or lists of tensors) as fp32, for the box arithmetic after it."""
    if isinstance(output, Tensor):
        return output.float()
    return type(output)(_float_outputs(module, args, o) for o in output)


def _fp32_anchor_inputs(module: nn.Module, args):
    """Forward pre-hook of the AnchorGenerator: it takes its dtype from the feature maps, so hand it
    fp32 stand-ins of the same shape (stride-0 views, no memory) and anchors are never bf16."""
    image_list, feature_maps = args
    stand_ins = [torch.zeros((), dtype=torch.float32, device=f.device).expand(f.shape) for f in feature_maps]
    return image_list, stand_ins


class RegionDetector(nn.Module):
    """Faster R-CNN as separate stages: ``features`` -> (``losses`` | ``detect``).

    Args:
        cfg: detector settings.
        num_classes: entity types + 1 (class 0 is background).
        download: fetch COCO weights; defaults to ``cfg.pretrained``. Loading a saved model passes
            ``False``: the architecture is rebuilt identically and the weights come from the file.

    Attributes:
        transform, backbone, rpn, roi_heads: torchvision's ``FasterRCNN`` parts (same state-dict keys).
            ``backbone(images)`` returns an OrderedDict of FPN levels ``"0".."3"`` (fewer for mobilenet)
            plus ``"pool"``, each FloatTensor[B, C, H/s, W/s].
        frozen: names of the parameters that never train (``trainable_backbone_layers``).

    Raises:
        ModelFileError: the COCO weights could not be downloaded.
    """

    def __init__(self, cfg: DetectorConfig, num_classes: int, download: bool | None = None):
        super().__init__()
        cfg.validate()
        if cfg.arch == "small":
            if cfg.pretrained:
                logger.warning("detector.pretrained is ignored for arch 'small' (trained from scratch)")
            rcnn = _small(cfg, num_classes)
        else:
            download = cfg.pretrained if download is None else (download and cfg.pretrained)
            rcnn = _torchvision(cfg, num_classes, download)
        self.cfg = cfg
        self.transform, self.backbone = rcnn.transform, rcnn.backbone
        self.rpn, self.roi_heads = rcnn.rpn, rcnn.roi_heads
        self.frozen = frozenset(f"backbone.body.{n}" for n in frozen_backbone_parameters(cfg, self.backbone.body))
        for name, p in self.named_parameters():
            p.requires_grad_(name not in self.frozen)
        # Modules whose mode never changes: a fully frozen layer, and the BatchNorm statistics of a COCO model.
        coco = cfg.pretrained and cfg.arch != "small"
        locked = []
        for name, module in self.named_modules():
            own = [f"{name}.{n}" for n, _ in module.named_parameters()]
            if name and ((coco and isinstance(module, nn.modules.batchnorm._BatchNorm))
                         or (own and all(n in self.frozen for n in own))):
                locked.append(name)
        self._eval_locked = tuple(locked)
        self.rpn.anchor_generator.register_forward_pre_hook(_fp32_anchor_inputs)
        self.rpn.head.register_forward_hook(_float_outputs)
        self.roi_heads.box_predictor.register_forward_hook(_float_outputs)
        self.train(self.training)

    @property
    def out_channels(self) -> int:
        return self.backbone.out_channels

    @property
    def featmap_names(self) -> list[str]:
        """FPN levels the RoI heads pool from (the RoI region encoder uses the same)."""
        return list(self.roi_heads.box_roi_pool.featmap_names)

    def train(self, mode: bool = True) -> RegionDetector:
        super().train(mode)
        for name in self._eval_locked:
            self.get_submodule(name).eval()
        return self

    def requires_grad_(self, requires_grad: bool = True) -> RegionDetector:
        """Like ``nn.Module.requires_grad_``, but a frozen parameter stays frozen."""
        for name, p in self.named_parameters():
            p.requires_grad_(requires_grad and name not in self.frozen)
        return self

    # -- stages ----------------------------------------------------------------------------------------
    def features(self, images: list[Tensor], targets: list[dict] | None = None
                 ) -> tuple[ImageList, OrderedDict[str, Tensor], list[dict] | None]:
        """transform -> backbone: (ImageList, FPN feature dict, targets in the transformed images' pixels).

        Args:
            images: per image FloatTensor[3, H_i, W_i] in [0, 1].
            targets: optional per image ``boxes`` FloatTensor[N, 4] xyxy pixels, ``labels`` Int64Tensor[N].
        """
        image_list, targets = self.transform(images, targets)
        return image_list, self.backbone(image_list.tensors), targets

    def losses(self, image_list: ImageList, features: dict[str, Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """torchvision's four training losses (objectness, rpn_box_reg, classifier, box_reg)."""
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        _, head_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        return {**rpn_losses, **head_losses}

    def detect(self, image_list: ImageList, features: dict[str, Tensor], original_sizes: list[tuple[int, int]],
               max_detections: int | None = None) -> list[dict[str, Tensor]]:
        """RPN -> RoI heads -> postprocess.

        Args:
            original_sizes: per image (H, W) of the image before the transform; boxes are mapped to it.
            max_detections: return up to this many per image when more than ``box_detections_per_img``.

        Returns:
            per image ``boxes`` FloatTensor[N, 4] (fp32, original pixels), ``scores`` [N], ``labels`` Int64[N].
        """
        heads = self.roi_heads_for(max_detections)
        proposals, _ = self.rpn(image_list, features)
        detections, _ = heads(features, proposals, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def roi_heads_for(self, max_detections: int | None) -> nn.Module:
        """The RoI heads, returning up to ``max_detections`` per image when that is more than their
        ``detections_per_img``: a shallow copy that shares the weights (the module itself never changes)."""
        heads = self.roi_heads
        if max_detections is not None and max_detections > heads.detections_per_img:
            heads = copy.copy(heads)
            heads.detections_per_img = max_detections
        return heads

    @staticmethod
    def to_feature_boxes(boxes: list[Tensor], original_sizes: list[tuple[int, int]], image_list: ImageList
                         ) -> list[Tensor]:
        """Boxes in original pixels -> the transformed images' pixels (what RoIAlign on ``features`` takes)."""
        return [resize_boxes(b, list(o), list(s)) for b, o, s in zip(boxes, original_sizes, image_list.image_sizes)]

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        """torchvision's ``FasterRCNN`` call: training -> loss dict, eval -> per image detections."""
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        image_list, features, targets = self.features(images, targets)
        if self.training:
            return self.losses(image_list, features, targets)
        return self.detect(image_list, features, [tuple(im.shape[-2:]) for im in images])
