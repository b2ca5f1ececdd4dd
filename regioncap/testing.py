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
