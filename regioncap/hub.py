"""Model files: where a model is, what a model folder holds, and reading it safely.

A model is a folder (local, or a Hub repo) holding the files of :data:`MODEL_FILES`: ``config.json``,
``model.safetensors`` and ``vocab.json`` (required), the model card ``README.md``, ``calibration.json``
(the match threshold), ``eval.json`` (the last evaluation), ``history.json`` and ``loss_curves.png``
(the training curves). That one list is what saving writes beside the weights, what ``train.publish``
uploads, what a Hub download fetches and what the app's Model tab reads. :func:`read_model_folder` is
the one reader of a folder: both ``RegionCaptioner.from_pretrained`` and ``TextModel.from_pretrained``
go through it.

Loading is strict and never unpickles: pickle-format weights (``*.bin``, ``*.pt``, ``*.pth``,
``*.pkl``, ``*.ckpt``) and pickle/zip payloads are refused, safetensors validates the header before any
tensor is read, and every weight must match the model exactly. Hub repos are fetched with
huggingface_hub (``HF_HUB_OFFLINE=1`` respected, ``revision`` pinnable).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from regioncap.data.vocab import Vocabulary
from regioncap.errors import ModelFileError
from regioncap.fileio import atomic_path, write_json_atomic, write_text_atomic
from regioncap.models.config import RegionCaptionerConfig

logger = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, CARD_FILE = "config.json", "model.safetensors", "vocab.json", "README.md"
CALIBRATION_FILE, EVAL_FILE = "calibration.json", "eval.json"
HISTORY_FILE, PLOT_FILE = "history.json", "loss_curves.png"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE)
# Every file a model carries, required first; the others may be missing (a model not evaluated has no
# eval.json). Saved (train.train / save_pretrained / regioncap.calibrate / train.evaluate), published
# (train.publish), downloaded (resolve_model_dir) and read by the app's Model tab: one list for all.
MODEL_FILES = REQUIRED_FILES + (CARD_FILE, CALIBRATION_FILE, EVAL_FILE, HISTORY_FILE, PLOT_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
DEFAULT_MODEL = "assets/demo-model"
MODEL_ENV = "REGIONCAP_MODEL"
MAX_HEADER_BYTES = 100 * 1024 * 1024


# -- where the model is -----------------------------------------------------------------------------
def default_model_path() -> str:
    """``$REGIONCAP_MODEL`` if set, else the bundled ``assets/demo-model``.

    The bundled path is taken relative to the working directory when it exists there, else
    relative to the repository checkout this package lives in.
    """
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return env
    if Path(DEFAULT_MODEL).is_dir():
        return DEFAULT_MODEL
    bundled = Path(__file__).resolve().parents[1] / DEFAULT_MODEL
    return str(bundled) if bundled.is_dir() else DEFAULT_MODEL


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local model folder, or a Hub repo id downloaded (or found in the cache) by huggingface_hub.

    Raises:
        ModelFileError: a pickle file was given, the folder does not exist, or the download failed.
    """
    path = Path(name_or_path)
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelFileError(f"{path}: pickle-format weights are refused (never unpickled); "
                                 "regioncap loads a folder with model.safetensors")
        raise ModelFileError(f"{path}: is a file; a model is a folder with {', '.join(REQUIRED_FILES)}")
    if path.is_dir():
        return path
    name = str(name_or_path)
    # The bundled default and explicit paths ("./x", "/x", "~/x") are never Hub repo ids.
    local_only = name == DEFAULT_MODEL or name.startswith((".", "/", "~"))
    if local_only:
        raise ModelFileError(f"{name}: no such model folder")
    try:
        check_repo_id(name)
    except ModelFileError:
        raise ModelFileError(f"{name}: no such model folder") from None
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id=name, revision=revision, allow_patterns=list(MODEL_FILES),
                                  local_files_only=_offline(), library_name="regioncap")
    except Exception as exc:  # network, auth, offline cache miss, bad revision: all mean "not available"
        logger.debug("snapshot_download(%s) failed", name, exc_info=True)
        why = "offline (HF_HUB_OFFLINE) and not in the cache" if _offline() else type(exc).__name__
        raise ModelFileError(f"{name}: not a local folder, and the Hugging Face Hub download failed ({why})") from None
    return Path(local)


