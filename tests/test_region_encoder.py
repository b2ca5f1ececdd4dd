"""Region encoders: geometry features, RoIAlign encoder on FPN features, VGG-19 (shared convolutions +
RoIAlign, and the seed's per-box crops)."""

import pytest
import torch

from regioncap.models.config import RegionEncoderConfig
from regioncap.models.region_encoder import (VGG_STRIDE, RoIRegionEncoder, VGG19CropEncoder,
                                             VGG19RegionEncoder, box_geometry)

CFG = RegionEncoderConfig(roi_output_size=3, hidden_dim=16, geometry_dim=4, dropout=0.0, vgg_crop_size=32)


def test_box_geometry_hand_computed():
    geo = box_geometry(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), (100, 50))  # H=100, W=50
    assert torch.allclose(geo, torch.tensor([[0.2, 0.2, 0.6, 0.6, 0.4, 0.4, 0.16]]))


def features(batch=2, c=8, size=64):
    torch.manual_seed(0)
    return {str(k): torch.randn(batch, c, size // 2 ** (k + 2), size // 2 ** (k + 2), requires_grad=True)
            for k in range(4)}


def test_roi_encoder_shapes_norm_and_gradients():
    enc = RoIRegionEncoder(8, ["0", "1", "2", "3"], CFG, joint_dim=6)
    feats = features()
    boxes = [torch.tensor([[0.0, 0, 64, 64], [5, 5, 20, 30]]), torch.zeros(0, 4)]  # second image: no boxes
    out = enc(feats, boxes, [(64, 64), (64, 64)])
    assert out.shape == (2, 6)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    out.sum().backward()
    assert feats["0"].grad is not None and all(p.grad is not None for p in enc.parameters())


def test_roi_encoder_uses_geometry():
    enc = RoIRegionEncoder(8, ["0", "1", "2", "3"], CFG, joint_dim=6)
    feats = {k: torch.zeros_like(v) for k, v in features(batch=1).items()}  # identical (zero) features
    out = enc(feats, [torch.tensor([[0.0, 0, 10, 10], [30, 30, 60, 50]])], [(64, 64)])
    assert not torch.allclose(out[0], out[1])


def test_vgg19_crop_encoder_crops_each_box():
    torch.manual_seed(0)
    enc = VGG19CropEncoder(CFG, joint_dim=6).eval()
    images = [torch.rand(3, 40, 50), torch.rand(3, 30, 30)]
    boxes = [torch.tensor([[0.0, 0, 50, 40], [10, 5, 30, 25]]), torch.tensor([[2.0, 2, 20, 28]])]
    with torch.no_grad():
        out = enc(images, boxes, [(40, 50), (30, 30)])
        alone = enc(images[1:], boxes[1:], [(30, 30)])
        empty = enc(images[:1], [torch.zeros(0, 4)], [(40, 50)])
    assert out.shape == (3, 6) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out[2], alone[0], atol=1e-5)
    assert empty.shape == (0, 6)


@pytest.fixture(scope="module")
def vgg_pair():
    """Both VGG-19 kinds with the same random weights (their state dicts have the same keys)."""
    torch.manual_seed(0)
    shared = VGG19RegionEncoder(CFG, joint_dim=6).eval()
    crops = VGG19CropEncoder(CFG, joint_dim=6).eval()
    crops.load_state_dict(shared.state_dict(), strict=True)
    return shared, crops


def test_vgg19_encoder_shapes_norm_edges_and_empty(vgg_pair):
    enc = vgg_pair[0]
    images = [torch.rand(3, 48, 64), torch.rand(3, 40, 40), torch.rand(3, 36, 52)]
    boxes = [torch.tensor([[0.0, 0, 64, 48], [40, 30, 64, 48], [-5, -5, 10, 10]]),  # whole image, corner, overhang
             torch.zeros(0, 4),  # no boxes: no row, and no VGG pass needed
             torch.tensor([[3.0, 4, 50, 36]])]
    with torch.no_grad():
        out = enc(images, boxes, [(48, 64), (40, 40), (36, 52)])
        alone = enc(images[2:], boxes[2:], [(36, 52)])
        empty = enc(images[1:2], [torch.zeros(0, 4)], [(40, 40)])
    assert out.shape == (4, 6) and torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(out[3], alone[0], atol=1e-5)  # rows in image order, images independent
    assert empty.shape == (0, 6)


def test_vgg19_encoder_gradients_and_tiny_images(vgg_pair):
    enc = VGG19RegionEncoder(CFG, joint_dim=6)
    enc.load_state_dict(vgg_pair[0].state_dict())
    image = torch.rand(3, 9, 120)  # thinner than VGG_STRIDE: padded, not an error
    out = enc([image], [torch.tensor([[0.0, 0, 120, 9], [100, 2, 118, 8]])], [(9, 120)])
    assert out.shape == (2, 6) and VGG_STRIDE == 16
    out.sum().backward()
    assert enc.features[0].weight.grad is not None and enc.project[-1].weight.grad is not None


