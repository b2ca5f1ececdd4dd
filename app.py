"""regioncap web app: region captions, phrase search and sentence alignment (Gradio).

Thin on purpose: it loads one model, calls ``RegionCaptioner.analyze`` / ``AnalysisResult.query`` /
``.align`` and formats what they return. ``python app.py`` serves on 127.0.0.1:7860
(``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` respected); the model is ``$REGIONCAP_MODEL`` or the
bundled ``assets/demo-model``. API endpoints for ``gradio_client``:

* ``/caption(image, max_regions, threshold) -> (annotated image, regions table, JSON file)``
* ``/query(phrase, top_k, image=None, max_regions, threshold) -> (highlighted image, matches table)``;
  without an image it searches the image last captioned in the same client session.
* ``/caption_box(box, image=None, max_regions, threshold) -> like /caption`` with the box added.
* ``/align(sentence, image=None, max_regions, threshold) -> (image, highlighted sentence, summary)``.

Output images are written to unique temporary files and returned as paths, never as PIL images:
Gradio 6.31 can serve a truncated file when two requests return identical PIL images at once.
"""

from __future__ import annotations

import atexit
import collections
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from regioncap.data.image import load_image  # noqa: E402
from regioncap.errors import RegionCapError  # noqa: E402
from regioncap.viz import PALETTE, draw_regions  # noqa: E402

logger = logging.getLogger("regioncap.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
MAX_FILE_SIZE = "20mb"
DISPLAY_MIN, DISPLAY_MAX = 720, 1024  # long side of the drawn pictures: small images enlarged, big ones reduced
DEFAULTS = {"max_regions": 10, "threshold": 0.5, "top_k": 3}
MAX_USER_BOXES = 20
PHRASE_COLOURS = {str(i + 1): "#%02x%02x%02x" % PALETTE[i % len(PALETTE)] for i in range(64)}
TABLE_HEADERS = ["#", "caption", "entity type", "detector score", "caption score", "box (x1, y1, x2, y2)"]
MATCH_HEADERS = ["rank", "region #", "caption", "similarity", "box (x1, y1, x2, y2)"]
SHAPES_NOTE = ("**This demo model knows only the synthetic shapes world** it was trained on: coloured, patterned "
               "circles, squares, triangles, stars, hexagons and crosses on plain backgrounds. On a real photo it "
               "will still talk about shapes. Its entity types are stand-ins ({mapping}). Train on Flickr30k "
               "Entities for real photos (see the README).")


class UserError(Exception):
    """A message for the user (no traceback)."""


def user_errors(fn):
    """Turn regioncap's user errors into gr.Error; log anything unexpected and say so plainly."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (RegionCapError, UserError) as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:
            logger.exception("%s failed", fn.__name__)
            raise gr.Error("Something went wrong on the server (details are in its log). Try another image "
                           "or other settings.", print_exception=False) from None
    return wrapper


class LRU:
    """A small thread-safe least-recently-used dict."""

    def __init__(self, size: int):
        self.size, self.data, self.lock = size, collections.OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
            return self.data.get(key)

    def put(self, key, value):
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


class OutputFiles:
    """Unique files in one private temp folder; old ones are removed once Gradio has copied them."""

    def __init__(self, keep: int = 256):
        self.root = Path(tempfile.mkdtemp(prefix="regioncap-app-"))
        self.written, self.lock = collections.deque(), threading.Lock()
        self.keep = keep
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def _new_dir(self) -> Path:
        d = Path(tempfile.mkdtemp(dir=self.root))
        with self.lock:
            self.written.append(d)
            old = self.written.popleft() if len(self.written) > self.keep else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return d

    def image(self, image: Image.Image, stem: str = "regions") -> str:
        big = image.width * image.height > 800_000
        path = self._new_dir() / f"{stem}.{'jpg' if big else 'png'}"
        image.save(path, quality=90) if big else image.save(path, optimize=False, compress_level=3)
        return str(path)

    def json(self, data: dict, stem: str) -> str:
        path = self._new_dir() / f"{stem}.json"
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return str(path)


class ModelHolder:
    """Loads the model once, in a background thread, so the page answers while torch is imported."""

    def __init__(self, path: str | None = None, warm: list[Path] = ()):
        self.path, self.warm = path, list(warm)
        self.model, self.error, self.directory = None, None, None
        self.ready = threading.Event()

    def start(self) -> ModelHolder:
        threading.Thread(target=self._load, name="regioncap-model", daemon=True).start()
        return self

    def _load(self) -> None:
        try:
            from regioncap import hub
            from regioncap.models.model import RegionCaptioner

            self.path = self.path or hub.default_model_path()
            self.directory = hub.resolve_model_dir(self.path)
            self.model = RegionCaptioner.from_pretrained(self.path)
        except RegionCapError as e:
            self.error = str(e)
        except Exception as e:  # a broken install must still leave a page that says what happened
            logger.exception("loading %s failed", self.path)
            self.error = f"{self.path}: could not be loaded ({type(e).__name__}: {e})"
        finally:
            self.ready.set()
        if self.error:
            logger.error("no model: %s", self.error)

    def get(self, timeout: float = 120.0):
        if not self.ready.wait(timeout):
            raise UserError("The model is still loading; try again in a few seconds.")
        if self.model is None:
            raise UserError(f"No model is loaded, so nothing can be analysed. {self.error}")
        return self.model


@dataclass
class View:
    """One session's analysed image: the result plus a copy of the picture at display size."""

    path: str  # the uploaded file (Gradio's cache path)
    name: str  # its original file name
    settings: tuple[int, float]
    result: object  # regioncap AnalysisResult (detections + the user's boxes)
    canvas: Image.Image
    scale: float  # canvas pixels per image pixel
    corner: tuple[float, float] | None = None


def _payload(image) -> tuple[str, str] | None:
    """(path, original name) of a gr.Image value: a FileData dict, a path, or None."""
    if image is None:
        return None
    if isinstance(image, dict):
        path = image.get("path")
        name = image.get("orig_name") or (Path(path).name if path else "")
    else:
        path, name = str(image), Path(str(image)).name
    return (path, name) if path else None


def _canvas(image: Image.Image) -> tuple[Image.Image, float]:
    long_side = max(image.size)
    scale = DISPLAY_MIN / long_side if long_side < DISPLAY_MIN else min(1.0, DISPLAY_MAX / long_side)
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS), scale


