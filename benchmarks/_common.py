"""Shared pieces of the inference benchmarks: the seed's pipeline written plainly (the reference),
synthetic inputs, model loading, interleaved timing and process memory counters."""

from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_tensor

from regioncap.data import synthetic
from regioncap.data.flickr30k import ENTITY_TYPES
from regioncap.data.vocab import END, PAD, START, UNK, Vocabulary
from regioncap.models.config import RegionCaptionerConfig
from regioncap.models.model import RegionCaptioner


# -- the reference: the original design, written plainly ----------------------------------------
class Reference:
    """The seed's pipeline: one crop, one VGG-19 pass, one greedy GRU loop per region (batch size 1)."""

    def __init__(self, config: RegionCaptionerConfig, decoder_state: dict | None, device: torch.device):
        cap, d = config.captioner, config.joint_dim
        self.crop, self.max_len, self.device = config.region_encoder.vgg_crop_size, cap.max_len, device
        self.features = torchvision.models.vgg19(weights=None).features  # random weights: no download
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.fc = nn.Linear(512 * 7 * 7, d)
        self.embed = nn.Embedding(config.vocab_size, cap.embed_dim)
        self.cell = nn.GRUCell(cap.embed_dim + d, cap.hidden_dim)
        self.init_h = nn.Linear(d, cap.hidden_dim)
        self.out = nn.Linear(cap.hidden_dim, config.vocab_size)
        if decoder_state is not None:  # our decoder's weights, so both write captions of similar length
            self.embed.weight.data.copy_(decoder_state["embed.weight"])
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).data.copy_(decoder_state[f"rnn.{name}_l0"])
            for part in ("init_h", "out"):
                getattr(self, part).weight.data.copy_(decoder_state[f"{part}.weight"])
                getattr(self, part).bias.data.copy_(decoder_state[f"{part}.bias"])
        for m in (self.features, self.fc, self.embed, self.cell, self.init_h, self.out):
            m.to(device).eval()

    def encode(self, image: Image.Image, box) -> torch.Tensor:
        crop = image.crop(tuple(int(round(c)) for c in box)).resize((self.crop, self.crop), Image.BILINEAR)
        x = to_tensor(crop)[None].to(self.device) * 2.0 - 1.0  # [1, 3, S, S] in [-1, 1]
        v = self.fc(torch.flatten(self.pool(self.features(x)), 1))
        return F.normalize(v, dim=-1)  # [1, D]

    def decode(self, v: torch.Tensor) -> list[int]:
        h = torch.tanh(self.init_h(v))
        word, words = torch.tensor([START], device=self.device), []
        for step in range(self.max_len):
            h = self.cell(torch.cat([self.embed(word), v], dim=1), h)
            logp = F.log_softmax(self.out(h), dim=-1)[0]
            logp[[PAD, START, UNK]] = float("-inf")
            if step == 0:
                logp[END] = float("-inf")
            best = int(logp.argmax())
            if best == END:
                break
            words.append(best)
            word = torch.tensor([best], device=self.device)
        return words

    def __call__(self, image: Image.Image, boxes: list[list[float]]) -> list[list[int]]:
        with torch.inference_mode():
            vectors = [self.encode(image, b) for b in boxes]
            return [self.decode(v) for v in vectors]


# -- inputs ---------------------------------------------------------------------------------------
def scene(seed: int, index: int, size: int) -> Image.Image:
    """Synthetic scene ``index`` of set ``seed``, scaled so that its long side is ``size`` px."""
    im = synthetic.make_example(seed, index, str(index))[0]
    scale = size / max(im.size)
    return im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))), Image.BILINEAR)


def make_images(n: int, size: int) -> list[Image.Image]:
    return [scene(7, 10_000 + i, size) for i in range(n)]


def make_boxes(image: Image.Image, n: int, seed: int) -> list[list[float]]:
    """``n`` boxes, 10-60 % of the image's width/height each, at least 4 px; same seed -> same boxes."""
    g = torch.Generator().manual_seed(seed)
    w, h = image.size
    r = torch.rand(n, 4, generator=g).tolist()
    boxes = []
    for a, b, c, d in r:
        bw, bh = max(4.0, w * (0.1 + 0.5 * a)), max(4.0, h * (0.1 + 0.5 * b))
        x, y = (w - bw) * c, (h - bh) * d
        boxes.append([round(x, 1), round(y, 1), round(x + bw, 1), round(y + bh, 1)])
    return boxes


