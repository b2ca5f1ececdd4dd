"""Image preparation for inference: reduce, convert, pad thin images, user boxes."""

import pytest
import torch
from PIL import Image

from regioncap.data.prepare import MAX_SIDE, fit, prepare_image, to_tensor, user_boxes, user_boxes_in_frame
from regioncap.errors import RegionCapError


def test_fit_keeps_the_aspect_ratio_and_never_enlarges():
    assert fit(4000, 3000, 2048) == (2048, 1536)
    assert fit(300, 1, 100) == (100, 1)
    assert fit(50, 40, 100) == (50, 40)


def test_a_big_photo_is_reduced_and_framed_in_its_own_pixels():
    tensor, frame = prepare_image(Image.new("RGB", (4000, 3000), (10, 20, 30)), detector_max_size=256)
    assert tuple(tensor.shape) == (3, 1536, MAX_SIDE) and frame == (2048, 1536, 4000, 3000)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([10, 20, 30]) / 255.0)


def test_a_thin_image_is_padded_right_and_bottom():
    tensor, frame = prepare_image(Image.new("RGB", (1, 300), (255, 255, 255)), detector_max_size=96)
    assert frame == (1, 300, 1, 300) and tensor.shape[2] == 25  # ceil(8 * 300 / 96)
    assert tensor[:, :, 0].min() == 1.0 and tensor[:, :, 1:].max() == 0.0


def test_tensor_input_is_checked():
    with pytest.raises(RegionCapError, match="FloatTensor"):
        to_tensor(torch.zeros(1, 5, 5))


def test_user_boxes_are_clamped_checked_and_scaled_into_the_frame():
    assert user_boxes([[-5, 2, 500, 30]], 100, 50).tolist() == [[0, 2, 100, 30]]
    assert user_boxes([], 10, 10).shape == (0, 4)
    with pytest.raises(RegionCapError, match="empty"):
        user_boxes([[5, 5, 5, 9]], 10, 10)
    with pytest.raises(RegionCapError, match="finite"):
        user_boxes([[0, 0, float("nan"), 3]], 10, 10)
    assert user_boxes_in_frame([[0, 0, 4000, 3000]], (2048, 1536, 4000, 3000)).tolist() == [[0, 0, 2048, 1536]]
