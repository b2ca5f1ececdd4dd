"""Shared fixtures: a tiny vocabulary, tiny configs and models (CPU, milliseconds), a hand-made batch.

Use in a test::

    def test_x(tiny_model, tiny_batch):
        images, targets, text = tiny_batch
        losses = tiny_model.train()(images, targets, text)

    def test_y(make_config, vocab):
        model = RegionCaptioner(make_config(captioner={"rnn": "lstm"}), vocab)
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TEXTS = [
    "a large red circle", "the small blue square", "a green striped triangle", "two yellow circles",
    "a grey background", "the dotted square", "a big purple star", "an orange checkered circle",
]


@pytest.fixture
def vocab():
    from regioncap.data.vocab import Vocabulary

    return Vocabulary.build(TEXTS)


def tiny_config(vocab_size: int, **sections):
    """A RegionCaptionerConfig small enough for CPU tests; ``sections`` override fields per section,
    e.g. ``captioner={"rnn": "lstm"}`` or ``joint_dim=8``."""
    from regioncap.data.flickr30k import ENTITY_TYPES
    from regioncap.models.config import (CaptionerConfig, DetectorConfig, RegionCaptionerConfig,
                                         RegionEncoderConfig, TextEncoderConfig)

    parts = {
        "detector": DetectorConfig(min_size=64, max_size=96, backbone_channels=[8, 8, 16, 16], fpn_channels=16,
                                   box_head_dim=32, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                                   rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                                   rpn_batch_size_per_image=32, box_batch_size_per_image=32),
        "region_encoder": RegionEncoderConfig(roi_output_size=3, hidden_dim=32, geometry_dim=8, dropout=0.0,
                                              vgg_crop_size=32),
        "text_encoder": TextEncoderConfig(embed_dim=8, hidden_dim=16, max_len=8),
        "captioner": CaptionerConfig(embed_dim=8, hidden_dim=16, max_len=6, dropout=0.0),
    }
    top = {}
    for key, value in sections.items():
        if key in parts:
            for field, v in value.items():
                setattr(parts[key], field, v)
        else:
            top[key] = value
    top.setdefault("joint_dim", 16)
    return RegionCaptionerConfig(vocab_size=vocab_size, entity_types=list(ENTITY_TYPES), **parts, **top)


@pytest.fixture
def make_config(vocab):
    """``make_config(**sections)`` -> tiny RegionCaptionerConfig for ``vocab``."""
    return lambda **sections: tiny_config(len(vocab), **sections)


@pytest.fixture
def make_model(vocab):
    """``make_model(seed=0, **sections)`` -> tiny RegionCaptioner in eval mode."""
    from regioncap.models.model import RegionCaptioner

    def make(seed: int = 0, **sections):
        torch.manual_seed(seed)
        return RegionCaptioner(tiny_config(len(vocab), **sections), vocab).eval()

    return make


@pytest.fixture
def tiny_model(make_model):
    return make_model()


def make_batch(vocab):
    """Two images: one with two boxes, one with none; three sentences, five phrases (one scene phrase)."""
    from regioncap.data.dataset import pad_sequences

    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 60, 80, generator=g), torch.rand(3, 48, 48, generator=g)]
    targets = [
        {"boxes": torch.tensor([[5.0, 5, 30, 30], [40, 10, 70, 50]]), "labels": torch.tensor([1, 4]),
         "region_boxes": torch.tensor([[0.0, 0, 80, 60], [5, 5, 30, 30], [40, 10, 70, 50]])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
         "region_boxes": torch.tensor([[0.0, 0, 48, 48]])},
    ]
    phrases = ["a large red circle", "the small blue square", "a red circle", "a grey background",
               "a grey background"]
    tokens, lengths = pad_sequences([torch.tensor(vocab.encode(p)) for p in phrases])
    text = {"tokens": tokens, "lengths": lengths,
            "region": torch.tensor([1, 2, 1, 0, 3]),  # index into the batch's 4 region boxes
            "sentence": torch.tensor([0, 0, 1, 1, 2]),
            "sentence_image": torch.tensor([0, 0, 1]),
            "boxed": torch.tensor([True, True, True, False, False])}
    return images, targets, text


@pytest.fixture
def tiny_batch(vocab):
    return make_batch(vocab)


@pytest.fixture
def saved_model(make_model, tmp_path):
    """A tiny model saved with save_pretrained; returns (model, folder)."""
    model = make_model()
    folder = tmp_path / "tiny-model"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture
def image_file(tmp_path):
    """A 96x72 RGB PNG with two coloured rectangles."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (96, 72), (128, 128, 128))
    d = ImageDraw.Draw(im)
    d.rectangle((10, 10, 40, 40), fill=(220, 30, 30))
    d.ellipse((50, 20, 85, 60), fill=(30, 30, 220))
    path = tmp_path / "scene.png"
    im.save(path)
    return path
