"""Region encoders: boxes -> L2-normalised vectors v_i in the joint space.

Both share one call: ``encoder(images_or_features, boxes, image_sizes) -> FloatTensor[sum R_i, D]``.

* :class:`RoIRegionEncoder` (default) pools the detector's own FPN features with
  ``MultiScaleRoIAlign``, so one backbone pass serves detection and description; optionally with a
  :class:`TextureBranch` on the box's own pixels (``texture_dim``).
* :class:`VGG19RegionEncoder` (``vgg19``) is the original design's VGG-19 encoder run the Fast R-CNN
  way: VGG-19's convolutions once per image, RoIAlign 7x7 per box, FC.
* :class:`VGG19CropEncoder` (``vgg19-crops``) is the seed's literal AlignmentEncoderCNN: each box is
  cropped from the image (batched ``roi_align``), scaled to [-1, 1], run through VGG-19 ``features``,
  average-pooled to 7x7 and projected; one VGG-19 pass per box.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign, roi_align

from regioncap.errors import ModelFileError
from regioncap.models.config import RegionEncoderConfig

logger = logging.getLogger(__name__)

GEOMETRY_FEATURES = 7
# Crops per VGG-19 pass. On a CPU one batch of many 224px crops is no faster per crop (it loses cache
# locality: 36 crops at once took 164 ms/crop, 2 at a time 143) and holds ~40 MB of activations per
# crop (benchmarks/bench_inference.py); a GPU wants big batches.
VGG_CHUNK = {"cpu": 2}
VGG_CHUNK_DEFAULT = 64
VGG_STRIDE = 16  # conv5_4 of VGG-19 (after four max-pools)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TEXTURE_GRID = 32  # TextureBranch samples each box on this grid
TEXTURE_WIDTH = 32  # channels of its first convolution (then twice that)
TEXTURE_EPS = 0.02  # a flat box (luminance std << 0.02) stays near zero instead of amplifying noise


def box_geometry(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Box geometry normalised by the image size.

    Args:
        boxes: FloatTensor[R, 4] ``[x1, y1, x2, y2]`` in pixels of an image of ``image_size`` (H, W).

    Returns:
        FloatTensor[R, 7]: ``x1/W, y1/H, x2/W, y2/H, w/W, h/H, area/(W*H)``.
    """
    h, w = float(image_size[0]), float(image_size[1])
    scale = boxes.new_tensor([w, h, w, h])
    b = boxes / scale
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return torch.cat([b, bw[:, None], bh[:, None], (bw * bh)[:, None]], dim=1)


class TextureBranch(nn.Module):
    """A box's own pixels -> pattern statistics, FloatTensor[R, out_dim].

    RoIAlign samples each box from the original image on a 32x32 grid (a pattern whose period is a
    fraction of its object's size covers the same number of cells whatever the box's size). The
    branch sees only the luminance, standardised per box: colour and brightness are the detector
    features' job, and the branch is left nothing to learn but structure. Three 3x3 convolutions
    (the last two with stride 2) act as local pattern detectors; the per-channel mean and standard
    deviation of their responses over the box (first- and second-order statistics, as texture
    descriptors use) do not depend on where in the box a pattern lies; they are layer-normalised
    and go through a ``dim``-wide hidden layer to ``out_dim``. The detector's features, trained to
    find objects at a reduced input size, keep little texture: a linear probe on the demo model's
    pooled FPN features told stripes, dots and checks apart 49 % of the time (chance 33 %).

    ``layout`` > 0 also averages the responses on a ``layout`` x ``layout`` grid over the box — where
    they lie, i.e. the outline, which the statistics discard — layer-normalised on their own and added
    to the hidden layer. On crops of 4,686 training regions a classifier told the six shapes of
    held-out single objects apart 93.6 % of the time from the statistics, 96.0 % with a 4x4 layout.
    """

    def __init__(self, dim: int, out_dim: int, width: int = TEXTURE_WIDTH, layout: int = 0):
        super().__init__()
        self.layout = layout
        self.convs = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU(inplace=True),
        )
        # LayerNorm puts the statistics on the scale of the encoder's other features whatever the
        # convolutions' scale; the layout grid gets its own, so its many values do not drown the statistics
        self.out = nn.Sequential(nn.LayerNorm(4 * width), nn.Linear(4 * width, dim), nn.ReLU(inplace=True),
                                 nn.Linear(dim, out_dim))
        self.layout_norm = nn.LayerNorm(2 * width * layout * layout) if layout else None
        self.layout_proj = nn.Linear(2 * width * layout * layout, dim, bias=False) if layout else None
        for conv in self.convs[::2]:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """Args: per image FloatTensor[3, H_i, W_i] in [0, 1] and FloatTensor[R_i, 4] in its pixels."""
        crops = torch.cat([roi_align(img[None].float(), [b.float()], output_size=TEXTURE_GRID, spatial_scale=1.0,
                                     sampling_ratio=2, aligned=True) for img, b in zip(images, boxes)])
        y = (crops * self.luma).sum(dim=1, keepdim=True)  # [R, 1, G, G] luminance
        std, mean = torch.std_mean(y, dim=(2, 3), keepdim=True, correction=0)
        x = self.convs((y - mean) / (std + TEXTURE_EPS))  # [R, 2w, G/4, G/4]
        var, mean = torch.var_mean(x, dim=(2, 3), correction=0)
        h = self.out[1](self.out[0](torch.cat([mean, (var + 1e-6).sqrt()], dim=1)))
        if self.layout:  # hidden layer = Linear(stats) + Linear(layout), before its ReLU
            h = h + self.layout_proj(self.layout_norm(F.adaptive_avg_pool2d(x, self.layout).flatten(1)))
        return self.out[3](self.out[2](h))


