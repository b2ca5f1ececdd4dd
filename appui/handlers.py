"""The web app's event handlers: everything ``app.py`` wires into the page.

``RegionApp`` turns the UI's inputs into ``regioncap`` calls and their results into what the page shows
(annotated pictures written as unique files with their text alternatives, tables, JSON, the
narration); ``appui.model.ModelHolder`` loads the model in the background; the per-visitor collections
live in ``regioncap.index``. No layout here: ``app.py`` builds the page.

Handlers named ``*_on_change`` answer as the visitor types or picks (a cleared input clears the output,
problems go to the note under the picture); "live" is the camera only (``appui/live.py``).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402

from regioncap.cache import ResultCache, content_key  # noqa: E402
from regioncap.data.image import load_image  # noqa: E402
from regioncap.errors import RegionCapError  # noqa: E402
from regioncap.viz import draw_regions, phrase_spans, spotlight  # noqa: E402

from appui import matching  # noqa: E402
from appui.files import OutputFiles  # noqa: E402
from appui.inputs import box_text, parse_box, parse_settings, session_id, upload  # noqa: E402
from appui.model import ModelHolder, describe_model  # noqa: E402
from appui.narration import (alignment_alt, description_html, explorer_html, matches_alt,  # noqa: E402
                             part_box)
from appui.settings import DEFAULTS, MAX_COLLECTION, MAX_SENTENCE, MAX_USER_BOXES  # noqa: E402
from appui.view import View, canvas  # noqa: E402

logger = logging.getLogger("regioncap.app")
CURVES_ALT = "The model's training loss curves: each loss against the training step, one panel per stage."
BOX_INFO = ("x1, y1, x2, y2 in pixels of the picture; or choose a part of the picture above; or click two "
            "opposite corners on the picture.")


def hit_picture(hit):
    """A collection hit's picture: the photo, or a video's frame at the hit's time."""
    if hit.time is None:
        return load_image(hit.path)
    from regioncap.video.reader import frame_at

    return frame_at(hit.path, hit.time)