def check_repo_id(repo_id: str) -> None:
    """A Hub model repo id, ``USER/NAME`` (huggingface_hub's own rules) -> None, else ModelFileError."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ModelFileError(f"{repo_id!r}: not a Hub repo id ({str(exc).splitlines()[0]})") from None
    if repo_id.count("/") != 1:
        raise ModelFileError(f"{repo_id!r}: not a Hub repo id (expected USER/NAME)")


def check_model_dir(directory: Path) -> None:
    """Required files present; pickle-format weights refused rather than loaded in their place."""
    if not (directory / WEIGHTS_FILE).is_file():
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickled:
            raise ModelFileError(f"{directory}: has pickle-format weights ({', '.join(pickled)}) and no "
                                 f"{WEIGHTS_FILE}; pickle is refused (never unpickled), convert to safetensors")
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            raise ModelFileError(f"{directory / name}: missing (a model folder needs {', '.join(REQUIRED_FILES)})")
    for p in directory.iterdir():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            logger.warning("%s: ignored (pickle-format file; only %s is loaded)", p, WEIGHTS_FILE)


def model_files(directory) -> list[str]:
    """The names of :data:`MODEL_FILES` that ``directory`` holds, in that order (what a publish uploads)."""
    return [name for name in MODEL_FILES if (Path(directory) / name).is_file()]


def read_threshold(directory) -> float | None:
    """The ``match_threshold`` of a model folder's ``calibration.json`` (None without a readable one).

    Written by ``python -m regioncap.calibrate --write`` (and at the end of ``train.train``): the
    similarity from which a phrase counts as matching a region.
    """
    path = Path(directory) / CALIBRATION_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["match_threshold"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None  # NaN (which JSON lets through) would make every comparison false: no region would match
    return float(value)


@dataclass
class ModelFolder:
    """A model folder read and checked: what both model classes are built from.

    ``weights`` are CPU tensors by name (all of model.safetensors); ``match_threshold`` is the
    calibrated one (None without calibration.json).
    """

    name_or_path: str
    directory: Path
    config: RegionCaptionerConfig
    vocab: Vocabulary
    weights: dict[str, torch.Tensor]
    match_threshold: float | None

    @property
    def weights_path(self) -> Path:
        return self.directory / WEIGHTS_FILE

    @property
    def vocab_path(self) -> Path:
        return self.directory / VOCAB_FILE


def read_model_folder(name_or_path, revision: str | None = None) -> ModelFolder:
    """The one reader of a model folder or Hub repo id: found (downloaded if need be), required files
    present, no pickle, config.json valid, vocabulary of the config's size, weights a valid safetensors
    file. The weights are checked against a model by its builder (:func:`check_state_dict`).

    Raises:
        ModelFileError: naming the file that is missing, unsafe or wrong.
    """
    directory = resolve_model_dir(name_or_path, revision)
    check_model_dir(directory)
    config = load_config(directory / CONFIG_FILE)
    vocab = Vocabulary.load(directory / VOCAB_FILE)
    if len(vocab) != config.vocab_size:
        raise ModelFileError(f"{directory / VOCAB_FILE}: has {len(vocab)} tokens but "
                             f"config.json says vocab_size {config.vocab_size}")
    weights = load_weights(directory / WEIGHTS_FILE)
    return ModelFolder(str(name_or_path), directory, config, vocab, weights, read_threshold(directory))


# -- config -------------------------------------------------------------------------------------------
def load_config(path: Path) -> RegionCaptionerConfig:
    """Parse and validate config.json; anything wrong -> ModelFileError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not a readable JSON config ({exc})") from None
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    return RegionCaptionerConfig.from_dict(data, source=str(path))


def _no_constant(name: str):
    raise ValueError(f"{name} is not a valid number in a config (JSON has no NaN or Infinity)")


def save_config(config: RegionCaptionerConfig, path: Path) -> None:
    write_json_atomic(path, config.to_dict())


