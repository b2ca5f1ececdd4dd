"""CPU inference fast path: the detector's two heavy networks in ONNX Runtime, RoIAlign channels-last.

On a two-core CPU a COCO-size Faster R-CNN spends its time in the backbone + FPN (once per image), RoIAlign
over 1,000 proposals (torchvision's CPU kernel: one thread, one scattered read per channel) and the box head
+ predictor (TwoMLPHead over the 1,000 proposals). :class:`OnnxDetector` exports the backbone with the RPN
head, and the box head + predictor, with the model's own weights, to ONNX once per process (torch.export's
exporter, ``dynamo=True``) and runs them in ONNX Runtime (fused convolutions, its own thread pool); RoIAlign
reads the FPN maps channels-last (:func:`roi_align_rows`: the kernel's sample positions and weights, the
sums done by ``embedding_bag`` on every core) and feeds the box head rows in that layout (fc6's columns
reordered once). The RPN (:func:`propose`) and ``postprocess_detections`` are torchvision's steps, in its
order, with two savings that change no result: only the anchors that survive the per-level top-n are
decoded, and NMS stops once it has kept as many boxes as are returned (:func:`batched_nms_top`). The
transform, anchors, box coders and the mapping back to image pixels are torchvision's code on the
:class:`~regioncap.models.detector.RegionDetector`'s modules. It is fp32 throughout; only the order of
additions differs, so the detections are the eager model's (``tests/test_onnx_detector.py``; measured in
``benchmarks/bench_inference.py --photo``).

It has the same ``features`` / ``detect`` calls as ``RegionDetector``, and is used for inference
on the CPU only; training, CUDA, a missing ``onnxruntime`` / ``onnxscript`` and a failed export take the
eager detector (``regioncap.models.inference.inference_detector``).
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.export import Dim
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import MultiScaleRoIAlign, batched_nms, clip_boxes_to_image, remove_small_boxes
from torchvision.ops.boxes import _batched_nms_vanilla
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

logger = logging.getLogger(__name__)

# Proposals pooled and run through the box head at a time. 1,000 proposals' rows at once are 50 MB: more
# than glibc's largest mmap threshold (32 MB), so every call mapped fresh pages and faulted them in
# (~12,000 page faults, ~20 ms of system time per photo); a 512-box block (25.7 MB) is reused from the
# heap. Smaller blocks cost fc6 more than they save (256: 307 vs 278 ms per analyze() on the benchmark's
# photos, interleaved medians).
BOX_HEAD_BLOCK = 512
# The smallest side the backbone graph takes (see OrtModule); smaller padded inputs run eagerly.
MIN_SIDE = 65


def available() -> bool:
    """Whether ``onnxruntime`` and ``onnxscript`` (torch's ONNX exporter needs it) can be imported; they are
    optional: without them inference stays eager."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


class _Outputs(nn.Module):
    """``module``'s outputs as a flat tuple of tensors (what an ONNX graph returns)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor):
        out = self.module(x)
        return tuple(out.values()) if isinstance(out, dict) else out


class OrtModule:
    """One ``nn.Module`` exported to ONNX (in memory) and run by an ONNX Runtime session.

    Args:
        module: the network (eval mode, fp32); its forward takes one tensor and returns a tensor,
            a tuple of tensors or a dict of tensors (returned as a dict with the same keys).
        example: an input of the right rank; ``dynamic`` names its dimensions that may vary.
    """

    def __init__(self, module: nn.Module, example: Tensor, dynamic: dict[int, str], threads: int):
        import onnxruntime as ort

        with torch.no_grad():
            out = module(example)
        self.keys = list(out) if isinstance(out, dict) else None
        n_out = len(out) if isinstance(out, (dict, tuple, list)) else 1
        names = [f"out{k}" for k in range(n_out)]
        # torch.export's exporter (dynamo=True; the TorchScript one is deprecated in torch 2.14). A dimension
        # of size 1 would be specialised (mobilenet's coarsest FPN level is 1 cell below 65 px): ``dynamic``
        # dimensions start at 2 and the sides at MIN_SIDE (:class:`OnnxDetector` runs smaller inputs eagerly)
        shapes = ({axis: Dim(name, min=MIN_SIDE if axis >= 2 else 2) for axis, name in dynamic.items()},)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(_Outputs(module).eval(), (example,), None, input_names=["x"],
                                        output_names=names, dynamic_shapes=shapes, opset_version=18, dynamo=True,
                                        verbose=False)
        module.eval()  # exporting may leave the wrapper's modules in another mode
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # Worker threads spin between the graph's operators (no wake-up latency per operator) but stop when
        # a run ends: left spinning (~40 ms after each run, measured) they took the cores from torch's own ops
        # between the two sessions (1.45x vs 1.71x eager end to end); never spinning cost 3-8 ms per photo.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(program.model_proto.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x: Tensor):
        outputs = [torch.from_numpy(o) for o in self.session.run(None, {"x": x.detach().contiguous().numpy()})]
        if self.keys is not None:
            return OrderedDict(zip(self.keys, outputs))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def roi_align_rows(table: Tensor, size: tuple[int, int], rois: Tensor, spatial_scale: float, output_size: int,
                   sampling_ratio: int) -> Tensor:
    """torchvision's ``roi_align`` (``aligned=False``, ``sampling_ratio`` > 0) on a channels-last feature map.

    torchvision's CPU kernel walks the [B, C, H, W] map channel by channel, one scattered read per
    channel, sample and neighbour, on one thread (129 ms for 1,000 proposals of a 500x375 photo). Here each
    bin is the weighted sum of the map's rows at its samples' bilinear neighbours (``sampling_ratio``^2
    samples x 4 neighbours, weights w / count), and ``embedding_bag`` computes those sums as contiguous
    C-wide rows on every core. The sample positions, the out-of-map rule and the neighbour weights are
    the kernel's own (``roi_align_kernel.cpp``); only the order of the additions differs.

    Args:
        table: FloatTensor[B * H * W, C], the map in channels-last order.  size: (H, W).
        rois: FloatTensor[K, 5] ``(batch index, x1, y1, x2, y2)`` in input pixels.

    Returns:
        FloatTensor[K, output_size ** 2, C]: bins in row-major order, channels last.
    """
    height, width = size
    s, g, k = output_size, sampling_ratio, len(rois)
    batch = rois[:, 0].long()
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale).unbind(1)
    bin_w, bin_h = (x2 - x1).clamp(min=1.0) / s, (y2 - y1).clamp(min=1.0) / s
    bins = torch.arange(s, dtype=rois.dtype)
    offsets = torch.arange(g, dtype=rois.dtype) + 0.5

    def axis(start, bin_size, limit):  # per bin, its samples' two neighbours: indices and weights [K, s, 2g]
        c = start[:, None, None] + bins[None, :, None] * bin_size[:, None, None] \
            + offsets[None, None, :] * bin_size[:, None, None] / g
        inside = (c >= -1.0) & (c <= limit)
        c = c.clamp(min=0.0)
        low = c.long()
        edge = low >= limit - 1
        low = torch.where(edge, limit - 1, low)
        high = torch.where(edge, low, low + 1)
        c = torch.where(edge, low.to(c.dtype), c)
        frac = c - low
        weights = torch.stack([1.0 - frac, frac], dim=-1) * inside[..., None]
        return torch.stack([low, high], dim=-1).flatten(2), weights.flatten(2)

    ys, wy = axis(y1, bin_h, height)
    xs, wx = axis(x1, bin_w, width)
    ys = ys * width + (batch * (height * width))[:, None, None]
    # bag (bin row, bin column): every (sample, neighbour) row combination with every column one;
    # two broadcasts over [K, s, s, 2g, 2g] with 2g-long inner runs
    index = (ys[:, :, None, :, None] + xs[:, None, :, None, :]).reshape(k * s * s, 4 * g * g)
    weight = ((wy / (g * g))[:, :, None, :, None] * wx[:, None, :, None, :]).reshape(k * s * s, 4 * g * g)
    rows = F.embedding_bag(index, table, per_sample_weights=weight.to(table.dtype), mode="sum")
    return rows.view(k, s * s, table.shape[1])


def pool_rows(pool: MultiScaleRoIAlign, features: dict[str, Tensor], boxes: list[Tensor],
              image_sizes: list[tuple[int, int]], block: int | None = None) -> tuple[Iterator[Tensor], Tensor]:
    """``pool(features, boxes, image_sizes)`` channels-last, level by level: (rows, order).

    ``rows`` yields FloatTensor[n, s * s, C] blocks, level by level and at most ``block`` boxes each
    (default: a level at a time); concatenated they hold the pooled features of the boxes ``order``
    (LongTensor[N], indices into the concatenated boxes) as :func:`roi_align_rows` gives them: row j
    is ``pool(...)[order[j]]`` with bins and channels swapped. Torchvision's ``MultiScaleRoIAlign``
    also zero-fills a [N, C, s, s] result and scatters each level's rows into it, and a concatenation
    would copy them again (50 MB for 1,000 proposals); the box head takes the blocks one by one instead,
    each pooled when it is needed.
    """
    x = _filter_input(features, pool.featmap_names)
    if pool.scales is None or pool.map_levels is None:
        pool.scales, pool.map_levels = _setup_scales(x, image_sizes, pool.canonical_scale, pool.canonical_level)
    rois = _convert_to_roi_format(boxes)
    levels = pool.map_levels(boxes) if len(x) > 1 else torch.zeros(len(rois), dtype=torch.int64)
    order = torch.argsort(levels, stable=True)
    counts = torch.bincount(levels, minlength=len(x)).tolist()

    def blocks():
        start = 0
        for level, (feature, scale) in enumerate(zip(x, pool.scales)):
            idx = order[start:start + counts[level]]
            start += counts[level]
            if not len(idx):
                continue
            # a contiguous copy: embedding_bag over the permuted view took 144 ms instead of 23
            table = feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1]).contiguous()
            step = block or len(idx)
            for first in range(0, len(idx), step):
                yield roi_align_rows(table, tuple(feature.shape[-2:]), rois[idx[first:first + step]], scale,
                                     pool.output_size[0], pool.sampling_ratio)

    return blocks(), order


def batched_nms_top(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, k: int) -> Tensor:
    """``torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)[:k]`` without suppressing past the k-th kept.

    Greedy NMS keeps or drops a box by the higher-scoring boxes of its own class alone, so NMS over the
    m best boxes decides each of them as NMS over all would; once k of them are kept, those are the
    first k of the full answer. m starts at 2k and grows fourfold while fewer are kept (all boxes at
    worst). The per-class loop is torchvision's own for inputs this large (``_batched_nms_vanilla``);
    for small inputs (<= 1,000 boxes) torchvision's coordinate offset trick runs on all of them, as it
    would in ``batched_nms``. Measured on the benchmark's photos (random heads): 6,384 class-box pairs
    over the score threshold, 20 ms of NMS per image in ``postprocess_detections``; the first 100 kept
    are the 100 best pairs.

    Equal scores: torchvision orders them by its sorts, which are not stable (which of two tied boxes
    is kept, and the order of tied boxes kept), so its answer depends on every box. When two of the
    boxes scoring at least the k-th kept one tie, or that one ties with any other box, the answer is
    torchvision's own call on all of them; ties below the cut change nothing and keep the short way.
    """
    n = len(scores)
    if boxes.numel() <= 4000:  # torchvision's own threshold between its two ways
        return batched_nms(boxes, scores, idxs, iou_threshold)[:k]
    order = scores.argsort(descending=True, stable=True)
    m = min(n, 2 * k)
    while True:
        top = order[:m]
        keep = _batched_nms_vanilla(boxes[top], scores[top], idxs[top], iou_threshold)
        if len(keep) >= k or m == n:
            break
        m = min(n, 4 * m)
    kept = top[keep[:k]]
    # the sorted scores down to the last kept one, and the next below it: a tie is two equal neighbours
    # (a box beyond the first m scores lower than every box in them unless it ties with the m-th)
    last = int(keep[:k].max())  # positions in score order
    head = scores[order[:last + 2]]
    if bool((head[1:] == head[:-1]).any()):
        return batched_nms(boxes, scores, idxs, iou_threshold)[:k]
    return kept


def propose(rpn: nn.Module, image_list: ImageList, features: list[Tensor], logits: list[Tensor],
            deltas: list[Tensor]) -> list[Tensor]:
    """torchvision's ``RegionProposalNetwork.forward`` in eval mode, given its head's outputs.

    The same proposals, computed with less work: only the anchors that ``filter_proposals`` keeps
    (``pre_nms_top_n`` per level) are decoded, instead of all (28,815 on a 500x375 photo), and NMS
    stops at ``post_nms_top_n`` kept (:func:`batched_nms_top`).
    """
    anchors = rpn.anchor_generator(image_list, features)
    per_level = [o[0].numel() for o in logits]  # A * H * W anchors per level
    objectness, deltas = concat_box_prediction_layers(logits, deltas)
    objectness = objectness.reshape(len(anchors), -1)
    deltas = deltas.reshape(len(anchors), -1, 4)
    levels = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(per_level)])
    top_n = rpn._get_top_n_idx(objectness, per_level)
    proposals = []
    for anchor, obj, delta, top, size in zip(anchors, objectness, deltas, top_n, image_list.image_sizes):
        boxes = clip_boxes_to_image(rpn.box_coder.decode_single(delta[top], anchor[top]), size)
        scores, level = torch.sigmoid(obj[top]), levels[top]
        keep = remove_small_boxes(boxes, rpn.min_size)
        boxes, scores, level = boxes[keep], scores[keep], level[keep]
        keep = torch.where(scores >= rpn.score_thresh)[0]
        boxes, scores, level = boxes[keep], scores[keep], level[keep]
        proposals.append(boxes[batched_nms_top(boxes, scores, level, rpn.nms_thresh, rpn.post_nms_top_n())])
    return proposals


def postprocess_detections(heads: nn.Module, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
                           image_shapes: list[tuple[int, int]]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """torchvision's ``RoIHeads.postprocess_detections`` with NMS stopped at ``detections_per_img`` kept."""
    num_classes = class_logits.shape[-1]
    counts = [len(p) for p in proposals]
    pred_boxes = heads.box_coder.decode(box_regression, proposals).split(counts)
    pred_scores = F.softmax(class_logits, -1).split(counts)
    out_boxes, out_scores, out_labels = [], [], []
    for boxes, scores, shape in zip(pred_boxes, pred_scores, image_shapes):
        boxes = clip_boxes_to_image(boxes, shape)[:, 1:].reshape(-1, 4)  # background dropped
        labels = torch.arange(num_classes).view(1, -1).expand_as(scores)[:, 1:].reshape(-1)
        scores = scores[:, 1:].reshape(-1)
        inds = torch.where(scores > heads.score_thresh)[0]
        boxes, scores, labels = boxes[inds], scores[inds], labels[inds]
        keep = remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms_top(boxes, scores, labels, heads.nms_thresh, heads.detections_per_img)
        out_boxes.append(boxes[keep])
        out_scores.append(scores[keep])
        out_labels.append(labels[keep])
    return out_boxes, out_scores, out_labels