def _scaled(boxes: list[list[float]], scale: float) -> list[dict]:
    return [{"box": [c * scale for c in b], "caption": ""} for b in boxes]


def _box_text(box) -> str:
    return ", ".join(str(round(c)) for c in box)


def _parse_box(text: str, width: int, height: int) -> list[float]:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text or "")
    if len(numbers) != 4:
        raise UserError(f"A box is four numbers 'x1, y1, x2, y2' in image pixels (the image is {width}x{height}), "
                        f"got {text.strip()[:60]!r}")
    x1, y1, x2, y2 = map(float, numbers)
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


class RegionApp:
    """The event handlers; each returns values for the components wired in :func:`build_app`."""

    def __init__(self, holder: ModelHolder):
        self.holder, self.files = holder, OutputFiles()
        self.results, self.canvases = LRU(32), LRU(16)

    # -- analysis ---------------------------------------------------------------------------------
    def analyze(self, image, max_regions, threshold, progress=None) -> View:
        got = _payload(image)
        if got is None:
            raise UserError("No image: upload one (or pick an example) first.")
        path, name = got
        model = self.holder.get()
        settings = (int(max_regions), round(float(threshold), 4))
        try:
            digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
        except OSError:
            raise UserError(f"{name}: the uploaded file is gone; upload it again.") from None
        result, canvas = self.results.get((digest, settings)), self.canvases.get(digest)
        if result is None or canvas is None:
            progress and progress(0.1, desc="Reading the image")
            try:
                pil = load_image(path)
            except RegionCapError as e:
                raise UserError(str(e).replace(path, name)) from None
            canvas = canvas or _canvas(pil)
            self.canvases.put(digest, canvas)
            if result is None:
                progress and progress(0.3, desc="Detecting and captioning regions")
                result = model.analyze(pil, max_regions=settings[0], score_threshold=settings[1])
                self.results.put((digest, settings), result)
        return View(path, name, settings, result, canvas[0], canvas[1])

    def view_for(self, image, max_regions, threshold, view: View | None) -> View:
        """The session's view when it shows this image with these settings, else a fresh analysis."""
        got = _payload(image)
        if got is None:
            if view is None:
                raise UserError("No image yet: upload one (or call /caption in this session) first.")
            return view
        if view is not None and view.path == got[0] and view.settings == (int(max_regions), round(float(threshold), 4)):
            return view
        return self.analyze(image, max_regions, threshold)

    def warm(self, paths: list[str]) -> None:
        """Analyse the example images with the default settings, so that picking one answers at once."""
        self.holder.ready.wait()
        for path in paths if self.holder.model is not None else []:
            try:
                self.analyze(path, DEFAULTS["max_regions"], DEFAULTS["threshold"])
            except Exception:  # an example that fails is reported when picked; it must not stop the app
                logger.exception("example %s", path)

    # -- outputs ----------------------------------------------------------------------------------
    def caption_outputs(self, view: View):
        regions = view.result.regions
        if not any(r.label != "user" for r in regions):
            gr.Warning(f"No region scored {view.settings[1]:.2f} or more: lower the detector score threshold.")
        drawn = _scaled([r.box for r in regions], view.scale)
        for d, r in zip(drawn, regions):
            d["caption"] = r.caption or "(no caption)"
        annotated = self.files.image(draw_regions(view.canvas, drawn), Path(view.name).stem + "-regions")
        rows = [[i + 1, r.caption, "your box" if r.label == "user" else r.label, round(r.score, 3),
                 round(r.caption_score, 2), _box_text(r.box)] for i, r in enumerate(regions)]
        data = {"image": view.name, "model": self.holder.path, **view.result.to_dict()}
        return annotated, rows, self.files.json(data, Path(view.name).stem + "-regions")

    def query_outputs(self, view: View, phrase: str, top_k):
        regions = view.result.regions
        if not regions:
            raise UserError("This image has no regions to search: lower the detector score threshold.")
        if len((phrase or "").strip()) > 200:
            raise UserError("That phrase is too long to be a phrase: use a few words, e.g. 'a red circle'.")
        matches = view.result.query(phrase, top_k=int(top_k))
        index = {id(r): i for i, r in enumerate(regions)}
        black = Image.new("RGB", view.canvas.size)
        picture = Image.blend(view.canvas, black, 0.65)
        drawn = _scaled([r.box for r, _ in matches], view.scale)
        for d in drawn:  # matched regions keep their full brightness, the rest of the image is dimmed
            x1, y1, x2, y2 = (round(c) for c in d["box"])
            if x2 > x1 and y2 > y1:
                picture.paste(view.canvas.crop((x1, y1, x2, y2)), (x1, y1))
        labels = [f"{sim:.2f}  {r.caption}" for r, sim in matches]
        path = self.files.image(draw_regions(picture, drawn, labels), "matches")
        rows = [[k + 1, index[id(r)] + 1, r.caption, round(sim, 3), _box_text(r.box)]
                for k, (r, sim) in enumerate(matches)]
        return path, rows

    def align_outputs(self, view: View, sentence: str):
        if len((sentence or "").strip()) > 1000:
            raise UserError("That sentence is too long: use one sentence of a few phrases.")
        alignment = view.result.align(sentence)
        whole = [0, 0, view.result.width, view.result.height]
        drawn = _scaled([a.region.box if a.region else whole for a in alignment], view.scale)
        labels = [f"{a.phrase} ({a.similarity:.2f})" for a in alignment]
        path = self.files.image(draw_regions(view.canvas, drawn, labels), "alignment")
        spans, cursor, lines = [], 0, []
        for i, a in enumerate(alignment):
            target = f"region {a.region_index + 1}" if a.region is not None else "the whole image"
            label = str(i + 1)  # the phrase's number: its colour and its box's number in the picture
            pattern = r"\s*".join(re.escape(t) for t in a.phrase.split())
            found = re.compile(pattern, re.IGNORECASE).search(sentence, cursor)
            if found:
                spans.append({"entity": label, "start": found.start(), "end": found.end()})
                cursor = found.end()
            caption = f" “{a.region.caption}”" if a.region is not None else ""
            lines.append(f"{i + 1}. **{a.phrase}** → {target}{caption}: similarity {a.similarity:.3f}")
        summary = (f"**Image–sentence score S_kl = {alignment.score:.3f}**, the sum over the {len(alignment)} "
                   "phrases of each phrase's best region similarity (Karpathy & Fei-Fei): \n\n" + "\n".join(lines))
        return path, {"text": sentence, "entities": spans}, summary

    def add_box(self, view: View, box: list[float], progress=None) -> View:
        user = sum(r.label == "user" for r in view.result.regions)
        if user >= MAX_USER_BOXES:
            raise UserError(f"At most {MAX_USER_BOXES} boxes of your own: press 'Caption regions' to start over.")
        import torch

        model = self.holder.get()
        progress and progress(0.3, desc="Captioning your box")
        try:
            added = model.analyze(load_image(view.path), boxes=[box])
        except RegionCapError as e:
            raise UserError(str(e).replace(view.path, view.name)) from None
        r = view.result
        merged = type(r)(r.regions + added.regions, torch.cat([r.vectors, added.vectors]), r.image_vector,
                         r.width, r.height, added.timings_ms, model)
        return replace(view, result=merged, corner=None)

    # -- handlers (wired in build_app) --------------------------------------------------------------
    def caption(self, image, max_regions, threshold, progress=gr.Progress()):
        view = self.analyze(image, max_regions, threshold, progress)
        return *self.caption_outputs(view), view

    def caption_live(self, image, max_regions, threshold, progress=gr.Progress()):
        if _payload(image) is None:  # the picture was cleared
            return None, [], None, None
        return self.caption(image, max_regions, threshold, progress)

    def caption_box(self, box, image=None, max_regions=10, threshold=0.5, view=None, progress=gr.Progress()):
        view = self.view_for(image, max_regions, threshold, view)
        view = self.add_box(view, _parse_box(box, view.result.width, view.result.height), progress)
        return *self.caption_outputs(view), view

    def click_corner(self, box, view, evt: gr.SelectData):
        if view is None:
            raise UserError("Caption an image first, then click two opposite corners of a region on it.")
        x, y = (float(c) / view.scale for c in evt.index[:2])
        if view.corner is None:
            view.corner = (x, y)
            note = f"First corner at ({x:.0f}, {y:.0f}): now click the opposite corner."
            return gr.skip(), gr.skip(), gr.skip(), box, note, view
        (x0, y0), view.corner = view.corner, None
        text = _box_text([min(x0, x), min(y0, y), max(x0, x), max(y0, y)])
        out = self.caption_box(text, None, *view.settings, view)
        return *out[:3], text, f"Captioned your box {text} (the last row of the table).", out[3]

    def query(self, phrase, top_k=3, image=None, max_regions=10, threshold=0.5, view=None):
        view = self.view_for(image, max_regions, threshold, view)
        return *self.query_outputs(view, phrase, top_k), view

    def query_live(self, phrase, top_k, view):
        if view is None or not (phrase or "").strip():
            return None, [], "", view
        try:
            return *self.query_outputs(view, phrase, top_k), "", view
        except (RegionCapError, UserError) as e:
            return None, [], f"*{e}*", view

    def align(self, sentence, image=None, max_regions=10, threshold=0.5, view=None):
        view = self.view_for(image, max_regions, threshold, view)
        return *self.align_outputs(view, sentence), view

    def align_live(self, sentence, view):
        if view is None or not (sentence or "").strip():
            return None, None, ""
        try:
            return self.align_outputs(view, sentence)
        except (RegionCapError, UserError) as e:
            return None, None, f"*{e}*"

    def model_panel(self):
        """(banner, model description) once the model has loaded or failed."""
        self.holder.ready.wait(300)
        if self.holder.model is None:
            message = self.holder.error or "The model is still loading: reload the page in a moment."
            banner = (f"### ⚠️ No model loaded\n{message}\n\nSet `REGIONCAP_MODEL` to a model folder or Hub repo id "
                      "(or put the demo model in `assets/demo-model/`) and restart the app.")
            return gr.Markdown(banner, visible=True), banner
        return gr.Markdown(visible=False), describe_model(self.holder)


