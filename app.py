"""regioncap web app: region captions, phrase search and sentence alignment (Gradio 6).

Thin: it loads one model and formats what ``analyze`` / ``query`` / ``align`` return. ``python app.py``
serves on 127.0.0.1:7860 (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` respected) with
``$REGIONCAP_MODEL`` or ``assets/demo-model``. Endpoints for ``gradio_client`` (without ``image``, the
image last analysed in the same client session is used):

* ``/caption(image, max_regions=10, threshold=0.5) -> (annotated image, regions table, JSON file)``
* ``/query(phrase, top_k=3, image=None, max_regions=10, threshold=0.5) -> (highlighted image, matches table)``
* ``/caption_box(box "x1, y1, x2, y2", image=None, max_regions, threshold) -> like /caption, box added``
* ``/align(sentence, image=None, max_regions, threshold) -> (image, highlighted sentence, S_kl summary)``
* ``/search(text, top_k=6) -> (gallery of the best images, results JSON)``: the session's own collection
  (photos uploaded in the Collection tab) or else the shared one (``$REGIONCAP_INDEX``, or the examples)

Pictures are returned as paths of unique files the app wrote, never as PIL images: Gradio 6.31 can
serve a truncated file when two requests return the same PIL image at once (DESIGN.md section 6).
"""

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
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from regioncap.cache import ResultCache, content_key  # noqa: E402
from regioncap.card import card_sections, read_card  # noqa: E402
from regioncap.data.image import load_image  # noqa: E402
from regioncap.errors import RegionCapError  # noqa: E402
from regioncap.viz import PALETTE, draw_regions, phrase_spans, spotlight  # noqa: E402

logger = logging.getLogger("regioncap.app")
ROOT = Path(__file__).resolve().parent
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
CANDIDATE_HEADERS = ["region #", "candidate caption", "log-prob", "similarity", "score", "chosen"]
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


