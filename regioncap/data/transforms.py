"""Box-aware image transforms (torchvision.transforms.v2 + tv_tensors.BoundingBoxes).

``build_transforms(train)`` returns a callable ``(image, boxes) -> (image, boxes)``:

* in: a PIL image (or a uint8 / float tensor [3, H, W]) and boxes FloatTensor[N, 4] in absolute
  ``[x1, y1, x2, y2]`` pixels;
* out: FloatTensor[3, H', W'] in [0, 1] and FloatTensor[N, 4] with ``0 <= x1 < x2 <= W'`` and
  ``0 <= y1 < y2 <= H'``.

Boxes are never dropped or reordered: the dataset maps phrases to region indices, so row i
in is row i out. A box pushed (nearly) out of the image is clamped and kept at least one
pixel wide and high, which the detector requires.

Training augmentation is photometric (brightness, contrast, saturation) and mildly
geometric (zoom out, small shift and scale). There is no hue jitter and no flip: colours
and left/right are what the captions talk about.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

# The mean colour of ImageNet photos, used to fill the borders that zoom-out and shifts create.
FILL = (124, 116, 104)


def build_transforms(train: bool) -> BoxTransform:
    """The training (augmenting) or evaluation (conversion only) transform."""
    steps: list = [v2.ToImage()]
    if train:
        steps += [
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)], p=0.8),
            v2.RandomZoomOut(fill=FILL, side_range=(1.0, 1.3), p=0.25),
            v2.RandomApply([v2.RandomAffine(degrees=0, translate=(0.04, 0.04), scale=(0.9, 1.05),
                                            interpolation=v2.InterpolationMode.BILINEAR, fill=FILL)], p=0.5),
        ]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.ClampBoundingBoxes()]
    return BoxTransform(v2.Compose(steps))


class BoxTransform:
    """Applies a v2 pipeline to an image and its boxes together (see the module docstring)."""

    def __init__(self, transform: v2.Transform):
        self.transform = transform

    def __call__(self, image, boxes) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        h, w = (image.shape[-2], image.shape[-1]) if isinstance(image, torch.Tensor) else (image.height, image.width)
        bb = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
        out_image, out_boxes = self.transform(image, bb)
        out_image = out_image.as_subclass(torch.Tensor)
        if out_image.dtype != torch.float32:  # a float input skips ToDtype's scaling
            out_image = out_image.float()
        return out_image, keep_inside(out_boxes.as_subclass(torch.Tensor), out_image.shape[-2:])

    def __repr__(self) -> str:
        return f"BoxTransform({self.transform!r})"


def keep_inside(boxes: torch.Tensor, size) -> torch.Tensor:
    """Clamp FloatTensor[N, 4] xyxy into an (H, W) image, each box at least 1 px wide and high."""
    h, w = float(size[0]), float(size[1])
    x1 = boxes[:, 0].clamp(0, max(w - 1, 0))
    y1 = boxes[:, 1].clamp(0, max(h - 1, 0))
    x2 = torch.maximum(boxes[:, 2], x1 + 1).clamp(max=w)
    y2 = torch.maximum(boxes[:, 3], y1 + 1).clamp(max=h)
    return torch.stack([x1, y1, x2, y2], dim=1)