class RoIRegionEncoder(nn.Module):
    """MultiScaleRoIAlign on FPN features + box geometry -> MLP -> joint space.

    Args:
        in_channels: channels of every FPN level (the backbone's ``out_channels``).
        featmap_names: FPN levels to pool from (the detector's ``box_roi_pool.featmap_names``).
        cfg: ``cfg.texture_dim`` > 0 adds a :class:`TextureBranch` on the box's own pixels.
    """

    def __init__(self, in_channels: int, featmap_names: list[str], cfg: RegionEncoderConfig, joint_dim: int):
        super().__init__()
        s = cfg.roi_output_size
        self.pool = MultiScaleRoIAlign(list(featmap_names), output_size=s, sampling_ratio=2)
        self.visual = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * s * s, cfg.hidden_dim), nn.ReLU(inplace=True))
        self.geometry = nn.Sequential(nn.Linear(GEOMETRY_FEATURES, cfg.geometry_dim), nn.ReLU(inplace=True))
        self.texture = None
        if cfg.texture_dim:
            self.texture = TextureBranch(cfg.texture_dim, cfg.hidden_dim, layout=cfg.texture_layout)
        self.project = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim + cfg.geometry_dim, cfg.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden_dim, joint_dim),
        )

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]],
                images: list[Tensor] | None = None, image_boxes: list[Tensor] | None = None) -> Tensor:
        """Encode regions.

        Args:
            features: FPN levels, each FloatTensor[B, C, H_l, W_l] (from the detector's backbone).
            boxes: per image FloatTensor[R_i, 4] ``[x1, y1, x2, y2]`` in the *transformed* image's pixels.
            image_sizes: per image (H, W) of the transformed image (``ImageList.image_sizes``).
            images, image_boxes: the original images (FloatTensor[3, H_i, W_i] in [0, 1]) and the same
                boxes in their pixels; needed only with a texture branch.

        Returns:
            FloatTensor[sum R_i, D], unit L2 norm, rows in image order.
        """
        pooled = self.pool(features, boxes, image_sizes)  # [sum R_i, C, s, s]
        geo = torch.cat([box_geometry(b, size) for b, size in zip(boxes, image_sizes)], dim=0)
        h = self.project[:2](torch.cat([self.visual(pooled), self.geometry(geo.to(pooled.dtype))], dim=1))
        if self.texture is not None:  # added before the ReLU: Linear(concat) == sum of Linears
            if images is None or image_boxes is None:
                raise ValueError("this region encoder has a texture branch: pass images and image_boxes")
            h = h + self.texture(images, image_boxes).to(h.dtype)
        return F.normalize(self.project[2:](h), dim=-1)