class RegionApp:
    """Event handlers. ``*_outputs`` format a View; the handlers below them are wired in build_app."""

    def __init__(self, holder: ModelHolder):
        self.holder, self.files = holder, OutputFiles()
        self.cache = ResultCache(32)  # (sha1, max_regions, threshold) -> (result, canvas, scale)
        self._sessions, self._sessions_lock = None, threading.Lock()

    def analyze(self, image, max_regions, threshold, progress=None) -> View:
        if _upload(image) is None:
            raise RegionCapError("No image: upload one (or pick an example) first.")
        (path, name), settings, model = _upload(image), _settings(max_regions, threshold), self.holder.get()
        try:
            key = content_key(path, *settings)
        except OSError:
            raise RegionCapError(f"{name}: the uploaded file is gone; upload it again.") from None
        hit = self.cache.get(key)
        if hit is None:
            progress and progress(0.2, desc="Detecting and captioning regions")
            try:
                pil = load_image(path)
            except RegionCapError as e:  # name the user's file, not Gradio's copy of it
                raise type(e)(str(e).replace(path, name)) from None
            hit = (model.analyze(pil, max_regions=settings[0], score_threshold=settings[1]), *_canvas(pil))
            self.cache.put(key, hit)
        return View(path, name, settings, *hit)

    def view_for(self, image, max_regions, threshold, view: View | None) -> View:
        """The session's view if it shows this image with these settings, else a new analysis."""
        if _upload(image) is None:
            if view is None:
                raise RegionCapError("No image yet: upload one first (API: pass an image or call /caption first).")
            return view
        if view and view.path == _upload(image)[0] and view.settings == _settings(max_regions, threshold):
            return view
        return self.analyze(image, max_regions, threshold)

    def draw(self, view: View, picture, regions_boxes, labels, stem) -> str:
        drawn = [{"box": [c * view.scale for c in b], "caption": t} for b, t in zip(regions_boxes, labels)]
        return self.files.image(draw_regions(picture, drawn), stem)

    def caption_outputs(self, view: View):
        regions, stem = view.result.regions, Path(view.name).stem + "-regions"
        if not any(r.label != "user" for r in regions):
            gr.Warning(f"No region scored {view.settings[1]:.2f} or more: lower the detector score threshold.")
        picture = self.draw(view, view.canvas, [r.box for r in regions], [r.caption or "…" for r in regions], stem)
        rows = [[i + 1, r.caption, "your box" if r.label == "user" else r.label, round(r.score, 3),
                 round(r.caption_score, 2), _box_text(r.box)] for i, r in enumerate(regions)]
        data = {"image": view.name, "model": self.holder.path, **view.result.to_dict()}
        return picture, rows, self.files.json(data, stem)

    def candidate_rows(self, view: View | None) -> list[list]:
        """Every region's candidate captions with their scores (empty when the model does not rerank)."""
        if view is None:
            return []
        return [[i + 1, c.caption, round(c.log_prob, 3), round(c.similarity, 3), round(c.score, 3),
                 "✓" if k == 0 else ""]
                for i, cands in enumerate(view.result.candidates) for k, c in enumerate(cands)]

    def query_outputs(self, view: View, phrase: str, top_k):
        if not view.result.regions:
            raise RegionCapError("This image has no regions to search: lower the detector score threshold.")
        if len((phrase or "").strip()) > MAX_PHRASE:
            raise RegionCapError(f"That is too long for a phrase (over {MAX_PHRASE} characters): try 'a red box'.")
        found, floor = view.result.query(phrase, top_k=int(top_k)), self.match_threshold()
        matches = [(r, sim) for r, sim in found if sim >= floor]
        picture = spotlight(view.canvas, [[c * view.scale for c in r.box] for r, _ in matches])
        number = {id(r): i + 1 for i, r in enumerate(view.result.regions)}
        labels = [f"{sim:.2f}: {r.caption}" for r, sim in matches]
        path = self.draw(view, picture, [r.box for r, _ in matches], labels, "matches")
        note = "" if matches else (f"*No region matches this phrase well: the best similarity is {found[0][1]:.2f}, "
                                   f"below {floor:.2f}* ({THRESHOLD_HOW})")
        return path, [[k + 1, number[id(r)], r.caption, round(sim, 3), _box_text(r.box)]
                      for k, (r, sim) in enumerate(matches)], note

    def match_threshold(self) -> float:
        """The similarity a true match reaches (chosen on held-out data, see regioncap.calibrate); 0 without one."""
        from regioncap.calibrate import read_threshold

        value = read_threshold(self.holder.directory) if self.holder.directory else None
        return 0.0 if value is None else value

    def align_outputs(self, view: View, sentence: str):
        if len((sentence or "").strip()) > MAX_SENTENCE:
            raise RegionCapError(f"That sentence is too long (over {MAX_SENTENCE} characters): use one sentence.")
        alignment, whole = view.result.align(sentence), [0, 0, view.result.width, view.result.height]
        path = self.draw(view, view.canvas, [a.region.box if a.region else whole for a in alignment],
                         [f"{a.phrase} ({a.similarity:.2f})" for a in alignment], "alignment")
        spans, lines = [], []
        for i, (a, span) in enumerate(zip(alignment, phrase_spans(sentence, [a.phrase for a in alignment]))):
            if span:
                spans.append({"entity": str(i + 1), "start": span[0], "end": span[1]})
            target = f"region {a.region_index + 1} “{a.region.caption}”" if a.region else "the whole image"
            lines.append(f"{i + 1}. **{a.phrase}** → {target}: similarity {a.similarity:.3f}")
        summary = (f"**Image–sentence score S_kl = {alignment.score:.3f}**: the sum over the {len(alignment)} "
                   "phrases of each phrase's best region similarity (Karpathy & Fei-Fei).\n\n" + "\n".join(lines))
        return path, {"text": sentence, "entities": spans}, summary

    def add_box(self, view: View, box: list[float], progress=None) -> View:
        if sum(r.label == "user" for r in view.result.regions) >= MAX_USER_BOXES:
            raise RegionCapError(f"At most {MAX_USER_BOXES} boxes of your own: 'Caption regions' starts over.")
        import torch  # loaded with the model by now

        progress and progress(0.3, desc="Captioning your box")
        model, r = self.holder.get(), view.result
        try:
            added = model.analyze(load_image(view.path), boxes=[box])
        except RegionCapError as e:
            raise type(e)(str(e).replace(view.path, view.name)) from None
        merged = type(r)(r.regions + added.regions, torch.cat([r.vectors, added.vectors]), r.image_vector,
                         r.width, r.height, added.timings_ms, model, r.candidates + added.candidates)
        return replace(view, result=merged, corner=None)

    def sessions(self):
        """The visitors' collections and the shared one (created once the model, and torch, are loaded)."""
        self.holder.get()
        with self._sessions_lock:
            if self._sessions is None:
                from regioncap.index.sessions import SessionCollections

                self._sessions = SessionCollections(max_photos=MAX_COLLECTION)
        return self._sessions

    def open_collection(self, examples: list[str]) -> None:
        """The shared collection: the index named by $REGIONCAP_INDEX, else the examples indexed in memory."""
        from regioncap.index.sessions import INDEX_ENV

        self.sessions().open_shared(self.holder.model, os.environ.get(INDEX_ENV) or None, examples)

    def gallery_item(self, hit) -> tuple[str, str]:
        """(picture with the matched regions lit and captioned, gallery caption) for one ImageHit."""
        canvas, scale = _canvas(load_image(hit.path))
        boxed = [m for m in hit.matches if m.region_index is not None]
        picture = spotlight(canvas, [[c * scale for c in m.box] for m in boxed])
        drawn = [{"box": [c * scale for c in m.box], "caption": f"{m.phrase}: {m.caption}"} for m in boxed]
        path = self.files.image(draw_regions(picture, drawn), Path(hit.path).stem + "-match")
        parts = [f"{m.phrase} → {f'“{m.caption}”' if m.region_index is not None else 'the whole image'} "
                 f"({m.similarity:.2f})" for m in hit.matches]
        return path, f"{Path(hit.path).name} · S_kl {hit.score:.2f} · " + "; ".join(parts)

    def warm(self, paths: list[str]) -> None:
        """Analyse the examples with the default settings, so that picking one answers at once."""
        self.holder.ready.wait()
        if self.holder.model is not None:
            self.open_collection(paths)
        for path in paths if self.holder.model is not None else []:
            try:
                self.analyze(path, DEFAULTS["max_regions"], DEFAULTS["threshold"])
            except Exception:  # reported when the example is picked; it must not stop the app
                logger.exception("example %s", path)

    # -- handlers ------------------------------------------------------------------------------------
    def caption(self, image, max_regions=10, threshold=0.5, progress=gr.Progress()):
        view = self.analyze(image, max_regions, threshold, progress)
        return *self.caption_outputs(view), view

    def caption_live(self, image, max_regions, threshold, progress=gr.Progress()):
        if _upload(image) is None:  # the picture was cleared
            return None, [], None, None
        return self.caption(image, max_regions, threshold, progress)

    def caption_box(self, box, image=None, max_regions=10, threshold=0.5, view=None, progress=gr.Progress()):
        view = self.view_for(image, max_regions, threshold, view)
        view = self.add_box(view, _parse_box(box, view.result.width, view.result.height), progress)
        return *self.caption_outputs(view), view

    def click_corner(self, box, view, evt: gr.SelectData):
        if view is None:
            raise RegionCapError("Caption an image first, then click two opposite corners of a region on it.")
        x, y = (float(c) / view.scale for c in evt.index[:2])
        if view.corner is None:
            view.corner = (x, y)
            note = f"First corner at ({x:.0f}, {y:.0f}): now click the opposite corner."
            return gr.skip(), gr.skip(), gr.skip(), box, note, view
        (x0, y0), view.corner = view.corner, None
        text = _box_text([min(x0, x), min(y0, y), max(x0, x), max(y0, y)])
        *out, view = self.caption_box(text, None, *view.settings, view)
        return *out, text, f"Captioned your box {text}: the last row of the table.", view

    def query(self, phrase, top_k=3, image=None, max_regions=10, threshold=0.5, view=None):
        view = self.view_for(image, max_regions, threshold, view)
        return *self.query_outputs(view, phrase, top_k)[:2], view

    def align(self, sentence, image=None, max_regions=10, threshold=0.5, view=None):
        view = self.view_for(image, max_regions, threshold, view)
        return *self.align_outputs(view, sentence), view

    def live(self, outputs, text, view):
        """As-you-type search / alignment: problems go to the note under the picture, not to pop-ups."""
        if view is None or not (text or "").strip():
            return None, None, ""
        try:
            out = outputs(view)
        except RegionCapError as e:
            return None, None, f"*{e}*"
        return out if len(out) == 3 else (*out, "")

    def caption_box_ui(self, box, image, max_regions, threshold, view, progress=gr.Progress()):
        """The UI's "Caption box": a malformed box is explained under it; the results on screen stay."""
        try:
            *out, view = self.caption_box(box, image, max_regions, threshold, view, progress)
        except RegionCapError as e:
            return gr.skip(), gr.skip(), gr.skip(), view, f"*{e}*"
        return *out, view, f"Captioned your box {box.strip()}: the last row of the table."

    def query_live(self, phrase, top_k, view):
        return self.live(lambda v: self.query_outputs(v, phrase, top_k), phrase, view)

    def align_live(self, sentence, view):
        return self.live(lambda v: self.align_outputs(v, sentence), sentence, view)

    def add_photos(self, files, request: gr.Request = None, progress=gr.Progress()):
        """Add uploads to the visitor's collection; returns the collection note."""
        paths = [f if isinstance(f, str) else f.get("path") for f in files or [] if f]
        if not paths:
            return gr.skip()
        counts, left_out = self.sessions().add(_session(request), self.holder.get(), paths,
                                               progress=lambda it: progress.tqdm(it, desc="Indexing your photos"))
        if left_out:
            gr.Warning(f"A collection holds at most {MAX_COLLECTION} photos: {left_out} were left out.")
        own = self.sessions().own(_session(request))
        note = (f"**Your collection: {len(own)} photo{'s' * (len(own) != 1)}** (added {counts['added']}, already "
                f"there {counts['unchanged']}); it is searched below and forgotten when you close this tab.")
        failed = [f"{Path(f['path']).name}: {f['error'].split(': ')[-1]}" for f in counts["failed"]]
        return note + ("\n\nNot added: " + "; ".join(failed) if failed else "")

    def search_collection(self, text, top_k=6, request: gr.Request = None):
        """/search: the best images of the collection for a sentence or phrase, matched regions lit."""
        if len((text or "").strip()) > MAX_SENTENCE:
            raise RegionCapError(f"That is too long (over {MAX_SENTENCE} characters): use one sentence.")
        index, where = self.sessions().searchable(_session(request))
        hits = index.search(text, by="images", top_k=max(1, min(int(top_k), 20)))
        results = {"query": text, "by": "images", "collection": where,
                   "results": [{"name": Path(h.path).name, "score": h.score, "matches": h.to_dict()["matches"]}
                               for h in hits]}  # names, not server paths ("path" keys read as files by gradio_client)
        return [self.gallery_item(h) for h in hits], results, [h.path for h in hits]

    def open_hit(self, paths, evt: gr.SelectData):
        """A gallery picture selected: open it in the main view (its own analysis on the Caption tab)."""
        if not paths or evt.index is None or not 0 <= evt.index < len(paths):
            return gr.skip(), gr.skip()
        return paths[evt.index], gr.Tabs(selected="caption")

    def drop_session(self, request: gr.Request = None):
        """The browser tab closed: free the visitor's collection now."""
        if self._sessions is not None:
            self._sessions.drop(_session(request))

    def model_panel(self):
        """(banner, Model tab) once the model has loaded or failed."""
        self.holder.ready.wait(300)
        if self.holder.model is None:
            text = (f"### ⚠️ No model loaded\n{self.holder.error or 'Still loading: reload the page soon.'}\n\n"
                    "Set `REGIONCAP_MODEL` to a model folder or Hub repo id (or put the demo model in "
                    "`assets/demo-model/`) and restart the app.")
            return gr.Markdown(text, visible=True), text, gr.Image(visible=False)
        text, note = describe_model(self.holder)
        curves = Path(self.holder.directory or "") / "loss_curves.png"
        return (gr.Markdown(f"ℹ️ {note} More in the *Model* tab.", visible=bool(note)), text,
                gr.Image(str(curves), visible=True) if self.holder.directory and curves.is_file()
                else gr.Image(visible=False))


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


