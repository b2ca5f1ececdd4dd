"""The training DataLoader: default workers, pinned memory on CUDA, and resuming without decoding skipped batches."""

import os

import pytest
import torch
from torch.utils.data import DistributedSampler

from regioncap.data import dataset as dataset_module
from regioncap.data import loader as loader_module
from regioncap.data.dataset import Flickr30kEntities
from regioncap.data.loader import ResumableBatchSampler, default_workers, make_train_loader
from regioncap.data.synthetic import generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    generate(root, images=10, seed=4, splits=(1, 0, 0))
    return root


def test_default_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert default_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun, 8 processes on a 16-CPU node
    assert default_workers() == 2
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_workers() == 2
    from train.train import get_args_parser, resolve_defaults

    args = resolve_defaults(get_args_parser().parse_args(["--data", "d", "--out", "o"]))
    assert args.workers is None and args.vocab_min_count == 5  # NeuralTalk's threshold
    assert make_train_loader([1, 2], 1, torch.utils.data.SequentialSampler([1, 2])).num_workers == 2


def test_pin_memory_only_for_cuda():
    sampler = torch.utils.data.SequentialSampler(range(4))
    assert make_train_loader(list(range(4)), 2, sampler, 0, torch.device("cuda", 0)).pin_memory
    assert make_train_loader(list(range(4)), 2, sampler, 0, "cuda").pin_memory
    assert not make_train_loader(list(range(4)), 2, sampler, 0, "cpu").pin_memory


def test_resume_skips_batches_without_loading_their_images(synth, monkeypatch):
    calls = []
    real = dataset_module.load_image
    monkeypatch.setattr(dataset_module, "load_image", lambda path, **kw: calls.append(path.stem) or real(path, **kw))
    ds = Flickr30kEntities(synth, "train")
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=3)
    loader = make_train_loader(ds, 3, sampler, workers=0)
    sampler.set_epoch(1)
    full = [[t["image_id"] for t in targets] for _, targets, _ in loader]
    assert len(full) == len(loader) == 4 and len(calls) == 10
    calls.clear()
    loader.batch_sampler.skip = 2  # resume at batch 2 of the same epoch
    resumed = [[t["image_id"] for t in targets] for _, targets, _ in loader]
    assert len(resumed) == 4 and resumed[:2] == [[], []] and resumed[2:] == full[2:]
    assert sorted(calls) == sorted(full[2] + full[3])  # the skipped batches' images were never decoded
    calls.clear()
    assert [[t["image_id"] for t in targets] for _, targets, _ in loader] == full  # the skip lasts one epoch
    assert len(calls) == 10


def test_resumable_batch_sampler_passes_set_epoch_on():
    sampler = DistributedSampler(list(range(8)), num_replicas=1, rank=0, shuffle=True, seed=0)
    bs = ResumableBatchSampler(sampler, 3)
    bs.set_epoch(5)
    assert sampler.epoch == 5 and len(bs) == 3
    bs.skip = 1
    batches = list(bs)
    assert batches[0] == [] and [len(b) for b in batches] == [0, 3, 2]


def test_an_empty_batch_collates():
    images, targets, text = loader_module.collate_fn([])
    assert images == [] and targets == [] and text["tokens"].shape[0] == 0 and text["sentence_image"].numel() == 0
