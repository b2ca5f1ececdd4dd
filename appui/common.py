"""The web app's settings and plumbing: limits, the model holder (loads in the background), output
files, the per-analysis ``View``, input parsing and the Model tab's text. ``appui.handlers`` uses them;
``app.py`` lays out the page."""

from __future__ import annotations

import atexit
import collections
import functools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from regioncap.card import card_sections, read_card  # noqa: E402
from regioncap.errors import RegionCapError  # noqa: E402
from regioncap.viz import PALETTE  # noqa: E402

logger = logging.getLogger("regioncap.app")
ROOT = Path(__file__).resolve().parents[1]  # the repository (app.py, assets/)
EXAMPLES_DIR, DEMO_MODEL = ROOT / "assets" / "examples", ROOT / "assets" / "demo-model"
MAX_FILE_SIZE = "20mb"
DISPLAY_MIN, DISPLAY_MAX = 960, 1280  # long side of drawn pictures: small images enlarged, large ones reduced
DEFAULTS = {"max_regions": 10, "threshold": 0.5, "top_k": 3}
MAX_USER_BOXES, MAX_PHRASE, MAX_SENTENCE = 20, 200, 1000
MAX_COLLECTION = 50  # photos in one visitor's collection (kept in memory until the browser tab closes)
THRESHOLD_HOW = ("the threshold separating true from false phrase-region pairs best on held-out data, "
                 "see `python -m regioncap.calibrate`")
TABLE_HEADERS = ["#", "caption", "entity type", "detector score", "caption score", "box (x1, y1, x2, y2)"]
MATCH_HEADERS = ["rank", "region #", "caption", "similarity", "box (x1, y1, x2, y2)"]
CANDIDATE_HEADERS = ["region #", "candidate caption", "log-prob", "similarity", "objects' similarity", "score",
                     "chosen"]
PHRASE_COLOURS = {str(i + 1): "#" + "".join(f"{c:02x}" for c in PALETTE[i % len(PALETTE)]) for i in range(64)}
SHAPES_NOTE = ("This demo model was trained only on synthetic scenes of coloured, patterned shapes (circles, "
               "squares, triangles, stars, hexagons, crosses) on plain backgrounds: on a real photo it will "
               "still talk about shapes. Its entity types are stand-ins ({mapping}).")


def user_errors(fn):
    """regioncap's user errors -> gr.Error with their message; anything else is logged, never shown raw."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except RegionCapError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:
            logger.exception("%s failed", fn.__name__)
            raise gr.Error("Something went wrong on the server (see its log); try another image or other "
                           "settings.", print_exception=False) from None
    return wrapper


class OutputFiles:
    """Unique files in one private temp folder; the oldest are removed once Gradio has long copied them."""

    def __init__(self, keep: int = 256):
        self.root, self.keep = Path(tempfile.mkdtemp(prefix="regioncap-app-")), keep
        self.dirs, self.lock = collections.deque(), threading.Lock()
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def path(self, name: str) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self.lock:
            self.dirs.append(folder)
            old = self.dirs.popleft() if len(self.dirs) > self.keep else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return folder / name

    def image(self, image: Image.Image, stem: str) -> str:
        path = self.path(f"{stem}.jpg")
        image.save(path, quality=92, subsampling=0)  # 4:4:4 keeps coloured label text crisp
        return str(path)

    def json(self, data: dict, stem: str) -> str:
        path = self.path(f"{stem}.json")
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return str(path)


class ModelHolder:
    """Loads the model once, in a background thread, so that the page answers while torch is imported."""

    def __init__(self, path: str | None = None):
        self.path, self.model, self.error, self.directory = path, None, None, None
        self.ready = threading.Event()

    def start(self) -> ModelHolder:
        threading.Thread(target=self.load, name="regioncap-model", daemon=True).start()
        return self

    def load(self) -> None:
        try:
            from regioncap import hub
            from regioncap.models.model import RegionCaptioner

            self.path = self.path or hub.default_model_path()
            if self.path == hub.DEFAULT_MODEL and not Path(self.path).is_dir():  # not a Hub id to look up
                raise RegionCapError(f"{self.path}/: the bundled demo model is missing from this checkout")
            revision = os.environ.get("REGIONCAP_MODEL_REVISION") or None  # pin a Hub revision
            self.directory = hub.resolve_model_dir(self.path, revision)
            model = RegionCaptioner.from_pretrained(self.path, revision=revision)
            model.prepare_inference()  # the CPU fast path's export, before the first request rather than in it
            self.model = model
        except RegionCapError as e:
            self.error = str(e)
        except Exception as e:  # a broken install must still leave a page that says what happened
            logger.exception("loading %s failed", self.path)
            self.error = f"{self.path}: could not be loaded ({type(e).__name__}: {e})"
        finally:
            self.ready.set()
        logger.log(logging.ERROR if self.error else logging.INFO, "model %s: %s", self.path, self.error or "loaded")

    def get(self):
        if not self.ready.wait(120):
            raise RegionCapError("The model is still loading; try again in a few seconds.")
        if self.model is None:
            raise RegionCapError(f"No model is loaded, so nothing can be analysed. {self.error}")
        return self.model


@dataclass
class View:
    """One session's analysed image: the result and the picture at display size."""

    path: str  # the upload in Gradio's cache
    name: str  # its original file name
    settings: tuple[int, float]  # (max_regions, threshold)
    result: object  # AnalysisResult: the detections, then the user's boxes
    canvas: Image.Image
    scale: float  # canvas pixels per image pixel
    corner: tuple[float, float] | None = None  # first corner clicked on the picture