class VGG19RegionEncoder(nn.Module):
    """VGG-19 the Fast R-CNN way: conv layers once per image, RoIAlign 7x7 per box, FC -> joint space.

    The convolutions run once on the whole image at its own resolution (ImageNet normalisation, as
    torchvision's VGG-19 weights expect) up to conv5_4 + ReLU; the last max-pool is left out and each
    region is RoIAligned to 7x7 on that stride-16 map (``spatial_scale`` 1/16), which is what Fast
    R-CNN did for VGG-16: RoI pooling replaces the last max-pool. Stride 16 rather than 32 gives a
    small box (say 40 px across) 2.5 feature cells instead of 1.25, at no extra cost. ``cfg.pretrained``
    starts the convolutions from torchvision's ImageNet weights.

    Its weights have the same names and shapes as :class:`VGG19CropEncoder`'s, so one state dict
    serves both kinds (fidelity comparisons).
    """

    def __init__(self, cfg: RegionEncoderConfig, joint_dim: int, download: bool | None = None):
        super().__init__()
        self.features = _vgg19_features(cfg, download)[:-1]  # conv5_4 + ReLU, stride 16
        self.project = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(512 * 7 * 7, joint_dim))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def forward(self, images: list[Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """Encode regions.

        Args:
            images: per image FloatTensor[3, H_i, W_i] in [0, 1] (the original, untransformed images).
            boxes: per image FloatTensor[R_i, 4] ``[x1, y1, x2, y2]`` in that image's pixels; boxes may
                touch or cross the image's edges (RoIAlign samples zeros outside the feature map).
            image_sizes: per image (H_i, W_i); unused (boxes are in the images' own pixels), kept for
                the common call.

        Returns:
            FloatTensor[sum R_i, D], unit L2 norm, rows in image order.
        """
        pooled = []
        for img, b in zip(images, boxes):
            if len(b) == 0:
                continue
            x = (img - self.mean) / self.std
            h, w = x.shape[-2:]
            if min(h, w) < VGG_STRIDE:  # four max-pools need 16 px; padding at the right/bottom keeps coordinates
                x = F.pad(x, (0, max(0, VGG_STRIDE - w), 0, max(0, VGG_STRIDE - h)))
            fmap = self.features(x[None])  # [1, 512, H/16, W/16]
            # box coordinates stay fp32 (under bf16 autocast too: torchvision's roi_align runs in fp32)
            rois = roi_align(fmap.float(), [b.float()], output_size=7, spatial_scale=1.0 / VGG_STRIDE,
                             sampling_ratio=2, aligned=True)
            pooled.append(rois.to(fmap.dtype))  # [R_i, 512, 7, 7]
        if not pooled:
            return images[0].new_zeros((0, self.project[-1].out_features))
        return F.normalize(self.project(torch.cat(pooled)), dim=-1)


class VGG19CropEncoder(nn.Module):
    """The seed's literal AlignmentEncoderCNN: box crops -> VGG-19 ``features`` -> avg-pool 7x7 -> FC.

    Every box is cropped (batched ``roi_align``), resized to ``cfg.vgg_crop_size``, scaled to [-1, 1]
    as the seed fed VGG, and run through all of VGG-19's convolutions on its own: a VGG-19 pass per
    region. Kept (kind ``vgg19-crops``) for fidelity comparisons with :class:`VGG19RegionEncoder`.
    """

    def __init__(self, cfg: RegionEncoderConfig, joint_dim: int, download: bool | None = None):
        super().__init__()
        self.crop_size = cfg.vgg_crop_size
        self.features = _vgg19_features(cfg, download)
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.project = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(512 * 7 * 7, joint_dim))

    def forward(self, images: list[Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """Encode regions.

        Args:
            images: per image FloatTensor[3, H_i, W_i] in [0, 1] (the original, untransformed images).
            boxes: per image FloatTensor[R_i, 4] ``[x1, y1, x2, y2]`` in that image's pixels.
            image_sizes: per image (H_i, W_i); unused (the crops carry their own scale), kept for the
                common call.

        Returns:
            FloatTensor[sum R_i, D], unit L2 norm.
        """
        crops = [
            roi_align(img[None], [b.to(img.dtype)], output_size=self.crop_size, spatial_scale=1.0,
                      sampling_ratio=2, aligned=True)
            for img, b in zip(images, boxes)
        ]
        x = torch.cat(crops, dim=0) * 2.0 - 1.0  # [sum R_i, 3, S, S] in [-1, 1], as the seed fed VGG
        if x.shape[0] == 0:
            return x.new_zeros((0, self.project[-1].out_features))
        chunk = VGG_CHUNK.get(x.device.type, VGG_CHUNK_DEFAULT)
        pooled = torch.cat([self.pool(self.features(c)) for c in x.split(chunk)])  # [sum R_i, 512, 7, 7]
        return F.normalize(self.project(pooled), dim=-1)


def _vgg19_features(cfg: RegionEncoderConfig, download: bool | None) -> nn.Sequential:
    """VGG-19's ``features`` (16 conv layers, 5 max-pools); ImageNet weights if ``cfg.pretrained``."""
    from torchvision.models import VGG19_Weights, vgg19
    from torchvision.models.vgg import cfgs, make_layers

    download = cfg.pretrained if download is None else (download and cfg.pretrained)
    if download:
        try:
            return vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features
        except (OSError, RuntimeError, ValueError):
            raise ModelFileError("could not download torchvision's VGG-19 weights (offline?); "
                                 "use region_encoder.kind 'roi' or connect") from None
    return make_layers(cfgs["E"], batch_norm=False)  # vgg19().features without its 120M-weight classifier
