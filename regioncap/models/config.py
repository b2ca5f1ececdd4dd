"""Configuration dataclasses, one per stage, serialised to ``config.json``.

Every hyper-parameter needed to rebuild a model lives here (nanoGPT's ``GPTConfig``,
open_clip's ``CLIPVisionCfg``). :meth:`RegionCaptionerConfig.from_dict` is strict: an
unknown, missing or wrong-typed key raises :class:`~regioncap.errors.ModelFileError`,
because a ``config.json`` that does not describe the weights beside it must not load.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from regioncap.errors import ModelFileError

DETECTOR_ARCHS = ("small", "mobilenet_v3_large_fpn", "resnet50_fpn_v2")
REGION_ENCODERS = ("roi", "vgg19", "vgg19-crops")
RNN_TYPES = ("gru", "lstm")
NORMS = ("group", "batch")
# What the region encoder kinds mean. 1: before commit e6c7a03 (2026-11-27), "vgg19" was the seed's
# per-crop encoder, today's "vgg19-crops"; 2: "vgg19" runs VGG-19 once per image and RoIAligns each box.
# The two have the same weight names and shapes, so only the config can tell an old model from a new one.
ENCODER_VERSION = 2


@dataclass
class DetectorConfig:
    """Faster R-CNN settings; ``rpn_*`` / ``box_*`` follow torchvision's argument names.

    ``arch="small"`` is a from-scratch backbone for the synthetic scenes; the other two are
    torchvision's builders, initialised from COCO weights when ``pretrained`` is true.
    """

    arch: str = "small"
    pretrained: bool = False
    min_size: int = 192
    max_size: int = 256
    backbone_channels: list[int] = field(default_factory=lambda: [32, 64, 96, 128])
    norm: str = "group"
    fpn_channels: int = 64
    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    trainable_backbone_layers: int = 3
    rpn_batch_size_per_image: int = 128
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 150
    box_batch_size_per_image: int = 128
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 50
    box_head_dim: int = 256  # "small" only: width of the two-layer box head (torchvision's is 1024)
    # Added after the first models were published: a config.json without it loads with this value
    # (torchvision's FasterRCNN default, which those models used).
    rpn_score_thresh: float = field(default=0.0, metadata={"optional": True})

    @classmethod
    def for_arch(cls, arch: str = "small", **overrides: Any) -> DetectorConfig:
        """The defaults of ``arch``: the toy values above for ``small`` (tuned for the synthetic
        scenes' 200-px pictures), torchvision's for its COCO models (``FasterRCNN``'s defaults plus
        what each builder sets: ``rpn_score_thresh=0.05`` for mobilenet_v3_large_fpn); then ``overrides``."""
        values = dict(TORCHVISION_DEFAULTS.get(arch, {}), arch=arch)
        values.update(overrides)
        return cls(**values)

    def validate(self) -> None:
        _choice("detector.arch", self.arch, DETECTOR_ARCHS)
        _choice("detector.norm", self.norm, NORMS)
        if len(self.backbone_channels) != 4 or min(self.backbone_channels) < 1:
            raise ValueError("detector.backbone_channels must be 4 positive ints (strides 4/8/16/32)")
        if len(self.anchor_sizes) != 5:
            raise ValueError("detector.anchor_sizes must have 5 sizes (FPN levels 0-3 + pool)")
        if self.min_size < 32 or self.max_size < self.min_size:
            raise ValueError("detector.min_size must be >= 32 and <= detector.max_size")
        if min(self.rpn_pre_nms_top_n_train, self.rpn_post_nms_top_n_train, self.rpn_pre_nms_top_n_test,
               self.rpn_post_nms_top_n_test, self.rpn_batch_size_per_image, self.box_batch_size_per_image,
               self.box_detections_per_img) < 1:
            raise ValueError("detector.rpn_* / box_* counts must be positive")
        if self.norm == "group" and any(c % 8 for c in self.backbone_channels):
            raise ValueError("detector.backbone_channels must be multiples of 8 with norm='group'")


# torchvision 0.29: FasterRCNN's keyword defaults, and the builders' own (fasterrcnn_mobilenet_v3_large_fpn
# sets rpn_score_thresh 0.05; fasterrcnn_resnet50_fpn_v2 sets nothing).
_FASTER_RCNN = dict(min_size=800, max_size=1333, rpn_batch_size_per_image=256,
                    rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000,
                    rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, rpn_score_thresh=0.0,
                    box_batch_size_per_image=512, box_score_thresh=0.05, box_nms_thresh=0.5,
                    box_detections_per_img=100)
TORCHVISION_DEFAULTS = {"mobilenet_v3_large_fpn": dict(_FASTER_RCNN, rpn_score_thresh=0.05),
                        "resnet50_fpn_v2": dict(_FASTER_RCNN)}

MAX_RNN_LAYERS = 8  # a forged config.json must not make loading build thousands of layers
MAX_GROUP_BEAM = 32  # candidates per box of several objects: a forged config.json must not ask for thousands


@dataclass
class RegionEncoderConfig:
    """Region encoder: ``roi`` (RoIAlign on the detector's FPN), ``vgg19`` (VGG-19 convolutions once per
    image, RoIAlign 7x7 per box: Fast R-CNN's way) or ``vgg19-crops`` (the seed's literal crops, one
    VGG-19 pass per box, ``vgg_crop_size`` px).

    ``texture_dim`` > 0 (``roi`` only) adds a texture branch: a small CNN on the box's own pixels at
    the image's full resolution (luminance, standardised per box), pooled to per-channel mean and
    standard deviation, so what the detector's features blur away (stripes, dots, checks) reaches the
    region vector.
    0 (the default, and what a config.json written before it existed gets) leaves it out.
    ``texture_layout`` > 0 also keeps where in the box the branch's responses lie, averaged on a
    ``texture_layout`` x ``texture_layout`` grid (an outline's shape, which mean and standard deviation
    discard); 0, what older config.json files get, leaves it out.
    ``version`` is what the kinds meant when the model was saved (``ENCODER_VERSION``; see
    :func:`_region_encoder_section` for older files).
    """

    kind: str = "roi"
    roi_output_size: int = 7
    hidden_dim: int = 512
    geometry_dim: int = 64
    dropout: float = 0.1
    vgg_crop_size: int = 224
    pretrained: bool = False
    texture_dim: int = field(default=0, metadata={"optional": True})  # absent from older config.json
    texture_layout: int = field(default=0, metadata={"optional": True})
    version: int = field(default=ENCODER_VERSION, metadata={"optional": True})  # see _region_encoder_section

    def validate(self) -> None:
        _choice("region_encoder.kind", self.kind, REGION_ENCODERS)
        if self.version != ENCODER_VERSION:
            raise ValueError(f"region_encoder.version must be {ENCODER_VERSION} (this regioncap's encoders), "
                             f"not {self.version!r}")
        if self.roi_output_size < 1 or self.hidden_dim < 1 or self.vgg_crop_size < 32:
            raise ValueError("region_encoder sizes must be positive (vgg_crop_size >= 32)")
        if self.texture_dim < 0 or (self.texture_dim and self.kind != "roi"):
            raise ValueError("region_encoder.texture_dim must be >= 0, and 0 unless kind is 'roi'")
        if self.texture_layout < 0 or (self.texture_layout and not self.texture_dim):
            raise ValueError("region_encoder.texture_layout must be >= 0, and 0 without texture_dim")


@dataclass
class TextEncoderConfig:
    """Embedding + GRU phrase encoder; phrases are cut to ``max_len`` tokens."""

    embed_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    max_len: int = 32

    def validate(self) -> None:
        if min(self.embed_dim, self.hidden_dim, self.num_layers, self.max_len) < 1:
            raise ValueError("text_encoder sizes must be positive")
        if self.num_layers > MAX_RNN_LAYERS:
            raise ValueError(f"text_encoder.num_layers must be <= {MAX_RNN_LAYERS}")


@dataclass
class CaptionerConfig:
    """Caption decoder; ``detach_regions`` keeps the caption loss out of the joint space.

    ``rerank_weight`` / ``rerank_length_alpha``: each region's caption is chosen among the beam's
    candidates by ``log_prob / (words + 1) ** rerank_length_alpha + rerank_weight * (v_i . s)``
    (:mod:`regioncap.models.rerank`; chosen on validation data by ``train/tune_rerank.py``). Both 0
    (the default, and what a config.json written before they existed gets) is plain beam search.

    ``group_weight`` / ``group_beam_size``: a box made up of several detected objects ("two stars",
    "a group of people"; :func:`~regioncap.models.rerank.find_groups`) takes its caption among
    ``group_beam_size``-wide beam candidates, with ``group_weight`` times the mean similarity of those
    objects to the candidate read in the singular ("two stars" -> "two star") added to its score;
    0 (the default) leaves such boxes to the rule above.
    """

    rnn: str = "gru"
    embed_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 1
    dropout: float = 0.1
    beam_size: int = 3
    max_len: int = 16
    detach_regions: bool = True
    rerank_weight: float = field(default=0.0, metadata={"optional": True})  # absent from older config.json
    rerank_length_alpha: float = field(default=0.0, metadata={"optional": True})
    group_weight: float = field(default=0.0, metadata={"optional": True})
    group_beam_size: int = field(default=8, metadata={"optional": True})

    @property
    def rerank(self) -> bool:
        """Whether captions are chosen among candidates (False: plain beam search)."""
        return self.rerank_weight != 0.0 or self.rerank_length_alpha != 0.0

    def validate(self) -> None:
        _choice("captioner.rnn", self.rnn, RNN_TYPES)
        if min(self.embed_dim, self.hidden_dim, self.num_layers, self.beam_size, self.max_len) < 1:
            raise ValueError("captioner sizes must be positive")
        if not 0.0 <= self.rerank_weight <= 100.0 or not 0.0 <= self.rerank_length_alpha <= 2.0:
            raise ValueError("captioner.rerank_weight must be in [0, 100] and rerank_length_alpha in [0, 2]")
        if not 0.0 <= self.group_weight <= 100.0 or not 1 <= self.group_beam_size <= MAX_GROUP_BEAM:
            raise ValueError(f"captioner.group_weight must be in [0, 100] and group_beam_size in [1, {MAX_GROUP_BEAM}]")
        if self.num_layers > MAX_RNN_LAYERS:
            raise ValueError(f"captioner.num_layers must be <= {MAX_RNN_LAYERS}")


_SECTIONS = {
    "detector": DetectorConfig,
    "region_encoder": RegionEncoderConfig,
    "text_encoder": TextEncoderConfig,
    "captioner": CaptionerConfig,
}


@dataclass
class RegionCaptionerConfig:
    """The whole model. ``entity_types`` are the detector's classes 1..len (0 = background).

    ``align_margin`` is the image-sentence ranking margin (Karpathy: 1.0),
    ``phrase_margin`` / ``phrase_loss_weight`` the phrase-region ranking term added to it;
    ``align_reduction`` "sum" sums the hinge terms over the batch as the seed did, "mean" divides
    by the number of positive pairs (batch-size independent); ``phrase_negatives`` "image" ranks each
    phrase against the regions of its own image (what grounding asks), "batch" against every region
    in the batch (what collection search asks; it also teaches what tells two images' look-alike
    regions apart, such as a pattern); ``concept_loss_weight`` > 0 adds a word-prediction loss on the
    region vectors (:func:`~regioncap.models.text_encoder.concept_loss`) to the alignment loss;
    ``concept_singulars`` makes a plural in a region's phrases also ask for its singular ("two stars"
    -> "star", :meth:`~regioncap.data.vocab.Vocabulary.singular_ids`).
    """

    vocab_size: int
    entity_types: list[str]
    joint_dim: int = 256
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    region_encoder: RegionEncoderConfig = field(default_factory=RegionEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    align_margin: float = 1.0
    phrase_margin: float = 0.2
    phrase_loss_weight: float = 1.0
    align_reduction: str = "sum"
    phrase_negatives: str = field(default="image", metadata={"optional": True})  # absent from older config.json
    concept_loss_weight: float = field(default=0.0, metadata={"optional": True})
    concept_singulars: bool = field(default=False, metadata={"optional": True})

    def validate(self) -> None:
        _choice("align_reduction", self.align_reduction, ("sum", "mean"))
        _choice("phrase_negatives", self.phrase_negatives, ("image", "batch"))
        if self.concept_loss_weight < 0:
            raise ValueError("concept_loss_weight must be >= 0")
        if self.concept_singulars and not self.concept_loss_weight:
            raise ValueError("concept_singulars changes the concept loss's targets: it needs concept_loss_weight > 0")
        if self.vocab_size < 5:
            raise ValueError("vocab_size must be >= 5 (4 special tokens + a word)")
        if not self.entity_types or len(set(self.entity_types)) != len(self.entity_types):
            raise ValueError("entity_types must be a non-empty list of distinct names")
        if self.joint_dim < 1:
            raise ValueError("joint_dim must be positive")
        for name in _SECTIONS:
            getattr(self, name).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config.json") -> RegionCaptionerConfig:
        """Rebuild from :meth:`to_dict` output; anything unexpected -> ModelFileError naming ``source``."""
        raw = {name: _section(data, name, source) for name in _SECTIONS}
        raw["region_encoder"] = _region_encoder_section(raw["region_encoder"], source)
        sections = {name: _build(sub, raw[name], f"{source}: {name}.") for name, sub in _SECTIONS.items()}
        top = {k: v for k, v in _expect_dict(data, source, "").items() if k not in _SECTIONS}
        config = _build(cls, top, f"{source}: ", extra=sections)
        try:
            config.validate()
        except ValueError as exc:
            raise ModelFileError(f"{source}: {exc}") from None
        return config


def _region_encoder_section(data: dict, source: str) -> dict:
    """The ``region_encoder`` section as this version reads it. ``version`` 1 (the kinds' meaning before
    e6c7a03): its "vgg19" is today's "vgg19-crops", read as such, so the model computes what it computed
    when it was saved; the other kinds did not change. A "vgg19" without ``version`` is refused: files
    saved before the field existed hold either meaning (the old one before 2026-11-27, the new one after)
    and nothing else in the folder tells them apart."""
    version = data.get("version")
    if "version" not in data and data.get("kind") == "vgg19":
        raise ModelFileError(
            f"{source}: region_encoder.kind 'vgg19' without region_encoder.version: 'vgg19' changed meaning "
            "on 2026-11-27 (commit e6c7a03) from the seed's per-crop encoder (now 'vgg19-crops') to VGG-19 "
            "once per image + RoIAlign, and the weights fit both. Add \"version\": 1 to region_encoder if "
            f"the model was saved before that change, \"version\": {ENCODER_VERSION} if after")
    if version == 1 and not isinstance(version, bool):
        data = {**data, "version": ENCODER_VERSION}
        if data.get("kind") == "vgg19":
            data["kind"] = "vgg19-crops"
    return data


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _expect_dict(data: Any, source: str, where: str) -> dict:
    if not isinstance(data, dict):
        raise ModelFileError(f"{source}: {where or 'top level'} must be a JSON object")
    return data


def _section(data: Any, name: str, source: str) -> dict:
    data = _expect_dict(data, source, "")
    if name not in data:
        raise ModelFileError(f"{source}: missing key {name!r}")
    return _expect_dict(data[name], source, name)


def _build(cls: type, data: dict, prefix: str, extra: dict | None = None) -> Any:
    """Instantiate dataclass ``cls`` from ``data`` with exact key and type checks."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not (extra and f.name in extra)]
    names = [f.name for f in fields]
    unknown = sorted(set(data) - set(names))
    missing = [f.name for f in fields if f.name not in data and not f.metadata.get("optional")]
    if unknown:
        raise ModelFileError(f"{prefix}unknown key(s) {', '.join(unknown)}")
    if missing:
        raise ModelFileError(f"{prefix}missing key(s) {', '.join(missing)}")
    kwargs = {}
    for name in names:
        if name not in data:  # an optional key added later: the dataclass default
            continue
        if not _type_ok(data[name], hints[name]):
            raise ModelFileError(f"{prefix}{name} must be {_type_name(hints[name])}, "
                                 f"got {type(data[name]).__name__} {data[name]!r:.40}")
        value = data[name]
        kwargs[name] = float(value) if hints[name] is float else value
    kwargs.update(extra or {})
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # pragma: no cover - types were checked above
        raise ModelFileError(f"{prefix}{exc}") from None


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return False  # pragma: no cover - every field type is listed above


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        item = typing.get_args(hint)[0]
        return "a list of " + {bool: "booleans", int: "integers", float: "numbers", str: "strings"}[item]
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[hint]