# -- weights -----------------------------------------------------------------------------------------
def _looks_pickled(head: bytes) -> bool:
    """Pickle protocol 2+ starts with 0x80 <proto>; torch.save's zip archives with PK\\x03\\x04."""
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def _check_safetensors_file(path: Path) -> None:
    """The checks safetensors does not make, before it reads anything: not a pickle/zip payload (a
    clearer message than a header error) and a header length within the file and MAX_HEADER_BYTES.

    The header itself (JSON, dtypes, shapes, offsets that tile the data with no overlap, gap or
    trailing bytes) is validated by safetensors (>= 0.8) when :func:`load_weights` reads the file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if _looks_pickled(head):
        raise ModelFileError(f"{path}: is a pickle/zip payload (torch.save?), not safetensors; "
                             "refused (never unpickled)")
    if len(head) < 8:
        raise ModelFileError(f"{path}: truncated (no safetensors header)")
    (n,) = struct.unpack("<Q", head)
    if n > min(size - 8, MAX_HEADER_BYTES):
        raise ModelFileError(f"{path}: safetensors header length {n} does not fit the {size}-byte file "
                             f"(at most {MAX_HEADER_BYTES}; truncated or forged)")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load model.safetensors to CPU tensors; a pickle payload, truncated or forged file -> ModelFileError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    _check_safetensors_file(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        detail = str(exc).removeprefix("Error while deserializing header: ")
        raise ModelFileError(f"{path}: not a valid safetensors file, refused (truncated, corrupt or forged: "
                             f"{detail})") from None


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Write safetensors atomically. Tensors are copied contiguous, which also unties shared storage."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "library": "regioncap"})


def check_state_dict(expected: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor], source: Path,
                     embeddings: tuple[str, ...] | list[str] = (), vocab_source: Path | None = None) -> None:
    """Strict comparison: missing, unexpected or wrongly shaped weights -> ModelFileError naming ``source``.

    ``embeddings`` names word-embedding weights (one row per token): a row count that differs from the
    model's is reported as a vocabulary that does not belong to the weights, naming ``vocab_source``.
    """
    for name in embeddings:
        want, got = expected.get(name), loaded.get(name)
        if want is not None and got is not None and got.ndim == 2 and got.shape[0] != want.shape[0]:
            raise ModelFileError(f"{vocab_source or 'vocabulary'}: has {want.shape[0]} tokens but weight {name} in "
                                 f"{Path(source).name} has {got.shape[0]} rows (vocabulary and weights do not match)")
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    if missing:
        raise ModelFileError(f"{source}: missing {len(missing)} weight(s): {_names(missing)}")
    if unexpected:
        raise ModelFileError(f"{source}: {len(unexpected)} unexpected weight(s): {_names(unexpected)}")
    for name, want in expected.items():
        got = loaded[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ModelFileError(f"{source}: weight {name} has shape {list(got.shape)}, "
                                 f"the model (config.json) needs {list(want.shape)}")
        if got.dtype.is_floating_point != want.dtype.is_floating_point:
            raise ModelFileError(f"{source}: weight {name} has dtype {got.dtype}, expected {want.dtype}")


def _names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


# -- model card -----------------------------------------------------------------------------------
# Hub metric ids for the card metadata: BLEU, grounding accuracy, retrieval recall, detection AP.
HUB_METRICS = ["bleu", "accuracy", "recall", "map"]
CARD_TAGS = ["region-captioning", "dense-captioning", "phrase-grounding", "pytorch", "safetensors"]

INTENDED_USE = """## Intended use

- Describing the regions of a photo with short phrases and finding the regions that match a typed
  phrase (`python -m regioncap caption|query`, the Gradio app, or `RegionCaptioner.analyze`).
- Research and teaching on region-phrase alignment (Karpathy & Fei-Fei, CVPR 2015) and as a
  baseline for dense captioning and phrase grounding.
"""

LIMITATIONS = """## Limitations

- The model only knows what its training data shows: a model trained on the synthetic scenes
  describes coloured shapes, not people or animals; one trained on Flickr30k Entities inherits that
  data's bias towards people-centred scenes and its annotators' wording, including gendered and
  stereotyped descriptions.
- Captions are short (one phrase per region) and can be wrong with high confidence; the caption
  score is a sequence log-probability (plus, when the config reranks, the weighted region-phrase
  similarity it was chosen by, and for a box made up of several detected objects the weighted
  similarity of those objects), not a calibrated probability.