def example_images(folder: Path = EXAMPLES_DIR) -> list[str]:
    return sorted(str(p) for p in Path(folder).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def build_app(model_path: str | None = None, examples: list[str] | None = None) -> gr.Blocks:
    """The page; the model starts loading in the background at once (``model_path`` None: the default)."""
    examples = example_images() if examples is None else examples
    app = RegionApp(ModelHolder(model_path).start())
    threading.Thread(target=app.warm, args=(examples,), name="regioncap-warm", daemon=True).start()
    picture = {"type": "filepath", "interactive": False, "buttons": ["download", "fullscreen"]}
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
            with gr.Column(scale=3), gr.Tabs() as tabs:
                with gr.Tab("Caption", id="caption"):
                    annotated = gr.Image(label="Annotated image", elem_id="annotated", **picture)
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="Regions", interactive=False, wrap=True,
                                         datatype=["number", "str", "str", "number", "number", "str"],
                                         column_widths=["6%", "34%", "13%", "12%", "12%", "23%"],
                                         elem_id="regions-table")
                    with gr.Accordion("Candidate captions", open=False):
                        gr.Markdown("Each region's caption is chosen among the decoder's candidates by "
                                    "log-prob / (words + 1)^α + weight × similarity to the region (the model's "
                                    "config sets α and the weight; a model that does not rerank lists none).")
                        candidates = gr.Dataframe(headers=CANDIDATE_HEADERS, interactive=False, wrap=True,
                                                  datatype=["number", "str", "number", "number", "number", "str"],
                                                  elem_id="candidates-table")
                    with gr.Row():
                        box = gr.Textbox(label="Caption your own box", placeholder="x1, y1, x2, y2 in image pixels",
                                         info="Type a box, or click two opposite corners on the picture.", scale=3,
                                         max_length=100, elem_id="box")
                        box_button = gr.Button("Caption box", scale=1)
                    box_note = gr.Markdown(elem_id="box-note")
                    download = gr.DownloadButton("Download the result (JSON)", size="sm", elem_id="download")
                with gr.Tab("Search"):
                    with gr.Row():
                        phrase = gr.Textbox(label="Phrase", placeholder="a red circle", scale=3, max_length=MAX_PHRASE,
                                            elem_id="phrase")
                        top_k = gr.Slider(1, 10, value=DEFAULTS["top_k"], step=1, label="Best matches", scale=1)
                    search_note = gr.Markdown()
                    search_image = gr.Image(label="Highlighted matches", elem_id="search-image",
                                            **picture)
                    matches = gr.Dataframe(headers=MATCH_HEADERS, label="Matches, best first", interactive=False,
                                           datatype=["number", "number", "str", "number", "str"], elem_id="matches")
                with gr.Tab("Sentence"):
                    sentence = gr.Textbox(label="Sentence", max_length=MAX_SENTENCE, elem_id="sentence",
                                          placeholder="a large red circle next to a small blue square")
                    aligned = gr.HighlightedText(label="Phrases and their regions", color_map=PHRASE_COLOURS,
                                                 show_legend=False, elem_id="aligned-text")
                    align_image = gr.Image(label="Each phrase's best region", elem_id="align-image", **picture)
                    align_note = gr.Markdown(label="Alignment score", elem_id="align-note")
                with gr.Tab("Collection", id="collection"):
                    gr.Markdown("Search many photos at once: a sentence ranks them by S_kl (each phrase's best "
                                "region, summed). Add up to 50 photos of your own, or search the example collection.")
                    uploads = gr.File(label=f"Add photos to your collection (up to {MAX_COLLECTION})",
                                      file_count="multiple", file_types=["image"], type="filepath", height=120,
                                      elem_id="collection-upload")
                    collection_note = gr.Markdown(elem_id="collection-note")
                    with gr.Row():
                        collection_query = gr.Textbox(label="Sentence or phrase", max_length=MAX_SENTENCE, scale=3,
                                                      placeholder="a red circle next to a blue square",
                                                      elem_id="collection-query")
                        collection_k = gr.Slider(1, 20, value=6, step=1, label="Best images", scale=1)
                    gallery = gr.Gallery(label="Best images (select one to open it)", columns=3, height="auto",
                                         allow_preview=False, object_fit="contain", elem_id="collection-gallery")
                    collection_json = gr.JSON(label="Results", elem_id="collection-results")
                    hit_paths = gr.State([], time_to_live=3600)
                with gr.Tab("Model"):
                    model_info = gr.Markdown("Loading the model…", elem_id="model-info")
                    loss_curves = gr.Image(label="Loss curves", visible=False, interactive=False,
                                           elem_id="loss-curves")

        settings, caption_out = [image, max_regions, threshold], [annotated, table, download, view]
        search_out, align_out = [search_image, matches, search_note], [align_image, aligned, align_note]
        private = {"api_visibility": "private"}  # UI-only events; the API is the four named endpoints
        model = {"concurrency_id": "model"}  # one shared limit for every event that runs the model
        live = {**private, **model, "trigger_mode": "always_last", "show_progress": "hidden"}
        raw = {"preprocess": False, **model}  # handlers read uploads themselves: a bad file gets a clear message

        def then_refresh(event):  # after a new analysis, redo the search and the alignment on its regions
            event.success(user_errors(app.query_live), [phrase, top_k, view], search_out, **live).then(
                user_errors(app.align_live), [sentence, view], align_out, **live).then(
                app.candidate_rows, [view], candidates, **private, trigger_mode="always_last", show_progress="hidden")

        caption_live, box_handler = user_errors(app.caption_live), user_errors(app.caption_box)
        box_ui = user_errors(app.caption_box_ui)
        then_refresh(run.click(user_errors(app.caption), settings, caption_out, api_name="caption", **raw))
        phrase.submit(user_errors(app.query), [phrase, top_k, *settings, view], [search_image, matches, view],
                      api_name="query", **raw)
        then_refresh(box_button.click(box_ui, [box, *settings, view], [*caption_out, box_note],
                                      api_name="caption_box_ui", **raw, **private))
        box_api = gr.Button(visible=False)  # /caption_box for gradio_client: raises on a malformed box
        then_refresh(box_api.click(box_handler, [box, *settings, view], caption_out, api_name="caption_box", **raw))
        sentence.submit(user_errors(app.align), [sentence, *settings, view], [*align_out, view], api_name="align",
                        **raw)
        then_refresh(image.change(caption_live, settings, caption_out, api_name="caption_on_change",
                                  trigger_mode="always_last", **raw, **private))
        for name, slider in (("max_regions", max_regions), ("threshold", threshold)):
            then_refresh(slider.release(caption_live, settings, caption_out, api_name=f"caption_on_{name}", **raw,
                                        **private))
        then_refresh(box.submit(box_ui, [box, *settings, view], [*caption_out, box_note],
                                api_name="caption_box_on_submit", **raw, **private))
        then_refresh(annotated.select(user_errors(app.click_corner), [box, view],
                                      [*caption_out[:3], box, box_note, view], api_name="click_corner", **private,
                                      **model))
        for name, trigger in (("phrase", phrase.change), ("top_k", top_k.release)):
            trigger(user_errors(app.query_live), [phrase, top_k, view], search_out, api_name=f"query_on_{name}", **live)
        sentence.change(user_errors(app.align_live), [sentence, view], align_out, api_name="align_on_change", **live)
        demo.load(app.model_panel, None, [banner, model_info, loss_curves], api_name="model_panel", **private)
        uploads.upload(user_errors(app.add_photos), uploads, collection_note, api_name="add_photos", **private,
                       **model)
        search_args = {"inputs": [collection_query, collection_k], "outputs": [gallery, collection_json, hit_paths],
                       **model}
        collection_query.submit(user_errors(app.search_collection), api_name="search", **search_args)
        collection_k.release(user_errors(app.search_collection), api_name="search_on_top_k", **search_args,
                             **private)
        gallery.select(app.open_hit, hit_paths, [image, tabs], api_name="open_hit", **private)
        demo.unload(app.drop_session)
    return demo


def serve(demo: gr.Blocks, **launch):
    """Queue (a few requests at once, a bounded line) and launch; ``launch`` overrides the defaults."""
    demo.queue(default_concurrency_limit=4, max_size=64)
    defaults = {"server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")), "share": False,
                "max_file_size": MAX_FILE_SIZE, "ssr_mode": False, "footer_links": ["api", "settings"]}
    return demo.launch(**{**defaults, **launch})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    serve(build_app())