def describe_model(holder: ModelHolder) -> str:
    """Markdown: which model, its architecture, and what it was trained on (from its model card)."""
    m, c = holder.model, holder.model.config
    card = ""
    if holder.directory and (Path(holder.directory) / "README.md").is_file():
        card = (Path(holder.directory) / "README.md").read_text(encoding="utf-8", errors="replace")
        card = re.sub(r"\A---\n.*?\n---\n", "", card, flags=re.S).strip()
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", card, flags=re.S | re.M))
    lines = [f"**Loaded model:** `{holder.path}`", "",
             f"- detector: Faster R-CNN `{c.detector.arch}`, entity types: {', '.join(c.entity_types)}",
             f"- region encoder `{c.region_encoder.kind}`, joint space {c.joint_dim}-d; text encoder GRU "
             f"{c.text_encoder.hidden_dim}; caption decoder {c.captioner.rnn.upper()} {c.captioner.hidden_dim}",
             f"- vocabulary: {len(m.vocab)} words", "",
             "### Training data", sections.get("Training data", "Not recorded in the model card.").strip(), "",
             "### Metrics", sections.get("Metrics", "Not recorded in the model card.").strip()]
    demo = Path(holder.path).resolve() == (ROOT / "assets" / "demo-model").resolve()
    if demo or "synthetic" in card.lower():
        from regioncap.data.synthetic import SHAPE_TYPES

        mapping = ", ".join(f"{s} = {t}" for s, t in SHAPE_TYPES.items())
        lines = ["> " + SHAPES_NOTE.format(mapping=mapping), ""] + lines
    return "\n".join(lines)


