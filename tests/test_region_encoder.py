"""Region encoders: geometry features, RoIAlign encoder on FPN features, VGG-19 crop encoder."""

import torch

from regioncap.models.config import RegionEncoderConfig
from regioncap.models.region_encoder import RoIRegionEncoder, VGG19RegionEncoder, box_geometry

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


def test_vgg19_encoder_crops_each_box():
    torch.manual_seed(0)
    enc = VGG19RegionEncoder(CFG, joint_dim=6).eval()
    images = [torch.rand(3, 40, 50), torch.rand(3, 30, 30)]
    boxes = [torch.tensor([[0.0, 0, 50, 40], [10, 5, 30, 25]]), torch.tensor([[2.0, 2, 20, 28]])]
    with torch.no_grad():
        out = enc(images, boxes, [(40, 50), (30, 30)])
        alone = enc(images[1:], boxes[1:], [(30, 30)])
        empty = enc(images[:1], [torch.zeros(0, 4)], [(40, 50)])
    assert out.shape == (3, 6) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out[2], alone[0], atol=1e-5)
    assert empty.shape == (0, 6)