class _RowsBoxNet(nn.Module):
    """Box head + predictor taking channels-last pooled rows [N, s * s, C]: the same function as
    ``predictor(head(pooled))`` on [N, C, s, s]. A ``TwoMLPHead``'s fc6 gets its input columns
    reordered (bins, then channels) once; other heads get the rows transposed back."""

    def __init__(self, head: nn.Module, predictor: nn.Module, channels: int, size: int):
        super().__init__()
        self.head, self.predictor, self.channels, self.size = head, predictor, channels, size
        self.fc6 = None
        if isinstance(head, TwoMLPHead):
            w = head.fc6.weight.detach()
            self.fc6 = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                self.fc6.weight.copy_(w.view(w.shape[0], channels, size * size).transpose(1, 2).reshape_as(w))
                self.fc6.bias.copy_(head.fc6.bias)

    def forward(self, rows: Tensor):
        if self.fc6 is not None:
            h = torch.relu(self.head.fc7(torch.relu(self.fc6(rows.flatten(1)))))
        else:
            h = self.head(rows.transpose(1, 2).reshape(-1, self.channels, self.size, self.size))
        return self.predictor(h)


class _BackboneAndRPNHead(nn.Module):
    """backbone + FPN, then the RPN head on every level: one graph, a flat tuple (levels, logits, deltas).
    ``names`` are the levels' names, known once it has run (the export runs it)."""

    def __init__(self, backbone: nn.Module, rpn_head: nn.Module):
        super().__init__()
        self.backbone, self.rpn_head = backbone, rpn_head
        self.names: list[str] = []

    def forward(self, x: Tensor):
        features = self.backbone(x)
        self.names = list(features)
        logits, deltas = self.rpn_head(list(features.values()))
        return (*features.values(), *logits, *deltas)


