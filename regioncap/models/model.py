"""RegionCaptioner: the composition root (torchvision's ``GeneralizedRCNN`` in spirit).

It composes the :class:`~regioncap.models.detector.RegionDetector`'s stages (features, then losses
or detections) so that one backbone pass serves both detection and the RoI region encoder; image
preparation lives in :mod:`regioncap.data.prepare`. In training mode
``forward`` returns a dict of named losses; ``analyze`` (and ``forward`` in eval mode without
targets) returns one :class:`AnalysisResult` per image, which keeps the region vectors so that
``query`` and ``align`` only encode text.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from regioncap import hub
from regioncap.data.dataset import pad_sequences
from regioncap.data.prepare import prepare_image, user_boxes_in_frame
from regioncap.data.vocab import UNK, Vocabulary, tokenize
from regioncap.errors import ModelFileError, RegionCapError, TextError
from regioncap.models.alignment import (image_sentence_scores, phrase_region_loss, region_phrase_similarity,
                                        sentence_ranking_loss)
from regioncap.models import inference
from regioncap.models.captioner import CaptionDecoder
from regioncap.models.config import RegionCaptionerConfig
from regioncap.models.detector import RegionDetector
from regioncap.models.identity import model_identity
from regioncap.models.region_encoder import RoIRegionEncoder, VGG19CropEncoder, VGG19RegionEncoder
from regioncap.models.rerank import group_members
from regioncap.models.results import MAX_TEXT_CHARS, AnalysisResult, Region
from regioncap.models.text_encoder import TextEncoder, concept_loss, concept_targets

logger = logging.getLogger(__name__)

LOSSES = ("detector", "align", "caption")
PARTS = ("detector", "region_encoder", "text_encoder", "captioner")


def _check_settings(max_regions, score_threshold) -> None:
    if isinstance(max_regions, bool) or not isinstance(max_regions, int) or max_regions < 0:
        raise RegionCapError(f"max_regions must be an integer >= 0, got {max_regions!r}")
    if not isinstance(score_threshold, (int, float)) or not 0.0 <= float(score_threshold) <= 1.0:
        raise RegionCapError(f"score_threshold must be a number in [0, 1], got {score_threshold!r}")


class RegionCaptioner(nn.Module):
    """Detector + region encoder + text encoder + caption decoder.

    Args:
        config: the whole model's settings (``config.vocab_size`` must equal ``len(vocab)``).
        vocab: the word list shared by the text encoder and the decoder.
        download: fetch pretrained weights named by the config (COCO detector, ImageNet VGG-19);
            ``None`` follows the config, ``False`` never downloads (used when loading a saved model).
    """

    def __init__(self, config: RegionCaptionerConfig, vocab: Vocabulary, download: bool | None = None):
        super().__init__()
        config.validate()
        if len(vocab) != config.vocab_size:
            raise ValueError(f"vocabulary has {len(vocab)} tokens but config.vocab_size is {config.vocab_size}")
        self.config, self.vocab, self.name_or_path = config, vocab, None
        # set by from_pretrained: the folder read, and its calibrated match threshold (None: not calibrated)
        self.directory: Path | None = None
        self.match_threshold: float | None = None
        d = config.joint_dim
        self.detector = RegionDetector(config.detector, len(config.entity_types) + 1, download)
        if config.region_encoder.kind == "roi":
            self.region_encoder = RoIRegionEncoder(self.detector.out_channels, self.detector.featmap_names,
                                                   config.region_encoder, d)
        else:  # vgg19 / vgg19-crops: their own convolutions on the original image
            vgg = VGG19RegionEncoder if config.region_encoder.kind == "vgg19" else VGG19CropEncoder
            self.region_encoder = vgg(config.region_encoder, d, download)
        self.text_encoder = TextEncoder(config.vocab_size, config.text_encoder, d,
                                        concepts=config.concept_loss_weight > 0)
        self.captioner = CaptionDecoder(config.vocab_size, config.captioner, d)
        # each word id's singular (not saved: the vocabulary gives it): group captions read candidates in
        # the singular; with concept_singulars the concept loss also asks for a plural's singular
        self.register_buffer("singular_ids", torch.tensor(vocab.singular_ids()), persistent=False)
        self.frozen_parts: tuple[str, ...] = ()

    @property
    def concept_also(self) -> Tensor | None:
        """The concept loss's extra targets per word id (:func:`concept_targets`), or None."""
        return self.singular_ids if self.config.concept_singulars else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- which parts train ---------------------------------------------------------------------------
    def set_trainable(self, parts) -> list[nn.Parameter]:
        """Train only ``parts`` (names in PARTS): the others get ``requires_grad=False`` and stay in eval
        mode across :meth:`train`; the detector's own frozen layers stay frozen. Returns the trainable
        parameters (what the optimizer should get)."""
        parts = tuple(parts)
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
        for name in PARTS:
            getattr(self, name).requires_grad_(name in parts)
        self.frozen_parts = tuple(name for name in PARTS if name not in parts)
        self.train(self.training)
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> RegionCaptioner:
        super().train(mode)
        for name in self.frozen_parts:
            getattr(self, name).eval()
        return self

    # -- shared image pipeline ---------------------------------------------------------------------
    def _encode_regions(self, images, image_list, features, boxes: list[Tensor]) -> Tensor:
        """Region vectors FloatTensor[sum R_i, D] for per-image boxes in original pixel coordinates."""
        sizes = [tuple(im.shape[-2:]) for im in images]
        if self.config.region_encoder.kind != "roi":  # vgg19 / vgg19-crops: their own convolutions
            return self.region_encoder(images, boxes, sizes)
        scaled = self.detector.to_feature_boxes(boxes, sizes, image_list)
        return self.region_encoder(features, scaled, image_list.image_sizes, images=images, image_boxes=boxes)

    # -- training -----------------------------------------------------------------------------------
    def forward(self, images: list[Tensor], targets: list[dict] | None = None, text: dict | None = None,
                losses: tuple[str, ...] = LOSSES):
        """Training: named losses. Eval mode without targets: ``list[AnalysisResult]``.

        Args:
            images: per image FloatTensor[3, H_i, W_i] in [0, 1].
            targets: per image dict with ``boxes`` FloatTensor[N, 4] and ``labels`` Int64Tensor[N]
                (detector), ``region_boxes`` FloatTensor[R, 4] (row 0 = whole image), in pixels.
            text: ``collate_fn``'s dict: tokens [P, L], lengths [P], region [P] (index into the
                batch's concatenated region_boxes), sentence [P], sentence_image [S], boxed [P].
            losses: which of ``detector``, ``align``, ``caption`` to compute (only those run).

        Returns:
            dict with ``loss_detector`` (sum of torchvision's four losses), ``loss_align`` (image-sentence
            ranking + ``phrase_loss_weight`` x phrase-region ranking) and ``loss_caption``, as asked.
        """
        if targets is None:
            if self.training:
                raise ValueError("targets are required in training mode")
            prepared = [prepare_image(im, self.config.detector.max_size, self.device) for im in images]
            return self._analyze_batch([p[0] for p in prepared], frames=[p[1] for p in prepared])
        losses = tuple(losses)
        bad = set(losses) - set(LOSSES)
        if bad or not losses:
            raise ValueError(f"losses must be a non-empty subset of {LOSSES}, got {losses}")
        if "detector" in losses and not self.training:
            raise ValueError("loss_detector is only computed in training mode (torchvision's heads)")
        if text is None and ("align" in losses or "caption" in losses):
            raise ValueError("text is required for loss_align / loss_caption")
        cfg, out = self.config, {}
        grad_regions = "align" in losses or not cfg.captioner.detach_regions
        need_features = "detector" in losses or cfg.region_encoder.kind == "roi"
        dev = images[0].device
        det_targets = ([{"boxes": t["boxes"].to(dev), "labels": t["labels"].to(dev)} for t in targets]
                       if "detector" in losses else None)
        for k, t in enumerate(det_targets or []):
            if (t["boxes"][:, 2:] <= t["boxes"][:, :2]).any():
                raise ValueError(f"image {k}: detector target boxes must have positive width and height")
        image_list = features = None
        if need_features:
            with contextlib.nullcontext() if ("detector" in losses or grad_regions) else torch.no_grad():
                image_list, features, det_targets = self.detector.features(images, det_targets)
        if "detector" in losses:
            out["loss_detector"] = sum(self.detector.losses(image_list, features, det_targets).values())
        if "align" in losses or "caption" in losses:
            boxes = [t["region_boxes"].to(dev) for t in targets]
            with contextlib.nullcontext() if grad_regions else torch.no_grad():
                v = self._encode_regions(images, image_list, features, boxes)  # [R, D]
            region_image = torch.repeat_interleave(
                torch.arange(len(boxes), device=v.device), torch.tensor([len(b) for b in boxes], device=v.device))
            boxed = text["boxed"].to(v.device)
            if "align" in losses:
                out["loss_align"] = self._align_loss(v, region_image, len(images), text, boxed)
            if "caption" in losses:
                v_cap = v.detach() if cfg.captioner.detach_regions else v
                idx = text["region"].to(v.device)[boxed]
                tokens, lengths = text["tokens"].to(v.device)[boxed], text["lengths"].to(v.device)[boxed]
                out["loss_caption"] = self.captioner.loss(v_cap[idx], tokens, lengths)
        return out

    def _align_loss(self, v: Tensor, region_image: Tensor, num_images: int, text: dict, boxed: Tensor) -> Tensor:
        cfg, dev = self.config, v.device
        s = self.text_encoder(text["tokens"].to(dev), text["lengths"])  # [P, D]
        sim = region_phrase_similarity(v, s)  # [P, R]
        sentence_image = text["sentence_image"].to(dev)
        scores = image_sentence_scores(sim, region_image, text["sentence"].to(dev), num_images, len(sentence_image))
        loss = sentence_ranking_loss(scores, sentence_image, cfg.align_margin, cfg.align_reduction)
        phrase_region = text["region"].to(dev)[boxed]
        phrase = phrase_region_loss(sim[boxed], phrase_region, cfg.phrase_margin,
                                    region_image=region_image if cfg.phrase_negatives == "image" else None,
                                    reduction=cfg.align_reduction)
        loss = loss + cfg.phrase_loss_weight * phrase
        if cfg.concept_loss_weight > 0:
            targets = concept_targets(text["tokens"].to(dev)[boxed], text["lengths"].to(dev)[boxed], phrase_region,
                                      len(v), cfg.vocab_size, self.concept_also)
            loss = loss + cfg.concept_loss_weight * concept_loss(self.text_encoder.concepts(v), targets)
        return loss

    # -- inference ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _eval(self):
        modes = [(m, m.training) for m in self.modules()]  # restored one by one: a frozen part stays frozen
        self.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            for module, mode in modes:
                module.training = mode

    def _inference_detector(self):
        """The detector inference runs on (:func:`~regioncap.models.inference.inference_detector`): the CPU
        fast path, or the eager detector."""
        return inference.inference_detector(self)

    def _detect(self, detector, images, image_list, features, max_regions, score_threshold, frames):
        """Detections per image, at most ``max_regions`` (:func:`~regioncap.models.inference.detect`)."""
        return inference.detect(self, detector, images, image_list, features, max_regions, score_threshold, frames)

    def prepare_inference(self) -> None:
        """Build the inference fast path now (see :meth:`_inference_detector`), e.g. while an app starts,
        so that the first request does not pay for the export."""
        with self._eval():
            self._inference_detector()

    def analyze(self, image, max_regions: int = 10, score_threshold: float = 0.5, boxes=None,
                captions: bool = True, objects: AnalysisResult | None = None) -> AnalysisResult:
        """Detect (or take ``boxes``), encode and caption the regions of one image.

        Args:
            image: PIL image, path, bytes, numpy array, or FloatTensor[3, H, W] in [0, 1]. A side over
                MAX_SIDE is reduced before detection; boxes are always in ``image``'s own pixels.
            max_regions: keep at most this many detections (highest score first).
            score_threshold: drop detections scoring below this.
            boxes: optional user boxes ``[[x1, y1, x2, y2], ...]`` in the image's pixels; they are
                clamped into the image and captioned instead of detections (label "user", score 1.0).
            captions: False skips decoding (captions are "" with caption_score 0), e.g. for retrieval.
            objects: with ``boxes``, an earlier result of this image (e.g. ``analyze(image)``): its detected
                regions (not those labelled "user") are the objects a box may be made up of, for a model
                whose ``captioner.group_weight`` is set (:func:`~regioncap.models.rerank.find_groups`); no
                detection runs for them. Without ``boxes`` the detections are the objects.

        Raises:
            ImageError: unreadable image.  RegionCapError: bad ``boxes`` / ``max_regions`` / threshold /
            ``objects`` (not a result of this model, or of an image of this size).
        """
        _check_settings(max_regions, score_threshold)
        if objects is not None and not isinstance(objects, AnalysisResult):
            raise RegionCapError(f"objects must be an AnalysisResult of the same image, got {type(objects).__name__}")
        if objects is not None and objects.model is not self and model_identity(objects.model) != model_identity(self):
            raise RegionCapError("objects is a result of another model (other config, vocabulary or weights): "
                                 "pass a result of this model, e.g. analyze(image)")
        tensor, frame = prepare_image(image, self.config.detector.max_size, self.device)
        user = None if boxes is None else [user_boxes_in_frame(boxes, frame).to(tensor.device)]
        known = None
        if user is not None and objects is not None and captions and self.config.captioner.group_weight > 0:
            if (objects.width, objects.height) != tuple(frame[2:]):
                raise RegionCapError(f"objects is a result of a {objects.width}x{objects.height} image, "
                                     f"this one is {frame[2]}x{frame[3]}")
            found = [i for i, r in enumerate(objects.regions) if r.label != "user"]
            obj_boxes = (user_boxes_in_frame([objects.regions[i].box for i in found], frame) if found
                         else torch.zeros(0, 4))
            known = [(obj_boxes.to(tensor.device), torch.tensor([objects.regions[i].score for i in found]),
                      objects.vectors[found].to(tensor.device))]
        return self._analyze_batch([tensor], max_regions, float(score_threshold), user, captions, [frame], known)[0]

    def analyze_batch(self, images: list, max_regions: int = 10, score_threshold: float = 0.5,
                      captions: bool = True) -> list[AnalysisResult]:
        """``[analyze(im, max_regions, score_threshold) for im in images]`` in fewer model calls.

        Images whose work tensors have the same size run through the model together (one backbone batch,
        one caption decoding); images of different sizes run apart, so that no image is padded beyond
        what it is padded to alone and each result is the one ``analyze`` gives (equal up to float
        rounding). On a GPU, photos of one camera (one aspect ratio) make full batches.

        Raises:
            ImageError: an image cannot be read (decode the images first to keep going past bad files).
        """
        _check_settings(max_regions, score_threshold)
        prepared = [prepare_image(im, self.config.detector.max_size, self.device) for im in images]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (tensor, _) in enumerate(prepared):
            by_shape.setdefault(tuple(tensor.shape), []).append(i)
        results: list[AnalysisResult | None] = [None] * len(prepared)
        for members in by_shape.values():
            batch = self._analyze_batch([prepared[i][0] for i in members], max_regions, float(score_threshold),
                                        captions=captions, frames=[prepared[i][1] for i in members])
            for i, result in zip(members, batch):
                results[i] = result
        return results

    def _analyze_batch(self, images: list[Tensor], max_regions: int = 10, score_threshold: float = 0.5,
                       user_boxes: list[Tensor] | None = None, captions: bool = True,
                       frames: list[tuple[int, int, int, int]] | None = None,
                       objects: list[tuple[Tensor, Tensor, Tensor]] | None = None) -> list[AnalysisResult]:
        """Analyse work tensors; ``frames`` (see :func:`~regioncap.data.prepare.prepare_image`; default: the
        tensors' own sizes) say where each image lies in its tensor and its original size, to which boxes
        are mapped back. ``objects`` per image, with ``user_boxes``: (boxes [M, 4] in work pixels, scores
        [M], vectors [M, D]) of the detected objects the boxes may be made up of (see :meth:`analyze`)."""
        frames = frames or [(im.shape[2], im.shape[1]) * 2 for im in images]
        t0 = time.perf_counter()
        groups = captions and self.config.captioner.group_weight > 0
        with self._eval():
            need_features = user_boxes is None or self.config.region_encoder.kind == "roi"
            detector = self._inference_detector()
            image_list, features, _ = detector.features(images) if need_features else (None, None, None)
            if user_boxes is None:
                dets = self._detect(detector, images, image_list, features, max_regions, score_threshold, frames)
            else:
                dets = [(b, torch.ones(len(b)), ["user"] * len(b)) for b in user_boxes]
            t1 = time.perf_counter()
            whole = [im.new_tensor([[0.0, 0.0, f[0], f[1]]]) for im, f in zip(images, frames)]
            region_boxes = [torch.cat([w, d[0].to(w)]) for w, d in zip(whole, dets)]
            v = self._encode_regions(images, image_list, features, region_boxes).float()  # [sum(1 + N_i), D]
            per_image = list(v.split([len(b) for b in region_boxes]))
            t2 = time.perf_counter()
            region_v = torch.cat([p[1:] for p in per_image])
            if captions and len(region_v):
                if groups and user_boxes is None:  # a detection may be made up of other detections
                    objects = [(d[0], d[1], p[1:]) for d, p in zip(dets, per_image)]
                members = group_members([d[0] for d in dets], objects) if groups and objects is not None else None
                texts, logps, cands = inference.caption(self, region_v, members)
            else:
                texts, logps, cands = [""] * len(region_v), [0.0] * len(region_v), [[] for _ in region_v]
            t3 = time.perf_counter()
        timings = {"detect": (t1 - t0) * 1e3, "encode": (t2 - t1) * 1e3, "caption": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        results, k = [], 0
        for (cw, ch, width, height), (b, scores, labels), vecs in zip(frames, dets, per_image):
            regions = []
            b = b.cpu() * torch.tensor([width / cw, height / ch] * 2) if (cw, ch) != (width, height) else b
            for box, score, label in zip(b.tolist(), scores.tolist(), labels):
                regions.append(Region(box=[round(c, 2) for c in box], caption=texts[k], score=float(score),
                                      caption_score=float(logps[k]), label=label))
                k += 1
            # clone outside inference mode: callers get ordinary tensors they may modify
            results.append(AnalysisResult(regions, vecs[1:].cpu().clone(), vecs[0].cpu().clone(), int(width),
                                          int(height), {n: round(t, 2) for n, t in timings.items()}, self,
                                          cands[k - len(regions):k]))
        return results

    # -- text ------------------------------------------------------------------------------------------
    def phrase_ids(self, phrase: str) -> list[int]:
        """Token ids of a user phrase (cut to text_encoder.max_len). Empty / unknown words -> TextError."""
        if not isinstance(phrase, str) or not phrase.strip():
            raise TextError("empty phrase: type a few words, e.g. 'a red circle'")
        ids = self.vocab.encode(tokenize(phrase[:MAX_TEXT_CHARS]), max_len=self.config.text_encoder.max_len)
        if all(i == UNK for i in ids):
            raise TextError(f"no word of {phrase.strip()[:60]!r} is in the model's vocabulary")
        return ids

    def encode_text(self, phrases: list[str]) -> Tensor:
        """Phrase vectors FloatTensor[P, D] (unit norm, on CPU); each phrase checked by :meth:`phrase_ids`."""
        if isinstance(phrases, str):
            phrases = [phrases]
        seqs = [torch.tensor(self.phrase_ids(p), dtype=torch.long) for p in phrases]
        if not seqs:
            return torch.zeros(0, self.config.joint_dim)
        tokens, lengths = pad_sequences(seqs)
        with self._eval():
            s = self.text_encoder(tokens.to(self.device), lengths).float().cpu()
        return s.clone()  # an ordinary tensor, not an inference-mode one

    # -- files -----------------------------------------------------------------------------------------
    def save_pretrained(self, directory, metrics: dict | None = None, training: dict | None = None) -> Path:
        """Write config.json, model.safetensors, vocab.json and README.md (model card) into ``directory``.

        The folder's other files (:data:`regioncap.hub.MODEL_FILES`: calibration.json, eval.json, the
        training history and curves) are written by the steps that make them: ``regioncap.calibrate``,
        ``train.evaluate``, ``train.train``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        hub.save_config(self.config, directory / hub.CONFIG_FILE)
        hub.save_weights(self.state_dict(), directory / hub.WEIGHTS_FILE)
        self.vocab.save(directory / hub.VOCAB_FILE)
        hub.write_model_card(directory, self.config, metrics=metrics, training=training)
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path, revision: str | None = None, device: str | torch.device = "cpu"
                        ) -> RegionCaptioner:
        """Load a model folder or a Hub repo id (strict; never unpickles). Errors -> ModelFileError.

        The folder is read by :func:`regioncap.hub.read_model_folder`; the model's ``match_threshold``
        is its calibration.json's (None without one), ``directory`` the folder it was read from (a Hub
        repo's snapshot in the cache).
        """
        folder = hub.read_model_folder(name_or_path, revision)
        config, vocab, state = folder.config, folder.vocab, folder.weights
        try:  # shapes first, on the meta device: a forged config.json cannot make us allocate terabytes
            with torch.device("meta"):
                skeleton = cls(config, vocab, download=False)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelFileError(f"{folder.directory / hub.CONFIG_FILE}: describes no buildable model "
                                 f"({exc})") from None
        embeddings = [f"{n}.weight" for n, m in skeleton.named_modules() if isinstance(m, nn.Embedding)]
        hub.check_state_dict(skeleton.state_dict(), state, folder.weights_path, embeddings, folder.vocab_path)
        model = cls(config, vocab, download=False)
        model.load_state_dict(state, strict=True)
        model.name_or_path, model.directory = str(name_or_path), folder.directory
        model.match_threshold = folder.match_threshold
        logger.info("loaded %s (%s, %d regions classes)", name_or_path, config.detector.arch, len(config.entity_types))
        return model.to(device).eval()
