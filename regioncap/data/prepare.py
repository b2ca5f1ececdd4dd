"""An image for inference, file -> tensor in one trip: load, reduce, convert, pad; and user boxes.

``prepare_image`` is what ``RegionCaptioner.analyze`` runs on its input: any source
``load_image`` accepts (or a FloatTensor[3, H, W] in [0, 1]) becomes a work tensor on the
model's device plus a :data:`Frame` that says where the image lies in that tensor and how big
it was, so that results map back to the caller's own pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.ops import clip_boxes_to_image

from regioncap.data.image import load_image
from regioncap.errors import RegionCapError

MAX_SIDE = 2048  # an image is first reduced to this longest side (or the detector's max_size if larger)
MIN_DETECTOR_SIDE = 8  # thin images are padded so the detector's resize keeps at least this many pixels

# (content_w, content_h, width, height): the image fills [0, content_w) x [0, content_h) of the work
# tensor; width x height is its original size, to which boxes are scaled back.
Frame = tuple[int, int, int, int]


def fit(width: int, height: int, limit: int) -> tuple[int, int]:
    """(w, h) reduced proportionally so that neither side exceeds ``limit`` (unchanged if it fits)."""
    scale = limit / max(width, height)
    return (width, height) if scale >= 1 else (max(1, round(width * scale)), max(1, round(height * scale)))


def to_tensor(image, device: torch.device | str = "cpu") -> Tensor:
    """PIL / path / bytes / numpy (via load_image) or FloatTensor[3, H, W] in [0, 1] -> tensor on ``device``."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise RegionCapError(f"image tensor must be FloatTensor[3, H, W] in [0, 1], got {tuple(image.shape)}")
        return image.to(device)
    pil = load_image(image)
    arr = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy())
    return arr.permute(2, 0, 1).to(device, torch.float32).div_(255.0)


def prepare_image(image, detector_max_size: int, device: torch.device | str = "cpu") -> tuple[Tensor, Frame]:
    """(work FloatTensor[3, h, w] on ``device``, :data:`Frame`).

    An image with a side over ``max(MAX_SIDE, detector_max_size)`` is reduced first (no 480 MB tensor
    for a 40-Mpixel photo; the detector reduces it anyway), a very thin one (1 x 300) is zero-padded
    right/bottom so that the detector's resize keeps MIN_DETECTOR_SIDE pixels across.

    Raises:
        ImageError: unreadable image.  RegionCapError: a tensor of the wrong shape or dtype.
    """
    limit = max(MAX_SIDE, detector_max_size)
    if not isinstance(image, Tensor):
        image = load_image(image)
        width, height = image.size
        if max(width, height) > limit:
            image = image.resize(fit(width, height, limit), Image.Resampling.BILINEAR, reducing_gap=2.0)
    tensor = to_tensor(image, device)
    if isinstance(image, Tensor):
        width, height = tensor.shape[2], tensor.shape[1]
        if max(width, height) > limit:
            w, h = fit(width, height, limit)
            tensor = F.interpolate(tensor[None], size=(h, w), mode="bilinear", antialias=True)[0]
    h, w = tensor.shape[1:]
    short = -(-MIN_DETECTOR_SIDE * max(w, h) // detector_max_size)  # ceil
    if min(w, h) < short:
        tensor = F.pad(tensor, (0, max(0, short - w), 0, max(0, short - h)))
    return tensor, (int(w), int(h), int(width), int(height))


def user_boxes(boxes, width: int, height: int) -> Tensor:
    """Validate user boxes ``[[x1, y1, x2, y2], ...]`` and clamp them into the image: FloatTensor[N, 4]."""
    try:
        t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) if len(boxes) else torch.zeros(0, 4)
    except (TypeError, ValueError, RuntimeError):
        raise RegionCapError("boxes must be a list of [x1, y1, x2, y2] numbers") from None
    if not torch.isfinite(t).all():
        raise RegionCapError("boxes must be finite numbers")
    t = clip_boxes_to_image(t, (height, width))
    for i, (x1, y1, x2, y2) in enumerate(t.tolist()):
        if x2 <= x1 or y2 <= y1:
            raise RegionCapError(f"box {i} {[x1, y1, x2, y2]} is empty inside the {width}x{height} image "
                                 "(need x1 < x2 and y1 < y2)")
    return t


def user_boxes_in_frame(boxes, frame: Frame) -> Tensor:
    """User boxes in the original image's pixels -> FloatTensor[N, 4] in the work tensor's pixels."""
    cw, ch, width, height = frame
    return user_boxes(boxes, width, height) / torch.tensor([width / cw, height / ch] * 2)