def test_vgg19_kinds_differ_as_expected(vgg_pair):
    """Shared convolutions see context around a box (receptive field); a crop sees only the box."""
    shared, crops = vgg_pair
    torch.manual_seed(1)
    image = torch.rand(3, 64, 96)
    box = [torch.tensor([[8.0, 8, 40, 40]])]
    changed = image.clone()
    changed[:, :, 44:] = 1.0 - changed[:, :, 44:]  # right of the box: outside it, inside VGG's receptive field
    with torch.no_grad():
        s0, s1 = shared([image], box, [(64, 96)]), shared([changed], box, [(64, 96)])
        c0, c1 = crops([image], box, [(64, 96)]), crops([changed], box, [(64, 96)])
    assert torch.equal(c0, c1)  # the crop never samples those pixels
    assert (s0 - s1).abs().max() > 1e-6  # the shared feature map does (random VGG-19: a small change)
    assert not torch.allclose(s0, c0, atol=1e-3)  # same weights, different encoders


def test_vgg19_encoder_skips_the_last_maxpool(vgg_pair):
    shared, crops = vgg_pair
    assert len(shared.features) == len(crops.features) - 1
    assert isinstance(crops.features[-1], torch.nn.MaxPool2d) and isinstance(shared.features[-1], torch.nn.ReLU)


def striped_image(stripes: bool) -> torch.Tensor:
    """A grey 64x64 image whose box [16, 16, 48, 48] is plain red or red with white stripes."""
    img = torch.full((3, 64, 64), 0.5)
    img[:, 16:48, 16:48] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    if stripes:
        img[:, 16:48, 16:48:4] = 1.0
        img[:, 16:48, 17:48:4] = 1.0
    return img


def test_texture_branch_needs_the_images_and_a_roi_encoder():
    textured = RoIRegionEncoder(8, ["0", "1", "2", "3"], RegionEncoderConfig(**{**CFG.__dict__, "texture_dim": 12}),
                                joint_dim=6).eval()
    boxes = [torch.tensor([[16.0, 16, 48, 48]])]
    with pytest.raises(ValueError, match="texture branch"):
        textured(features(batch=1), boxes, [(64, 64)])
    out = textured(features(batch=1), boxes, [(64, 64)], images=[striped_image(True)], image_boxes=boxes)
    assert out.shape == (1, 6)
    out.sum().backward()
    assert all(p.grad is not None for p in textured.texture.parameters())
    with pytest.raises(ValueError, match="texture_dim"):
        RegionEncoderConfig(kind="vgg19", texture_dim=8).validate()


def test_texture_branch_reads_the_boxs_own_pixels():
    torch.manual_seed(0)
    enc = RoIRegionEncoder(8, ["0", "1", "2", "3"], RegionEncoderConfig(**{**CFG.__dict__, "texture_dim": 12}),
                           joint_dim=6).eval()
    feats, box = {k: torch.zeros_like(v) for k, v in features(batch=1).items()}, [torch.tensor([[16.0, 16, 48, 48]])]

    def encode(img):
        with torch.no_grad():
            return enc(feats, box, [(64, 64)], images=[img], image_boxes=box)

    plain, striped = encode(striped_image(False)), encode(striped_image(True))
    assert (plain - striped).abs().max() > 1e-3  # the stripes reach the region vector
    outside = striped_image(False)
    outside[:, :8, :] = 0.0  # pixels outside the box: same vector
    torch.testing.assert_close(encode(outside), plain)
    with torch.no_grad():  # the branch sees the box's luminance pattern, standardised: not its brightness
        texture = enc.texture([striped_image(True)], box)
        darker = enc.texture([striped_image(True) * 0.5], box)
    torch.testing.assert_close(texture, darker, rtol=1e-4, atol=1e-4)


def test_texture_layout_tells_where_in_the_box_the_statistics_do_not():
    """The same square in the box's top-left or bottom-right part: equal mean/std statistics, a different
    layout grid; with the layout's projection at zero the branch is the statistics-only branch."""
    from regioncap.models.region_encoder import TextureBranch

    torch.manual_seed(0)
    box = [torch.tensor([[0.0, 0, 128, 128]])]  # 4 px per grid cell
    top_left, bottom_right = torch.zeros(3, 128, 128), torch.zeros(3, 128, 128)
    top_left[:, 32:48, 32:48] = 1.0  # cells 8-11, out of the convolutions' reach of the border
    bottom_right[:, 64:80, 64:80] = 1.0  # 8 cells further: a multiple of the convolutions' stride 4
    stats, layout = TextureBranch(8, 6).eval(), TextureBranch(8, 6, layout=4).eval()
    layout.load_state_dict(stats.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(stats([top_left], box), stats([bottom_right], box), rtol=1e-4, atol=1e-5)
        assert (layout([top_left], box) - layout([bottom_right], box)).abs().max() > 1e-3
        layout.layout_proj.weight.zero_()
        torch.testing.assert_close(layout([top_left], box), stats([top_left], box))
    with pytest.raises(ValueError, match="texture_layout"):
        RegionEncoderConfig(texture_layout=4).validate()  # needs texture_dim
    RegionEncoderConfig(texture_dim=8, texture_layout=4).validate()
