"""Box-aware transforms: boxes stay on their objects, inside the image, in order, never dropped."""

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from regioncap.data.transforms import build_transforms, keep_inside


def _scene():
    """Grey image, a red rectangle on the left, a blue one on the right (touching the right edge)."""
    im = Image.new("RGB", (160, 120), (128, 128, 128))
    im.paste((230, 20, 20), (10, 30, 60, 90))
    im.paste((20, 20, 230), (100, 50, 160, 110))
    boxes = torch.tensor([[10.0, 30.0, 60.0, 90.0], [100.0, 50.0, 160.0, 110.0]])
    return im, boxes


def _extent(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_eval_is_conversion_only():
    im, boxes = _scene()
    x, b = build_transforms(train=False)(im, boxes)
    assert x.dtype == torch.float32 and x.shape == (3, 120, 160) and 0 <= x.min() and x.max() <= 1
    assert type(x) is torch.Tensor and type(b) is torch.Tensor
    assert torch.equal(b, boxes)
    assert torch.allclose(x[:, 40, 20] * 255, torch.tensor([230.0, 20, 20]))


def test_train_keeps_boxes_on_their_objects_inside_and_in_order():
    torch.manual_seed(0)
    t = build_transforms(train=True)
    im, boxes = _scene()
    changed = 0
    for _ in range(40):
        x, b = t(im, boxes)
        h, w = x.shape[-2:]
        assert b.shape == (2, 4) and b.dtype == torch.float32
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        rgb = (x * 255).permute(1, 2, 0).numpy()
        red = (rgb[..., 0] > rgb[..., 1] + 60) & (rgb[..., 0] > rgb[..., 2] + 60)
        blue = (rgb[..., 2] > rgb[..., 0] + 60) & (rgb[..., 2] > rgb[..., 1] + 60)
        for mask, box in ((red, b[0]), (blue, b[1])):
            ext = torch.tensor(_extent(mask), dtype=torch.float32)
            assert (ext - box).abs().max() <= 2.5, (ext, box)  # the box is tight on the coloured pixels
        assert b[0, 2] < b[1, 0]  # no flips: red stays left of blue
        changed += not torch.equal(b, boxes)
    assert changed > 5  # the geometric augmentation does run


def test_no_flips_and_no_hue_jitter():
    pipeline = build_transforms(train=True).transform
    found = []

    def walk(t):
        found.append(t)
        for child in getattr(t, "transforms", []):
            walk(child)

    walk(pipeline)
    assert not any(isinstance(t, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)) for t in found)
    jitters = [t for t in found if isinstance(t, v2.ColorJitter)]
    assert jitters and all(j.hue is None for j in jitters)


def test_no_boxes_and_tensor_input():
    im, _ = _scene()
    for train in (False, True):
        x, b = build_transforms(train)(im, torch.zeros(0, 4))
        assert b.shape == (0, 4) and x.shape[0] == 3
    x, b = build_transforms(False)(torch.full((3, 10, 12), 255, dtype=torch.uint8), [[0, 0, 12, 10]])
    assert x.dtype == torch.float32 and x.max() == 1.0 and b.tolist() == [[0, 0, 12, 10]]


def test_keep_inside_clamps_and_keeps_every_box():
    boxes = torch.tensor([[-5.0, -5.0, 20.0, 8.0], [30.0, 5.0, 50.0, 9.0], [4.0, 4.0, 4.0, 4.0],
                          [10.0, 11.0, 3.0, 2.0]])
    out = keep_inside(boxes, (10, 20))
    assert out.tolist() == [[0, 0, 20, 8], [19, 5, 20, 9], [4, 4, 5, 5], [10, 9, 11, 10]]
