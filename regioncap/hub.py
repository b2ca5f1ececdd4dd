"""Model files: where a model is, and loading it safely.

A model is a folder with ``config.json``, ``model.safetensors``, ``vocab.json`` and ``README.md``
(model card). Loading is strict and never unpickles: pickle-format weights (``*.bin``, ``*.pt``,
``*.pth``, ``*.pkl``, ``*.ckpt``) and pickle/zip payloads are refused, the safetensors header is
checked before any tensor is read, and every weight must match the model exactly. Hub repos are
fetched with huggingface_hub (``HF_HUB_OFFLINE=1`` respected, ``revision`` pinnable).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import torch

from regioncap.errors import ModelFileError
from regioncap.fileio import atomic_path, write_json_atomic, write_text_atomic
from regioncap.models.config import RegionCaptionerConfig

logger = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, CARD_FILE = "config.json", "model.safetensors", "vocab.json", "README.md"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, CARD_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
DEFAULT_MODEL = "assets/demo-model"
MODEL_ENV = "REGIONCAP_MODEL"
MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


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
        raise ModelFileError(f"{path}: is a file; a model is a folder with {', '.join(MODEL_FILES[:3])}")
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
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE):
        if not (directory / name).is_file():
            raise ModelFileError(f"{directory / name}: missing (a model folder needs {', '.join(MODEL_FILES[:3])})")
    for p in directory.iterdir():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            logger.warning("%s: ignored (pickle-format file; only %s is loaded)", p, WEIGHTS_FILE)


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


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Read and check a safetensors header without touching tensor data.

    Checks: not a pickle/zip payload; the 8-byte length fits the file; the header is a JSON
    object; each entry has a known dtype, a shape and offsets inside the data whose size matches.

    Returns:
        the header's tensor entries (``__metadata__`` removed).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if _looks_pickled(head):
                raise ModelFileError(f"{path}: is a pickle/zip payload (torch.save?), not safetensors; "
                                     "refused (never unpickled)")
            if len(head) < 8:
                raise ModelFileError(f"{path}: truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise ModelFileError(f"{path}: safetensors header length {n} does not fit the "
                                     f"{size}-byte file (truncated or forged)")
            raw = f.read(n)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: safetensors header is not valid JSON (corrupt or forged)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    for name, entry in header.items():
        _check_entry(path, name, entry, data_len)
    end, last = 0, None  # tensors must tile the data exactly: no overlap (aliasing), no gap, nothing after
    for name, entry in sorted(header.items(), key=lambda item: tuple(item[1]["data_offsets"])):
        begin = entry["data_offsets"][0]
        if begin != end:
            what = f"overlaps tensor {last!r}" if begin < end else f"leaves a gap of {begin - end} bytes before it"
            raise ModelFileError(f"{path}: tensor {name!r} {what} (forged or corrupt safetensors header)")
        end, last = entry["data_offsets"][1], name
    if end != data_len:
        raise ModelFileError(f"{path}: {data_len - end} bytes after the last tensor (forged or corrupt file)")
    return header


def _check_entry(path: Path, name: str, entry: Any, data_len: int) -> None:
    ok = isinstance(entry, dict) and entry.get("dtype") in _DTYPE_BYTES
    shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
    ok = ok and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
    if not ok:
        raise ModelFileError(f"{path}: malformed safetensors entry for {name!r}")
    numel = 1
    for d in shape:
        numel *= d
    begin, end = offsets
    if not 0 <= begin <= end <= data_len or end - begin != numel * _DTYPE_BYTES[entry["dtype"]]:
        raise ModelFileError(f"{path}: tensor {name!r} lies outside the file's data (truncated or forged)")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load model.safetensors to CPU tensors after :func:`read_safetensors_header`'s checks."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: not a valid safetensors file ({exc})") from None


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
def write_model_card(directory, config: RegionCaptionerConfig, metrics: dict | None = None,
                     training: dict | None = None) -> Path:
    """Write README.md: Hub front matter, architecture, training data and measured metrics.

    Args:
        metrics: e.g. ``{"bleu4": 0.21, "grounding_acc": 0.64}`` (numbers are shown with 4 digits).
        training: free-form facts, e.g. ``{"data": "synthetic scenes, seed 0, 2000 images", "epochs": 20}``.
    """
    c = config
    front = ["---", "library_name: regioncap", "license: mit", "pipeline_tag: image-to-text", "tags:"]
    front += [f"- {t}" for t in ("region-captioning", "dense-captioning", "phrase-grounding", "pytorch", "safetensors")]
    front.append("---")
    lines = front + [
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
        f"| region encoder | `{c.region_encoder.kind}` -> {c.joint_dim}-d joint space |",
        f"| text encoder | embedding {c.text_encoder.embed_dim} + GRU {c.text_encoder.hidden_dim} |",
        f"| caption decoder | {c.captioner.rnn.upper()} {c.captioner.hidden_dim}, beam {c.captioner.beam_size}"
        + (f"; reranked: log-prob / (words + 1)^{c.captioner.rerank_length_alpha:g} + "
           f"{c.captioner.rerank_weight:g} x region-phrase similarity" if c.captioner.rerank else "") + " |",
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
        "Files: `config.json`, `model.safetensors`, `vocab.json` (no pickle).",
        "",
    ]
    path = Path(directory) / CARD_FILE
    write_text_atomic(path, "\n".join(lines))
    return path