def _upload(image) -> tuple[str, str] | None:
    """(path, original name) of an image input: Gradio's FileData dict, a path, or None."""
    if isinstance(image, dict):
        path = image.get("path")
        return (path, image.get("orig_name") or Path(path).name) if path else None
    return (str(image), Path(str(image)).name) if image else None


def _settings(max_regions, threshold) -> tuple[int, float]:
    try:
        return int(max_regions), round(float(threshold), 4)
    except (TypeError, ValueError):
        raise RegionCapError(f"max regions must be a whole number and the threshold a number in [0, 1], "
                             f"got {max_regions!r} and {threshold!r}") from None


def _canvas(image: Image.Image) -> tuple[Image.Image, float]:
    long_side = max(image.size)
    scale = DISPLAY_MIN / long_side if long_side < DISPLAY_MIN else min(1.0, DISPLAY_MAX / long_side)
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS), scale


def _box_text(box) -> str:
    return ", ".join(str(round(c)) for c in box)


def _parse_box(text: str, width: int, height: int) -> list[float]:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text or "")
    if len(numbers) != 4:
        raise RegionCapError(f"A box is four numbers 'x1, y1, x2, y2' in image pixels (this image is "
                             f"{width}x{height}), got {(text or '').strip()[:60]!r}")
    x1, y1, x2, y2 = map(float, numbers)
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def _session(request) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def describe_model(holder: ModelHolder) -> tuple[str, str]:
    """(Markdown for the Model tab, the shapes-world note or "") from the config and the model card."""
    c = holder.model.config
    sections = card_sections(read_card(holder.directory) if holder.directory else "")
    note = ""  # the training data, not the card's limitations (which mention the synthetic set), decides
    if Path(holder.path).resolve() == DEMO_MODEL.resolve() or "synthetic" in sections.get("Training data", "").lower():
        from regioncap.data.synthetic import SHAPE_TYPES

        note = SHAPES_NOTE.format(mapping=", ".join(f"{s} = {t}" for s, t in SHAPE_TYPES.items()))
    lines = [f"> **{note}**\n" if note else "", f"**Loaded model:** `{holder.path}`", "",
             f"- detector: Faster R-CNN `{c.detector.arch}`; entity types: {', '.join(c.entity_types)}",
             f"- region encoder `{c.region_encoder.kind}` into a {c.joint_dim}-d joint space; text encoder GRU "
             f"{c.text_encoder.hidden_dim}; caption decoder {c.captioner.rnn.upper()} {c.captioner.hidden_dim}",
             f"- vocabulary: {c.vocab_size} words", "", "### Training data",
             sections.get("Training data", "Not recorded in the model card."), "", "### Metrics",
             sections.get("Metrics", "Not recorded in the model card.")]
    return "\n".join(lines), note
