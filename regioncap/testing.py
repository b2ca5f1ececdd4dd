"""A tiny random-weight model for tests, the load test and benchmarks: no data, no download, CPU only.

Its answers mean nothing; it exercises every code path (detector, encoders, decoder, files) fast.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_model(directory: Path, data: str = "none (random weights)") -> Path:
    """A random-initialised model saved to ``directory`` that answers in well under a second on a CPU;
    ``data`` is what its model card says it was trained on. Returns ``directory``."""
    import torch

    from regioncap.data.flickr30k import ENTITY_TYPES
    from regioncap.data.vocab import Vocabulary
    from regioncap.models.config import (CaptionerConfig, DetectorConfig, RegionCaptionerConfig,
                                         RegionEncoderConfig, TextEncoderConfig)
    from regioncap.models.model import RegionCaptioner

    torch.manual_seed(0)
    vocab = Vocabulary.build(["a large red circle with dots", "the small blue striped square",
                              "a green star next to a yellow triangle on a grey background"])
    config = RegionCaptionerConfig(
        vocab_size=len(vocab), entity_types=list(ENTITY_TYPES), joint_dim=32,
        detector=DetectorConfig(min_size=96, max_size=128, backbone_channels=[8, 8, 16, 16], fpn_channels=16,
                                box_head_dim=32),
        region_encoder=RegionEncoderConfig(hidden_dim=32, geometry_dim=8),
        text_encoder=TextEncoderConfig(embed_dim=16, hidden_dim=16),
        captioner=CaptionerConfig(embed_dim=16, hidden_dim=16, beam_size=2, max_len=6))
    RegionCaptioner(config, vocab).save_pretrained(directory, training={"data": data})
    return directory