def example_images(folder: Path = EXAMPLES_DIR) -> list[str]:
    return sorted(str(p) for p in Path(folder).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def build_app(model_path: str | None = None, examples: list[str] | None = None) -> gr.Blocks:
    """The Gradio Blocks; the model starts loading in the background right away."""
    examples = example_images() if examples is None else examples
    holder = ModelHolder(model_path).start()
    app = RegionApp(holder)
    threading.Thread(target=app.warm, args=(examples,), name="regioncap-warm", daemon=True).start()
    with gr.Blocks(title="regioncap", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# regioncap: region captions and phrase search\nUpload a picture: each interesting region "
                    "gets a numbered box and a caption. Then search the regions with a phrase, or align a sentence.")
        banner = gr.Markdown(visible=False, elem_id="model-banner")
        view = gr.State(None, time_to_live=3600)
        with gr.Row():
            with gr.Column(scale=2, min_width=280):
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=300,
                                 elem_id="input-image")
                max_regions = gr.Slider(1, 30, value=DEFAULTS["max_regions"], step=1, label="Max regions")
                threshold = gr.Slider(0, 1, value=DEFAULTS["threshold"], step=0.05, label="Detector score threshold",
                                      info="Regions scoring below this are dropped.", elem_id="threshold")
                run = gr.Button("Caption regions", variant="primary")
                if examples:
                    gr.Examples(examples, inputs=image, label="Examples (synthetic scenes the demo model knows)")
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Caption", id="caption"):
                        annotated = gr.Image(label="Regions", type="filepath", interactive=False, elem_id="annotated")
                        table = gr.Dataframe(headers=TABLE_HEADERS, label="Regions", interactive=False, wrap=True,
                                             datatype=["number", "str", "str", "number", "number", "str"],
                                             elem_id="regions-table")
                        with gr.Row():
                            box = gr.Textbox(label="Caption your own box", placeholder="x1, y1, x2, y2 in image pixels",
                                             info="Type a box, or click two opposite corners on the picture.",
                                             scale=3, max_length=100, elem_id="box")
                            box_btn = gr.Button("Caption box", scale=1)
                        box_note = gr.Markdown(elem_id="box-note")
                        download = gr.DownloadButton("Download the result (JSON)", elem_id="download", size="sm")
                    with gr.Tab("Search", id="search"):
                        with gr.Row(equal_height=True):
                            phrase = gr.Textbox(label="Phrase", placeholder="a red circle", scale=3, max_length=200,
                                                elem_id="phrase")
                            top_k = gr.Slider(1, 10, value=DEFAULTS["top_k"], step=1, label="Best matches", scale=1)
                        search_note = gr.Markdown()
                        search_image = gr.Image(label="Matches (the rest is dimmed)", type="filepath",
                                                interactive=False, elem_id="search-image")
                        matches = gr.Dataframe(headers=MATCH_HEADERS, label="Matches, best first", interactive=False,
                                               datatype=["number", "number", "str", "number", "str"],
                                               elem_id="matches")
                    with gr.Tab("Sentence", id="sentence"):
                        sentence = gr.Textbox(label="Sentence", max_length=1000, elem_id="sentence",
                                              placeholder="a large red circle next to a small blue square")
                        aligned = gr.HighlightedText(label="Phrases and their regions", show_legend=False,
                                                     color_map=PHRASE_COLOURS,
                                                     elem_id="aligned-text")
                        align_image = gr.Image(label="Each phrase's best region", type="filepath", interactive=False,
                                               elem_id="align-image")
                        align_note = gr.Markdown(label="Alignment score", elem_id="align-note")
                    with gr.Tab("Model", id="model"):
                        model_md = gr.Markdown("Loading the model…", elem_id="model-info")

        settings = [image, max_regions, threshold]
        caption_out = [annotated, table, download, view]
        search_out, align_out = [search_image, matches, search_note, view], [align_image, aligned, align_note]
        private = {"api_visibility": "private"}  # UI-only events; the API is the four named endpoints
        live = {**private, "trigger_mode": "always_last", "show_progress": "hidden"}
        raw = {"preprocess": False}  # handlers read the upload themselves: a bad file gets a readable error

        def then_refresh(event):  # after a new analysis, redo the search and the alignment on the new regions
            event.then(user_errors(app.query_live), [phrase, top_k, view], search_out, **live).then(
                user_errors(app.align_live), [sentence, view], align_out, **live)

        then_refresh(run.click(user_errors(app.caption), settings, caption_out, api_name="caption", **raw))
        phrase.submit(user_errors(app.query), [phrase, top_k, *settings, view], [search_image, matches, view],
                      api_name="query", **raw)
        then_refresh(box_btn.click(user_errors(app.caption_box), [box, *settings, view], caption_out,
                                   api_name="caption_box", **raw))
        sentence.submit(user_errors(app.align), [sentence, *settings, view], [align_image, aligned, align_note, view],
                        api_name="align", **raw)
        caption_live = user_errors(app.caption_live)
        then_refresh(image.change(caption_live, settings, caption_out, api_name="caption_on_change", **raw,
                                  trigger_mode="always_last", **private))
        then_refresh(max_regions.release(caption_live, settings, caption_out, api_name="caption_on_max_regions", **raw,
                                         **private))
        then_refresh(threshold.release(caption_live, settings, caption_out, api_name="caption_on_threshold", **raw,
                                       **private))
        then_refresh(box.submit(user_errors(app.caption_box), [box, *settings, view], caption_out,
                                api_name="caption_box_on_submit", **raw, **private))
        then_refresh(annotated.select(user_errors(app.click_corner), [box, view],
                                      [*caption_out[:3], box, box_note, view], api_name="click_corner", **private))
        query_live, align_live = user_errors(app.query_live), user_errors(app.align_live)
        phrase.change(query_live, [phrase, top_k, view], search_out, api_name="query_on_change", **live)
        top_k.release(query_live, [phrase, top_k, view], search_out, api_name="query_on_top_k", **live)
        sentence.change(align_live, [sentence, view], align_out, api_name="align_on_change", **live)
        demo.load(app.model_panel, None, [banner, model_md], api_name="model_panel", **private)
    return demo


def launch_kwargs() -> dict:
    """Arguments of ``Blocks.launch`` for serving (tests reuse them with another port)."""
    return {"server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
            "share": False, "max_file_size": MAX_FILE_SIZE, "ssr_mode": False, "show_error": False,
            "footer_links": ["api", "settings"]}


def serve(demo: gr.Blocks, **overrides):
    """Queue (a few requests at once, a bounded waiting line) and launch."""
    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo.launch(**{**launch_kwargs(), **overrides})


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(build_app())


if __name__ == "__main__":
    main()
