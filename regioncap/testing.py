"""A tiny random-weight model for tests, the load test and benchmarks: no data, no download, CPU only.

Its answers mean nothing; it exercises every code path (detector, encoders, decoder, files) fast.
"""

from __future__ import annotations

from pathlib import Path


def tiny_model(vocab, seed: int = 0):
    """A random-initialised ``RegionCaptioner`` for ``vocab`` that answers in well under a second on a CPU."""
    import torch

    from regioncap.data.flickr30k import ENTITY_TYPES
    from regioncap.models.config import (CaptionerConfig, DetectorConfig, RegionCaptionerConfig,
                                         RegionEncoderConfig, TextEncoderConfig)
    from regioncap.models.model import RegionCaptioner

    torch.manual_seed(seed)
    config = RegionCaptionerConfig(
        vocab_size=len(vocab), entity_types=list(ENTITY_TYPES), joint_dim=32,
        detector=DetectorConfig(min_size=96, max_size=128, backbone_channels=[8, 8, 16, 16], fpn_channels=16,
                                box_head_dim=32),
        region_encoder=RegionEncoderConfig(hidden_dim=32, geometry_dim=8),
        text_encoder=TextEncoderConfig(embed_dim=16, hidden_dim=16),
        captioner=CaptionerConfig(embed_dim=16, hidden_dim=16, beam_size=2, max_len=6))
    return RegionCaptioner(config, vocab)


def make_tiny_model(directory: Path, data: str = "none (random weights)") -> Path:
    """:func:`tiny_model` with a small shapes vocabulary, saved to ``directory``; ``data`` is what its
    model card says it was trained on. Returns ``directory``."""
    from regioncap.data.vocab import Vocabulary

    vocab = Vocabulary.build(["a large red circle with dots", "the small blue striped square",
                              "a green star next to a yellow triangle on a grey background"])
    tiny_model(vocab).save_pretrained(directory, training={"data": data})
    return directory


def scene_frames(seed: int = 2026, index: int = 81, size: tuple[int, int] = (640, 480), pan: int = 16):
    """A camera's view of shapes-preset scene ``index`` of set ``seed`` (one the demo model knows): frames of
    ``size`` panning ``pan`` px right and back again (so a looped video never jumps), and the shapes the
    scene holds (from its sentences). Returns (list of PIL images, set of shape names)."""
    import re

    from PIL import Image

    from regioncap.data.synthetic import shapes
    from regioncap.data.synthetic.world import PLURAL, SHAPE_SYNONYMS, SHAPE_TYPES

    image, _, sentences = shapes.make_example(seed, index, "live")
    words = {w: s for s in SHAPE_TYPES for w in [s, PLURAL[s], *SHAPE_SYNONYMS.get(s, [])]}
    shown = {words[w] for w in re.findall(r"[a-z]+", sentences) if w in words}
    width, height = size
    scale = max((width + pan) / image.width, height / image.height)
    big = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    top = (big.height - height) // 2
    return [big.crop((x, top, x + width, top + height)) for x in list(range(pan)) + list(range(pan, 0, -1))], shown


def write_y4m(frames, path, fps: int = 10) -> Path:
    """PIL frames (one size, even sides) as a y4m video Chromium can play as its camera
    (``--use-file-for-fake-video-capture``): a text header, then per frame the Y plane and the half-size
    Cb and Cr planes (YUV 4:2:0, JPEG-range YCbCr). Returns ``path``."""
    from PIL import Image

    width, height = frames[0].size
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            y, cb, cr = frame.convert("RGB").convert("YCbCr").split()
            f.write(b"FRAME\n" + y.tobytes())
            for plane in (cb, cr):
                f.write(plane.resize((width // 2, height // 2), Image.Resampling.BOX).tobytes())
    return Path(path)