class RegionApp:
    """Event handlers. ``*_outputs`` format a View; the handlers below them are wired in build_app."""

    def __init__(self, holder: ModelHolder):
        self.holder, self.files = holder, OutputFiles()
        self.cache = ResultCache(32)  # (sha256, max_regions, threshold) -> (result, canvas, scale)
        self._sessions, self._sessions_lock = None, threading.Lock()

    def analyze(self, image, max_regions, threshold, progress=None) -> View:
        if upload(image) is None:
            raise RegionCapError("No image: upload one (or pick an example) first.")
        (path, name), settings, model = upload(image), parse_settings(max_regions, threshold), self.holder.get()
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
            hit = (model.analyze(pil, max_regions=settings[0], score_threshold=settings[1]), *canvas(pil))
            self.cache.put(key, hit)
        return View(path, name, settings, *hit)

    def view_for(self, image, max_regions, threshold, view: View | None) -> View:
        """The session's view if it shows this image with these settings, else a new analysis."""
        if upload(image) is None:
            if view is None:
                raise RegionCapError("No image yet: upload one first (API: pass an image or call /caption first).")
            return view
        if view and view.path == upload(image)[0] and view.settings == parse_settings(max_regions, threshold):
            return view
        return self.analyze(image, max_regions, threshold)

    def draw(self, view: View, picture, regions_boxes, labels, stem) -> str:
        drawn = [{"box": [c * view.scale for c in b], "caption": t} for b, t in zip(regions_boxes, labels)]
        return self.files.image(draw_regions(picture, drawn), stem)

    def caption_outputs(self, view: View):
        """(annotated picture, table rows, JSON file); the regions numbered in reading order on both, the
        JSON in the model's order. The picture's text alternative comes with ``narration_outputs``."""
        stem = Path(view.name).stem + "-regions"
        regions = [view.result.regions[i] for i in view.order()]
        if not any(r.label != "user" for r in regions):
            gr.Warning(f"No region scored {view.settings[1]:.2f} or more: lower the detector score threshold.")
        picture = self.draw(view, view.canvas, [r.box for r in regions], [r.caption or "…" for r in regions], stem)
        rows = [[i + 1, r.caption, "your box" if r.label == "user" else r.label, round(r.score, 3),
                 round(r.caption_score, 2), box_text(r.box)] for i, r in enumerate(regions)]
        narration = view.result.describe()
        data = {"image": view.name, "model": self.holder.path, "description": narration, **view.result.to_dict()}
        return picture, rows, self.files.json(data, stem)

    def narration_outputs(self, view: View | None):
        """(the annotated picture's text alternative, Description block, region explorer, the box field with
        the picture's size) after a new analysis. A step of its own: the API's /caption returns plain files."""
        if view is None:
            return gr.update(alt_text=None), description_html(None), explorer_html(None), gr.update(info=BOX_INFO)
        size = f"this picture is {view.result.width} × {view.result.height} pixels"
        return (gr.update(alt_text=view.result.describe()), description_html(view), explorer_html(view),
                gr.update(info=f"{BOX_INFO[:-1]}: {size}."))

    def box_for_part(self, part, view: View | None):
        """A part of the picture chosen by words ("the top left quarter") -> its box in the box field."""
        if view is None or not part:
            return gr.skip()
        return box_text(part_box(part, view.result.width, view.result.height))

    def candidate_rows(self, view: View | None) -> list[list]:
        """Every region's candidate captions with their scores (empty when the model does not rerank and
        the region is not made up of several detected objects); "objects' similarity" only for those."""
        if view is None:
            return []
        return [[n + 1, c.caption, round(c.log_prob, 3), round(c.similarity, 3),
                 "" if c.member_similarity is None else round(c.member_similarity, 3), round(c.score, 3),
                 "✓" if k == 0 else ""]
                for n, i in enumerate(view.order()) for k, c in enumerate(view.result.candidates[i])]

    def query_outputs(self, view: View, phrase: str, top_k, alt: bool = True):
        """(picture, matches table, note); ``alt``: the picture as a gr.Image with its text alternative
        (the page), else its path (the API)."""
        if not view.result.regions:
            raise RegionCapError("This image has no regions to search: lower the detector score threshold.")
        found = matching.phrase_matches(view.result, phrase, top_k, self.match_threshold())
        matches = found.matches
        picture = spotlight(view.canvas, [[c * view.scale for c in r.box] for r, _ in matches])
        number = view.numbers()
        labels = [f"{sim:.2f}: {r.caption}" for r, sim in matches]
        path = self.draw(view, picture, [r.box for r, _ in matches], labels, "matches")
        return (gr.Image(path, alt_text=matches_alt(view, found.phrase, matches)) if alt else path,
                [[k + 1, number[id(r)], r.caption, round(sim, 3), box_text(r.box)] for k, (r, sim) in
                 enumerate(matches)], found.note)

    def match_threshold(self) -> float:
        """The similarity a true match reaches (:func:`appui.matching.match_threshold`)."""
        return matching.match_threshold(self.holder)

    def align_outputs(self, view: View, sentence: str, alt: bool = True):
        """(picture, highlighted sentence, summary); ``alt`` as in :meth:`query_outputs`."""
        if len((sentence or "").strip()) > MAX_SENTENCE:
            raise RegionCapError(f"That sentence is too long (over {MAX_SENTENCE} characters): use one sentence.")
        alignment, whole = view.result.align(sentence), [0, 0, view.result.width, view.result.height]
        path = self.draw(view, view.canvas, [a.region.box if a.region else whole for a in alignment],
                         [f"{a.phrase} ({a.similarity:.2f})" for a in alignment], "alignment")
        spans, lines, number = [], [], view.numbers()
        for i, (a, span) in enumerate(zip(alignment, phrase_spans(sentence, [a.phrase for a in alignment]))):
            if span:
                spans.append({"entity": str(i + 1), "start": span[0], "end": span[1]})
            target = f"region {number[id(a.region)]} “{a.region.caption}”" if a.region else "the whole image"
            lines.append(f"{i + 1}. **{a.phrase}** → {target}: similarity {a.similarity:.3f}")
        summary = (f"**Image–sentence score S_kl = {alignment.score:.3f}**: the sum over the {len(alignment)} "
                   "phrases of each phrase's best region similarity (Karpathy & Fei-Fei).\n\n" + "\n".join(lines))
        picture = gr.Image(path, alt_text=alignment_alt(view, alignment)) if alt else path
        return picture, {"text": sentence, "entities": spans}, summary

    def add_box(self, view: View, box: list[float], progress=None) -> View:
        if sum(r.label == "user" for r in view.result.regions) >= MAX_USER_BOXES:
            raise RegionCapError(f"At most {MAX_USER_BOXES} boxes of your own: 'Caption regions' starts over.")
        import torch  # loaded with the model by now

        progress and progress(0.3, desc="Captioning your box")
        model, r = self.holder.get(), view.result
        try:
            added = model.analyze(load_image(view.path), boxes=[box], objects=r)  # a box of several detections
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
        shown, scale = canvas(hit_picture(hit))
        boxed = [m for m in hit.matches if m.region_index is not None]
        picture = spotlight(shown, [[c * scale for c in m.box] for m in boxed])
        drawn = [{"box": [c * scale for c in m.box], "caption": f"{m.phrase}: {m.caption}"} for m in boxed]
        path = self.files.image(draw_regions(picture, drawn), Path(hit.path).stem + "-match")
        parts = [f"{m.phrase} → {f'“{m.caption}”' if m.region_index is not None else 'the whole image'} "
                 f"({m.similarity:.2f})" for m in hit.matches]
        name = Path(hit.path).name + (f" at {hit.time:.1f} s" if hit.time is not None else "")  # a video's moment
        return path, f"{name} · S_kl {hit.score:.2f} · " + "; ".join(parts)

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

    def caption_on_change(self, image, max_regions, threshold, progress=gr.Progress()):
        if upload(image) is None:  # the picture was cleared
            return None, [], None, None
        return self.caption(image, max_regions, threshold, progress)

    def caption_box(self, box, image=None, max_regions=10, threshold=0.5, view=None, progress=gr.Progress()):
        view = self.view_for(image, max_regions, threshold, view)
        view = self.add_box(view, parse_box(box, view.result.width, view.result.height), progress)
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
        text = box_text([min(x0, x), min(y0, y), max(x0, x), max(y0, y)])
        *out, view = self.caption_box(text, None, *view.settings, view)
        return *out, text, self.box_note(view, text), view

    @staticmethod
    def box_note(view: View, text: str) -> str:
        """What the note under the box field says once the visitor's box (the result's last region) is in."""
        return f"Captioned your box {text.strip()}: region {view.numbers()[id(view.result.regions[-1])]} in the table."

    def query(self, phrase, top_k=3, image=None, max_regions=10, threshold=0.5, view=None):
        view = self.view_for(image, max_regions, threshold, view)
        return *self.query_outputs(view, phrase, top_k, alt=False)[:2], view

    def align(self, sentence, image=None, max_regions=10, threshold=0.5, view=None):
        view = self.view_for(image, max_regions, threshold, view)
        return *self.align_outputs(view, sentence, alt=False), view

    def refresh(self, outputs, text, view):
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
        return *out, view, self.box_note(view, box)

    def query_on_change(self, phrase, top_k, view):
        return self.refresh(lambda v: self.query_outputs(v, phrase, top_k), phrase, view)

    def align_on_change(self, sentence, view):
        return self.refresh(lambda v: self.align_outputs(v, sentence), sentence, view)

    def add_photos(self, files, request: gr.Request = None, progress=gr.Progress()):
        """Add uploads to the visitor's collection; returns the collection note."""
        paths = [f if isinstance(f, str) else f.get("path") for f in files or [] if f]
        if not paths:
            return gr.skip()
        counts, left_out = self.sessions().add(session_id(request), self.holder.get(), paths,
                                               progress=lambda it: progress.tqdm(it, desc="Indexing your photos"))
        if left_out:
            gr.Warning(f"A collection holds at most {MAX_COLLECTION} photos: {left_out} were left out.")
        own = self.sessions().own(session_id(request))
        if own is None:  # dropped meanwhile: the tab closed, or more visitors than collections evicted it
            return ("*Your collection was closed meanwhile (too many visitors at once): add your photos again "
                    "to search them.*")
        note = (f"**Your collection: {len(own)} photo{'s' * (len(own) != 1)}** (added {counts['added']}, already "
                f"there {counts['unchanged']}); it is searched below and forgotten when you close this tab.")
        failed = [f"{Path(f['path']).name}: {f['error'].split(': ')[-1]}" for f in counts["failed"]]
        return note + ("\n\nNot added: " + "; ".join(failed) if failed else "")

    def search_collection(self, text, top_k=6, request: gr.Request = None):
        """/search: the best images of the collection for a sentence or phrase, matched regions lit."""
        if len((text or "").strip()) > MAX_SENTENCE:
            raise RegionCapError(f"That is too long (over {MAX_SENTENCE} characters): use one sentence.")
        index, where = self.sessions().searchable(session_id(request))
        hits = index.search(text, by="images", top_k=max(1, min(int(top_k), 20)))
        results = {"query": text, "by": "images", "collection": where,
                   "results": [{"name": Path(h.path).name, **({"time": h.time} if h.time is not None else {}),
                                "score": h.score, "matches": h.to_dict()["matches"]}
                               for h in hits]}  # names, not server paths ("path" keys read as files by gradio_client)
        opened = [h.path if h.time is None else self.files.image(hit_picture(h), Path(h.path).stem + "-frame")
                  for h in hits]  # a video's moment opens as its frame on the Caption tab
        return [self.gallery_item(h) for h in hits], results, opened

    def open_hit(self, paths, evt: gr.SelectData):
        """A gallery picture selected: open it in the main view (its own analysis on the Caption tab)."""
        if not paths or evt.index is None or not 0 <= evt.index < len(paths):
            return gr.skip(), gr.skip()
        return paths[evt.index], gr.Tabs(selected="caption")

    def drop_session(self, request: gr.Request = None):
        """The browser tab closed: free the visitor's collection now."""
        if self._sessions is not None:
            self._sessions.drop(session_id(request))

    def model_panel(self):
        """(banner, Model tab) once the model has loaded or failed."""
        self.holder.ready.wait(300)
        if self.holder.model is None:
            text = (f"### ⚠️ No model loaded\n{self.holder.error or 'Still loading: reload the page soon.'}\n\n"
                    "Set `REGIONCAP_MODEL` to a model folder or Hub repo id (or put the demo model in "
                    "`assets/demo-model/`) and restart the app.")
            return gr.Markdown(text, visible=True), text, gr.Image(visible=False)
        text, note = describe_model(self.holder)
        from regioncap.hub import PLOT_FILE

        curves = Path(self.holder.directory or "") / PLOT_FILE
        return (gr.Markdown(f"ℹ️ {note} More in the *Model* tab.", visible=bool(note)), text,
                gr.Image(str(curves), visible=True, alt_text=CURVES_ALT) if self.holder.directory and curves.is_file()
                else gr.Image(visible=False))
