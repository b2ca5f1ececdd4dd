"""The full model learns: on a handful of synthetic images every loss falls well below its start."""

import torch

from regioncap.data.dataset import Flickr30kEntities, collate_fn
from regioncap.data.synthetic import generate
from regioncap.data.vocab import Vocabulary
from regioncap.models.model import RegionCaptioner
from tests.conftest import tiny_config


def test_all_losses_fall_on_a_few_synthetic_images(tmp_path):
    generate(tmp_path, images=5, seed=21, splits=(1.0, 0.0, 0.0))
    data = Flickr30kEntities(tmp_path, "train")
    vocab = Vocabulary.build(data.phrase_texts())
    data.vocab = vocab
    images, targets, text = collate_fn([data[i] for i in range(len(data))])
    torch.manual_seed(0)
    config = tiny_config(len(vocab), align_reduction="mean",
                         detector={"min_size": 96, "max_size": 128},
                         captioner={"embed_dim": 16, "hidden_dim": 32})
    model = RegionCaptioner(config, vocab).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(50):
        losses = model(images, targets, text)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert set(first) == {"loss_detector", "loss_align", "loss_caption"}
    for name in first:
        assert last[name] < 0.5 * first[name], (name, first[name], last[name])
