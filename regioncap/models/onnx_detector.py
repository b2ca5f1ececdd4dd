"""CPU inference fast path: the detector's two heavy networks run in ONNX Runtime.

On a two-core CPU a COCO-size Faster R-CNN spends its time in two networks: the backbone + FPN
(once per image, ~45 % of torchvision's eager forward for mobilenet_v3_large_fpn at 800 px) and
the box head + predictor (TwoMLPHead over 1,000 proposals, ~25 %). :class:`OnnxDetector` exports
exactly those two modules, with the model's own weights, to ONNX once per process and runs them
in ONNX Runtime (fused convolutions, its own thread pool); everything between them stays
torchvision's code on the :class:`~regioncap.models.detector.RegionDetector`'s modules: the
transform, the RPN (anchors, box decoding, NMS), RoIAlign, ``postprocess_detections`` and the
mapping back to image pixels. It is fp32 throughout, so the detections are the eager model's
(``tests/test_onnx_detector.py``; measured in ``benchmarks/bench_inference.py --photo``).

It has the same ``features`` / ``detect`` calls as ``RegionDetector``, and is used for inference
on the CPU only; training, CUDA and a missing ``onnxruntime`` take the eager detector.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

logger = logging.getLogger(__name__)


def available() -> bool:
    """Whether ``onnxruntime`` can be imported (it is optional: without it inference stays eager)."""
    try:
        import onnxruntime  # noqa: F401
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
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter announces its own deprecation
            warnings.simplefilter("ignore")
            # an eval-mode wrapper: the exporter restores the wrapper's mode (recursively) when it is done
            torch.onnx.export(_Outputs(module).eval(), (example,), buffer, input_names=["x"], output_names=names,
                              dynamic_axes={"x": dynamic}, opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # Spinning worker threads would take the cores from torch's own ops between the two sessions.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: Tensor):
        outputs = [torch.from_numpy(o) for o in self.session.run(None, {"x": x.detach().contiguous().numpy()})]
        if self.keys is not None:
            return OrderedDict(zip(self.keys, outputs))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def pool_by_level(pool: MultiScaleRoIAlign, features: dict[str, Tensor], boxes: list[Tensor],
                  image_sizes: list[tuple[int, int]], pieces: int = 1) -> tuple[list[Tensor], Tensor]:
    """``pool(features, boxes, image_sizes)``'s rows, computed level by level in ``pieces`` jobs each.

    ``MultiScaleRoIAlign`` zero-fills a [N, C, s, s] result and scatters each level's rows into it;
    here each level's rows are pooled straight into their own tensors, cut into ``pieces`` jobs so
    that several threads can run torchvision's single-threaded CPU ``roi_align`` at once. Same
    arithmetic (the same ``roi_align`` calls on the same rows), other row order.

    Returns:
        (jobs, order): ``jobs`` callables, each returning FloatTensor[n_j, C, s, s]; concatenated in
        order they are the pooled rows of ``order`` (LongTensor[N], indices into the concatenated boxes).
    """
    x = _filter_input(features, pool.featmap_names)
    if pool.scales is None or pool.map_levels is None:
        pool.scales, pool.map_levels = _setup_scales(x, image_sizes, pool.canonical_scale, pool.canonical_level)
    rois = _convert_to_roi_format(boxes)
    levels = pool.map_levels(boxes) if len(x) > 1 else torch.zeros(len(rois), dtype=torch.int64)
    order = torch.argsort(levels, stable=True)
    counts = torch.bincount(levels, minlength=len(x)).tolist()
    jobs, start = [], 0
    for level, (feature, scale) in enumerate(zip(x, pool.scales)):
        idx = order[start:start + counts[level]]
        start += counts[level]
        for part in idx.tensor_split(max(1, min(pieces, len(idx)))):
            jobs.append(lambda f=feature, r=rois[part], sc=scale: roi_align(
                f, r, output_size=pool.output_size, spatial_scale=sc, sampling_ratio=pool.sampling_ratio))
    return jobs, order


class OnnxDetector:
    """A :class:`~regioncap.models.detector.RegionDetector` whose backbone and box head run in ONNX Runtime.

    Build it from an eval-mode detector on the CPU; later changes to the detector's weights are not
    seen (the model drops it when it trains or moves, see ``RegionCaptioner._inference_detector``).
    """

    def __init__(self, detector: nn.Module, threads: int | None = None):
        threads = threads or torch.get_num_threads()
        self.detector = detector
        self.threads = threads
        # torchvision's CPU roi_align is single-threaded: run pieces of it on several threads
        self.workers = ThreadPoolExecutor(threads, thread_name_prefix="roi_align") if threads > 1 else None
        size = detector.transform.min_size[-1]
        heads = detector.roi_heads
        # one image per run: a graph traced at batch 1 keeps batch-1 shapes inside (mobilenet's SE blocks)
        self.backbone = OrtModule(detector.backbone, torch.rand(1, 3, size, size), {2: "height", 3: "width"}, threads)
        pooled = heads.box_roi_pool.output_size
        channels = detector.backbone.out_channels
        box_net = nn.Sequential(heads.box_head, heads.box_predictor)
        self.box_net = OrtModule(box_net, torch.rand(2, channels, *pooled), {0: "proposals"}, threads)

    def __deepcopy__(self, memo):
        return None  # ONNX Runtime sessions cannot be copied; a copied model exports its own on first use

    def features(self, images: list[Tensor], targets=None) -> tuple[ImageList, OrderedDict[str, Tensor], None]:
        """``RegionDetector.features`` for inference: transform (torchvision's) -> backbone (ONNX Runtime)."""
        image_list, _ = self.detector.transform(images)
        per_image = [self.backbone(x[None]) for x in image_list.tensors]  # the padded batch, image by image
        features = OrderedDict((k, torch.cat([f[k] for f in per_image])) for k in per_image[0])
        return image_list, features, None

    def detect(self, image_list: ImageList, features: dict[str, Tensor], original_sizes: list[tuple[int, int]],
               max_detections: int | None = None) -> list[dict[str, Tensor]]:
        """``RegionDetector.detect``: torchvision's RPN, RoIAlign and postprocessing around the ONNX box head."""
        det = self.detector
        heads = det.roi_heads_for(max_detections)
        proposals, _ = det.rpn(image_list, features)
        class_logits, box_regression = self._box_net(heads, features, proposals, image_list.image_sizes)
        boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals,
                                                             image_list.image_sizes)
        detections = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        return det.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def _box_net(self, heads, features, proposals: list[Tensor], image_sizes) -> tuple[Tensor, Tensor]:
        """Box head + predictor over every proposal: (class_logits [N, K], box_regression [N, 4K])."""
        jobs, order = pool_by_level(heads.box_roi_pool, features, proposals, image_sizes, self.threads)
        if not len(order):  # no proposals: nothing for ONNX Runtime to do (a 0-row input is not worth its edge cases)
            pooled = heads.box_roi_pool(features, proposals, image_sizes)
            return heads.box_predictor(heads.box_head(pooled))
        if self.workers is None:
            pooled = [job() for job in jobs]
        else:
            pooled = [f.result() for f in [self.workers.submit(job) for job in jobs]]
        pooled = [p for p in pooled if len(p)]
        outputs = [self.box_net(p) for p in pooled]  # ONNX Runtime per piece: no [N, C, 7, 7] concatenation
        class_logits = torch.cat([o[0] for o in outputs])
        box_regression = torch.cat([o[1] for o in outputs])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return class_logits[inverse], box_regression[inverse]