- The detector knows eight coarse entity types; small, crowded or unusual objects are often missed.
- English only. Not suitable for identifying people, surveillance, or any decision about a person.
"""


def write_model_card(directory, config: RegionCaptionerConfig, metrics: dict | None = None,
                     training: dict | None = None, datasets: list[str] | None = None) -> Path:
    """Write README.md: Hub metadata, architecture, training data, measured metrics, intended use, limits.

    Args:
        metrics: e.g. ``{"bleu4": 0.21, "grounding_acc": 0.64}`` (numbers are shown with 4 digits).
        training: free-form facts, e.g. ``{"data": "synthetic scenes, seed 0, 2000 images", "epochs": 20}``.
        datasets: Hub data set ids for the metadata, e.g. ``["synthetic-scenes"]``.
    """
    from huggingface_hub import ModelCardData

    c = config
    data = ModelCardData(library_name="regioncap", license="mit", pipeline_tag="image-to-text", tags=CARD_TAGS,
                         datasets=datasets or None, metrics=HUB_METRICS if metrics else None)
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        "# regioncap model",
        "",
        "Region captioning and phrase grounding after Karpathy & Fei-Fei, *Deep Visual-Semantic Alignments "
        "for Generating Image Descriptions* (CVPR 2015): a detector proposes regions, each region gets a "
        "vector in a joint space with phrases, and a decoder describes it.",
        "",
        "## Architecture",
        "",
        "| part | setting |",
        "|---|---|",
        f"| detector | Faster R-CNN, `{c.detector.arch}` backbone"
        f"{', from COCO weights' if c.detector.pretrained and c.detector.arch != 'small' else ''}, "
        f"input {c.detector.min_size}-{c.detector.max_size} px |",
        f"| entity types | {', '.join(c.entity_types)} |",
        f"| region encoder | `{c.region_encoder.kind}`"
        + (f" + {c.region_encoder.texture_dim}-d texture branch" if c.region_encoder.texture_dim else "")
        + (f" ({c.region_encoder.texture_layout}x{c.region_encoder.texture_layout} layout)"
           if c.region_encoder.texture_layout else "")
        + f" -> {c.joint_dim}-d joint space |",
        f"| text encoder | embedding {c.text_encoder.embed_dim} + GRU {c.text_encoder.hidden_dim} |",
        f"| caption decoder | {c.captioner.rnn.upper()} {c.captioner.hidden_dim}, beam {c.captioner.beam_size}"
        + (f"; reranked: log-prob / (words + 1)^{c.captioner.rerank_length_alpha:g} + "
           f"{c.captioner.rerank_weight:g} x region-phrase similarity" if c.captioner.rerank else "")
        + (f"; a box made up of detected objects: beam {c.captioner.group_beam_size}, + "
           f"{c.captioner.group_weight:g} x the objects' similarity" if c.captioner.group_weight else "") + " |",
        f"| vocabulary | {c.vocab_size} tokens |",
        "",
        "## Training data",
        "",
    ]
    if training:
        lines += [f"- **{k}**: {v}" for k, v in training.items()]
    else:
        lines.append("Not recorded.")
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    else:
        lines.append("Not measured.")
    threshold = read_threshold(directory)
    if threshold is not None:
        lines += ["", "## Match threshold", "",
                  f"A phrase matches a region when their similarity reaches **{threshold:g}** (`{CALIBRATION_FILE}`, "
                  "chosen on held-out data by `regioncap.calibrate`); the app lists only such regions."]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from regioncap import RegionCaptioner",
        'model = RegionCaptioner.from_pretrained("PATH_OR_REPO_ID")',
        'result = model.analyze("photo.jpg")',
        'print([r.caption for r in result.regions], result.query("a red circle"))',
        "```",
        "",
        "Files: `config.json`, `model.safetensors`, `vocab.json` (no pickle); `calibration.json` holds the "
        "match threshold (the similarity from which a phrase matches a region), `eval.json` the evaluation, "
        "`history.json` and `loss_curves.png` the training curves.",
        "",
        INTENDED_USE,
        LIMITATIONS,
    ]
    path = Path(directory) / CARD_FILE
    write_text_atomic(path, "\n".join(lines))
    return path
