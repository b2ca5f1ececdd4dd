"""Inference helpers of :class:`~regioncap.models.model.RegionCaptioner` (its ``analyze`` calls them).

Which detector runs (the CPU fast path, or the eager detector when it is off, unavailable or its
export fails), the detections cut to a request, and the captions of region vectors: plain beam search,
reranked candidates, and boxes made up of several objects captioned with the objects' help.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import Tensor

from regioncap.models import onnx_detector
from regioncap.models.rerank import CaptionCandidate, group_vectors, rerank

logger = logging.getLogger(__name__)


def inference_detector(model):
    """The detector inference runs on: on the CPU, a COCO-size detector's backbone and box head run in
    ONNX Runtime and RoIAlign reads the FPN channels-last (:class:`~regioncap.models.onnx_detector.OnnxDetector`,
    same detections; ~2x torchvision's eager speed for mobilenet_v3_large_fpn on two quiet cores, 1.88-2.33x
    across runs of ``benchmarks/bench_inference.py --photo``); otherwise, or with
    ``REGIONCAP_ONNXRUNTIME=0``, the eager detector itself.

    The ONNX graphs are exported from the current weights on first use (the app does it while loading)
    and again whenever a weight changes (training, ``load_state_dict``, ``to``). An export or session
    that fails (an operator the exporter does not know, a model variant nobody tried) leaves the eager
    detector, with one warning in the log, until a weight changes.
    """
    if (model.device.type != "cpu" or model.config.detector.arch == "small"
            or os.environ.get("REGIONCAP_ONNXRUNTIME", "1") == "0" or not onnx_detector.available()):
        return model.detector
    key = tuple((id(p), p._version) for p in model.detector.parameters())
    cached_key, fast = getattr(model, "_onnx", (None, None))
    if cached_key != key or fast is None:  # None: a deep copy (sessions are not copied)
        try:
            with torch.inference_mode(False), torch.no_grad():
                fast = onnx_detector.OnnxDetector(model.detector.eval())
        except Exception as exc:  # noqa: BLE001 - any failure of the exporter or ONNX Runtime: stay eager
            logger.warning("the CPU fast path could not be built (%s: %s); the eager detector runs instead",
                           type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            fast = model.detector
            model.detector.eval()
        model._onnx = (key, fast)  # one assignment: a concurrent request sees the old pair or the new one
    return fast


def caption(model, v: Tensor, members: tuple[Tensor, Tensor] | None = None
             ) -> tuple[list[str], list[float], list[list[CaptionCandidate]]]:
    """Captions of region vectors v [R, D]: (texts, caption scores, candidates per region).

    Plain beam search when the config does not rerank (no candidates); otherwise the decoder's
    candidates, all encoded in one text-encoder call, chosen by :func:`~regioncap.models.rerank.rerank`.
    Regions made up of several objects (``members``: their vectors and owner rows, see
    :func:`~regioncap.models.rerank.group_members`) are captioned apart, with the objects' help
    (``captioner.group_weight``).
    """
    cfg = model.config.captioner
    if members is None or cfg.group_weight == 0:
        return caption_regions(model, v)
    grouped = torch.unique(members[1])  # sorted region rows
    rest = torch.ones(len(v), dtype=torch.bool)
    rest[grouped] = False
    texts, scores, cands = [""] * len(v), [0.0] * len(v), [[] for _ in range(len(v))]
    rows = rest.nonzero().flatten().tolist()
    owner = torch.searchsorted(grouped, members[1])  # position among the grouped regions
    vg = v[grouped.to(v.device)]
    proposed = None
    if not cfg.rerank:  # the others' beam search and the groups' candidates in one decoding loop
        both = torch.cat([vg, group_vectors(vg, members[0], owner)])
        (ids, logp), proposed = model.captioner.beam_search_and_candidates(v[rows], cfg.beam_size, both,
                                                                          cfg.group_beam_size)
        for k, i, lp in zip(rows, ids, logp.tolist()):
            texts[k], scores[k] = model.vocab.decode(i), lp
    elif rows:
        for k, t, sc, c in zip(rows, *caption_regions(model, v[rows])):
            texts[k], scores[k], cands[k] = t, sc, c
    ids, sc, per_region = rerank(model.captioner, model.text_encoder, vg, cfg.rerank_weight,
                                 cfg.rerank_length_alpha, cfg.group_beam_size,
                                 members=(members[0], owner, model.singular_ids), member_weight=cfg.group_weight,
                                 proposed=proposed)
    for k, i, s, per in zip(grouped.tolist(), ids, sc.tolist(), per_region):
        texts[k], scores[k] = model.vocab.decode(i), s
        cands[k] = [CaptionCandidate(model.vocab.decode(c[0]), *c[1:]) for c in per]
    return texts, scores, cands

def caption_regions(model, v: Tensor) -> tuple[list[str], list[float], list[list[CaptionCandidate]]]:
    """Captions of v [R, D] by the config's rule alone (plain beam search or reranking)."""
    cfg = model.config.captioner
    if not cfg.rerank:
        ids, logp = model.captioner.beam_search(v, cfg.beam_size)
        return [model.vocab.decode(i) for i in ids], logp.tolist(), [[] for _ in ids]
    ids, scores, per_region = rerank(model.captioner, model.text_encoder, v, cfg.rerank_weight,
                                     cfg.rerank_length_alpha, cfg.beam_size)
    cands = [[CaptionCandidate(model.vocab.decode(c[0]), *c[1:]) for c in per] for per in per_region]
    return [model.vocab.decode(i) for i in ids], scores.tolist(), cands

def detect(model, detector, images, image_list, features, max_regions, score_threshold, frames):
    """Detections per image (boxes [N, 4] work-tensor pixels, scores [N], labels), at most ``max_regions``.

    Boxes are clipped to the image's content (``frames``), so a padded strip never holds a region.
    """
    detections = detector.detect(image_list, features, [tuple(im.shape[-2:]) for im in images],
                                 max_detections=max_regions)
    out = []
    for d, (cw, ch, *_) in zip(detections, frames):
        boxes = torch.min(d["boxes"], d["boxes"].new_tensor([cw, ch, cw, ch]))
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (d["scores"] >= score_threshold)
        keep = torch.nonzero(ok).flatten()
        keep = keep[d["scores"][keep].argsort(descending=True)][:max_regions]
        labels = [model.config.entity_types[int(i) - 1] for i in d["labels"][keep]]
        out.append((boxes[keep], d["scores"][keep], labels))
    return out