def synthetic_vocab() -> Vocabulary:
    words = (list(synthetic.SHAPE_TYPES) + list(synthetic.PLURAL.values()) + list(synthetic.COLOURS)
             + list(synthetic.SIZES) + synthetic.PATTERNS + [b[0] for b in synthetic.BACKGROUNDS]
             + [n for b in synthetic.BACKGROUNDS for n in b[1]] + ["a", "an", "the", "on", "in", "with", "two"])
    return Vocabulary.build(words)


def load_model(path: str | None, device: torch.device) -> tuple[RegionCaptioner, str]:
    if path:
        return RegionCaptioner.from_pretrained(path, device=device), str(path)
    torch.manual_seed(0)
    vocab = synthetic_vocab()
    config = RegionCaptionerConfig(vocab_size=len(vocab), entity_types=list(ENTITY_TYPES))
    return RegionCaptioner(config, vocab, download=False).to(device).eval(), "random weights, default config"


def vgg_twin(model: RegionCaptioner, device: torch.device, kind: str = "vgg19") -> RegionCaptioner:
    """The same model with region_encoder.kind ``kind`` (random VGG, no download); the rest copied."""
    config = RegionCaptionerConfig.from_dict(model.config.to_dict())
    config.region_encoder.kind, config.region_encoder.pretrained = kind, False
    twin = RegionCaptioner(config, model.vocab, download=False)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("region_encoder.")}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("region_encoder.") for k in missing), (missing, unexpected)
    return twin.to(device).eval()


# -- memory ---------------------------------------------------------------------------------------
def rss_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def interleaved(runs: dict, repeats: int, warmup: int, sync=lambda: None) -> dict:
    """Time ``{name: fn() -> dict of notes}`` round-robin: each repeat runs every fn once, rotating the
    start; returns ``{name: {"median_ms", "min_ms", "samples", "median_<note>"...}}`` (warm-up dropped)."""
    names = list(runs)
    times, notes = {k: [] for k in names}, {k: [] for k in names}
    for rep in range(warmup + repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            sync()
            t0 = time.perf_counter()
            out = runs[name]() or {}
            sync()
            if rep >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
                notes[name].append(out)
    return {k: {"median_ms": statistics.median(t), "min_ms": min(t), "samples": len(t),
                **{f"median_{f}": statistics.median(o[f] for o in notes[k]) for f in (notes[k][0] if notes[k] else {})}}
            for k, t in times.items() if t}


# -- detector weights that behave like trained ones --------------------------------------------
def calibrate_detector(detector: nn.Module, images: list[torch.Tensor], logit_std: float = 2.0) -> None:
    """Give a randomly initialised torchvision Faster R-CNN the output statistics of a trained one.

    Random weights make every proposal score alike (BatchNorm's running statistics are 0/1, the heads
    start at std 0.01), so "same order of scores" would compare ties. This sets BatchNorm statistics from
    ``images`` (FloatTensor[3, H, W] in [0, 1]) and rescales the RPN's objectness and the box predictor so
    their logits spread with std ``logit_std`` and box deltas with std 1: a stand-in for COCO weights,
    which cannot be downloaded here.
    """
    bns = [m for m in detector.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum, m.training = None, True  # cumulative average over the images
            image_list, _ = detector.transform(images)
            detector.backbone(image_list.tensors)
            for m in bns:
                m.momentum, m.training = 0.1, False
        detector.eval()
        image_list, _ = detector.transform(images)
        features = detector.backbone(image_list.tensors)
        rpn_head = detector.rpn.head
        objectness, deltas = rpn_head(list(features.values()))
        _rescale(rpn_head.cls_logits, torch.cat([o.flatten() for o in objectness]), logit_std)
        _rescale(rpn_head.bbox_pred, torch.cat([d.flatten() for d in deltas]), 1.0)
        proposals, _ = detector.rpn(image_list, features)
        roi = detector.roi_heads
        h = roi.box_head(roi.box_roi_pool(features, proposals, image_list.image_sizes))
        scores, boxes = roi.box_predictor(h)
        _rescale(roi.box_predictor.cls_score, scores, logit_std)
        _rescale(roi.box_predictor.bbox_pred, boxes, 1.0)


def _rescale(layer: nn.Module, output: torch.Tensor, std: float) -> None:
    """Scale ``layer``'s weight so that its ``output`` (computed with it) would have standard deviation ``std``."""
    layer.weight.mul_(std / float(output.std().clamp_min(1e-12)))  # the bias starts at 0
    torch.nn.init.normal_(layer.bias, std=std / 4)