class FeatureMaps(OrderedDict):
    """The FPN levels by name (what ``RegionDetector.features`` returns), carrying the RPN head's outputs
    (``rpn_head``: per level logits and box deltas) computed in the same ONNX Runtime run."""

    rpn_head: tuple[list[Tensor], list[Tensor]] | None = None


class OnnxDetector:
    """A :class:`~regioncap.models.detector.RegionDetector` whose backbone (with the RPN head) and box head run in
    ONNX Runtime.

    Build it from an eval-mode detector on the CPU; later changes to the detector's weights are not
    seen (the model drops it when it trains or moves, see ``RegionCaptioner._inference_detector``).
    """

    def __init__(self, detector: nn.Module, threads: int | None = None):
        threads = threads or torch.get_num_threads()
        self.detector = detector
        side = detector.transform.min_size[-1]
        heads = detector.roi_heads
        graph = _BackboneAndRPNHead(detector.backbone, detector.rpn.head).eval()
        # one image per run: a graph traced at batch 1 keeps batch-1 shapes inside (mobilenet's SE blocks)
        self.backbone = OrtModule(graph, torch.rand(1, 3, side, side), {2: "height", 3: "width"}, threads)
        self.levels = graph.names
        pool = heads.box_roi_pool
        self.box_net = None  # roi_align_rows reproduces torchvision's fixed sampling grid only: else eager
        if pool.sampling_ratio > 0 and pool.output_size[0] == pool.output_size[1]:
            size, channels = pool.output_size[0], detector.backbone.out_channels
            box_net = _RowsBoxNet(heads.box_head, heads.box_predictor, channels, size).eval()
            self.box_net = OrtModule(box_net, torch.rand(2, size * size, channels), {0: "proposals"}, threads)

    def __deepcopy__(self, memo):
        return None  # ONNX Runtime sessions cannot be copied; a copied model exports its own on first use

    def features(self, images: list[Tensor], targets=None) -> tuple[ImageList, FeatureMaps, None]:
        """``RegionDetector.features`` for inference: transform (torchvision's), then backbone and RPN head
        (ONNX Runtime)."""
        image_list, _ = self.detector.transform(images)
        if min(image_list.tensors.shape[-2:]) < MIN_SIDE:  # under what the graph takes: torchvision's modules
            return image_list, FeatureMaps(self.detector.backbone(image_list.tensors)), None
        n = len(self.levels)
        # the padded batch, image by image; then each output concatenated over the images
        runs = [self.backbone(x[None]) for x in image_list.tensors]
        outputs = [torch.cat(o) if len(runs) > 1 else o[0] for o in zip(*runs)]
        features = FeatureMaps(zip(self.levels, outputs[:n]))
        features.rpn_head = (outputs[n:2 * n], outputs[2 * n:])
        return image_list, features, None

    def detect(self, image_list: ImageList, features: dict[str, Tensor], original_sizes: list[tuple[int, int]],
               max_detections: int | None = None) -> list[dict[str, Tensor]]:
        """``RegionDetector.detect``: the RPN (:func:`propose`), RoIAlign (:func:`pool_rows`), the ONNX box head and
        :func:`postprocess_detections`; torchvision's box coders, anchors and mapping back to image pixels."""
        det = self.detector
        heads = det.roi_heads_for(max_detections)
        levels = list(features.values())
        head = getattr(features, "rpn_head", None) or det.rpn.head(levels)
        proposals = propose(det.rpn, image_list, levels, *head)
        class_logits, box_regression = self._box_net(heads, features, proposals, image_list.image_sizes)
        boxes, scores, labels = postprocess_detections(heads, class_logits, box_regression, proposals,
                                                       image_list.image_sizes)
        detections = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        return det.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def _box_net(self, heads, features, proposals: list[Tensor], image_sizes) -> tuple[Tensor, Tensor]:
        """Box head + predictor over every proposal: (class_logits [N, K], box_regression [N, 4K])."""
        if self.box_net is None or not sum(len(p) for p in proposals):  # a 0-row input is not worth ONNX's edge cases
            return heads.box_predictor(heads.box_head(heads.box_roi_pool(features, proposals, image_sizes)))
        blocks, order = pool_rows(heads.box_roi_pool, features, proposals, image_sizes, block=BOX_HEAD_BLOCK)
        # a one-row block runs as two rows (the graph's proposals dimension starts at 2, see OrtModule)
        outputs = [self.box_net(rows) if len(rows) > 1 else [o[:1] for o in self.box_net(rows.expand(2, -1, -1))]
                   for rows in blocks]
        class_logits, box_regression = (torch.cat([o[i] for o in outputs]) for i in (0, 1))
        inverse = order.argsort()  # back to the proposals' own order
        return class_logits[inverse], box_regression[inverse]
