"""The Live tab: the visitor's camera streamed through the model, regions numbered stably across frames.

Gradio's webcam stream (``gr.Image(sources="webcam", streaming=True)`` and its ``stream`` event): the
browser captures a JPEG every ``LIVE_EVERY`` seconds while the stream holds a place in the queue and
posts it to ``/stream/{event_id}``, where Gradio 6 keeps only the latest one; the server answers one
frame at a time and then takes the newest that arrived meanwhile. So when the server is busy, frames
are dropped, never queued (``trigger_mode`` does not apply to a stream's chunks). ``LIVE_TIME_LIMIT``
ends one visitor's stream; ``LIVE_CONCURRENCY`` streams run at once (the ``live`` concurrency group),
others wait in the queue without sending frames.

Each frame is reduced to the live work size (the model's own input size, at most torchvision's
``fasterrcnn_mobilenet_v3_large_320_fpn`` settings: 320 px short side, 640 long, 150 proposals; a COCO-size
model runs as a twin with those settings sharing its weights), analysed, its regions matched to the last
frames' (:class:`regioncap.track.RegionTracker`), and drawn on the frame the visitor sent.
"""

from __future__ import annotations

import collections
import html
import logging
import os
import threading
import time
from dataclasses import dataclass, field

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from regioncap.errors import RegionCapError  # noqa: E402
from regioncap.track import RegionTracker  # noqa: E402
from regioncap.viz import draw_regions, spotlight  # noqa: E402

from appui.common import MAX_PHRASE, THRESHOLD_HOW, _settings  # noqa: E402

logger = logging.getLogger("regioncap.app")
LIVE_EVERY = 0.1  # seconds between the frames the browser sends (at most 10 frames/s)
LIVE_TIME_LIMIT = 30  # seconds one visitor's stream lasts; "Record" starts another
LIVE_CONCURRENCY = 1  # streams analysed at once: a 2-vCPU Space stays usable for the other tabs
LIVE_MIN_SIDE, LIVE_MAX_SIDE, LIVE_PROPOSALS = 320, 640, 150  # torchvision's mobilenet_v3_large_320_fpn
FPS_WINDOW = 3.0  # seconds of answered frames the frames-per-second figure is taken over
STALE = 2.0  # seconds without a frame after which a stream counts as new (fresh numbers and count)


def live_model(model):
    """``model`` itself when its detector already works at the live size or smaller, else a twin whose
    detector resizes frames to at most LIVE_MIN_SIDE / LIVE_MAX_SIDE and keeps LIVE_PROPOSALS proposals,
    holding the same weight tensors (no second copy in memory; the CPU fast path exports its own graphs)."""
    d = model.config.detector
    if (d.min_size <= LIVE_MIN_SIDE and d.max_size <= LIVE_MAX_SIDE
            and max(d.rpn_pre_nms_top_n_test, d.rpn_post_nms_top_n_test) <= LIVE_PROPOSALS):
        return model
    config = type(model.config).from_dict(model.config.to_dict())
    c = config.detector
    c.min_size, c.max_size = min(c.min_size, LIVE_MIN_SIDE), min(c.max_size, LIVE_MAX_SIDE)
    c.rpn_pre_nms_top_n_test = min(c.rpn_pre_nms_top_n_test, LIVE_PROPOSALS)
    c.rpn_post_nms_top_n_test = min(c.rpn_post_nms_top_n_test, LIVE_PROPOSALS)
    twin = type(model)(config, model.vocab, download=False)
    twin.load_state_dict(model.state_dict(), strict=True, assign=True)
    twin.to(model.device).eval()
    twin.prepare_inference()
    return twin


def work_size(model, width: int, height: int) -> tuple[int, int]:
    """The size the model's detector resizes a width x height frame to (never larger than the frame)."""
    d = model.config.detector
    scale = min(1.0, d.min_size / min(width, height), d.max_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class LiveSession:
    """One visitor's stream: the tracker, when the last frames were answered, what the list shows."""

    tracker: RegionTracker = field(default_factory=RegionTracker)
    times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    captions_html: str | None = None
    timings_ms: dict = field(default_factory=dict)  # the last frame's: reduce, analysis, draw (and write)

    def begin(self, now: float) -> None:
        """A frame arrives at ``now``: after a pause of over STALE seconds the stream starts afresh."""
        if self.times and now - self.times[-1] > STALE:
            self.times.clear()
            self.tracker.reset()
            self.captions_html = None

    def tick(self, now: float) -> float:
        """Record a frame answered at ``now``; frames per second over the last FPS_WINDOW seconds."""
        self.times.append(now)
        recent = [t for t in self.times if now - t <= FPS_WINDOW]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


def captions_html(tracks) -> str:
    """The regions as an ordered list whose items carry the regions' own numbers (a screen reader reads
    "3, a red circle")."""
    if not tracks:
        return "<p>No region found in this frame.</p>"
    items = "".join(f'<li value="{t.number}">{html.escape(t.caption or "…")}</li>'
                    for t in sorted(tracks, key=lambda t: t.number))
    return f'<ol aria-label="Regions in view, by number">{items}</ol>'


class LiveApp:
    """The Live tab's handler and layout, on a RegionApp's model holder and output files."""

    def __init__(self, app):
        self.app, self._lock = app, threading.Lock()
        self._base = self._model = None
        self._floor = None

    def model(self):
        """The model frames run through (see :func:`live_model`), built once per loaded model."""
        base = self.app.holder.get()
        with self._lock:
            if self._base is not base:
                self._model, self._base = live_model(base), base
            return self._model

    def warm(self) -> None:
        """Build the live model while the app starts (a twin's export takes a few seconds)."""
        self.app.holder.ready.wait()
        if self.app.holder.model is not None:
            try:
                self.model()
            except Exception:  # reported with the first frame; it must not stop the app
                logger.exception("live model")

    def match_threshold(self) -> float:
        if self._floor is None:
            self._floor = self.app.match_threshold()
        return self._floor

    # -- the stream handler ---------------------------------------------------------------------
    def frame(self, image, max_regions=10, threshold=0.5, phrase="", session: LiveSession | None = None):
        """One frame -> (drawn frame, region list, phrase note, status, session). Never raises: a problem
        is told in the status line and the stream goes on with the next frame."""
        session = session or LiveSession()
        if image is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
        try:
            return self._frame(image, max_regions, threshold, phrase, session)
        except RegionCapError as e:
            return gr.skip(), gr.skip(), gr.skip(), f"*{e}*", session
        except Exception:
            logger.exception("live frame failed")
            return (gr.skip(), gr.skip(), gr.skip(),
                    "*This frame could not be analysed (see the server log); trying the next one.*", session)

    def _frame(self, image, max_regions, threshold, phrase, session: LiveSession):
        t0 = time.perf_counter()
        session.begin(time.monotonic())
        frame = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(image).convert("RGB")
        settings, model = _settings(max_regions, threshold), self.model()
        size = work_size(model, *frame.size)
        small = frame.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0) if size != frame.size else frame
        t1 = time.perf_counter()
        result = model.analyze(small, max_regions=settings[0], score_threshold=settings[1])
        t2 = time.perf_counter()
        sx, sy = frame.width / small.width, frame.height / small.height
        boxes = [[r.box[0] * sx, r.box[1] * sy, r.box[2] * sx, r.box[3] * sy] for r in result.regions]
        tracks = session.tracker.update(boxes, [r.caption for r in result.regions], result.vectors.tolist())
        picture, note = self._draw(frame, result, tracks, phrase)
        path = self.app.files.image(picture, "live")
        t3 = time.perf_counter()
        session.timings_ms = {"reduce": (t1 - t0) * 1e3, "analysis": (t2 - t1) * 1e3, "draw": (t3 - t2) * 1e3}
        fps = session.tick(time.monotonic())
        listed = captions_html(tracks)
        listed, session.captions_html = (gr.skip() if listed == session.captions_html else listed), listed
        status = (f"**{fps:.1f} frames/s** · {(t3 - t0) * 1e3:.0f} ms a frame (analysis {(t2 - t1) * 1e3:.0f} ms) · "
                  f"analysed at {small.width}×{small.height} px for speed, boxes drawn on your "
                  f"{frame.width}×{frame.height} frame")
        return path, listed, note, status, session

    def _draw(self, frame: Image.Image, result, tracks, phrase: str) -> tuple[Image.Image, str]:
        """The frame with its numbered regions; with a phrase, only the matching ones, lit as on the Search tab."""
        phrase = (phrase or "").strip()
        numbers = [t.number for t in tracks]
        if not phrase:
            return draw_regions(frame, tracks, [t.caption or "…" for t in tracks], numbers=numbers), ""
        if len(phrase) > MAX_PHRASE:
            raise RegionCapError(f"That is too long for a phrase (over {MAX_PHRASE} characters): try 'a red box'.")
        if not tracks:
            return frame, "*No region in this frame to search: lower the detector score threshold.*"
        try:
            found = result.query(phrase, top_k=len(tracks))
        except RegionCapError as e:  # an unknown word: said under the phrase, the frame still shown
            return draw_regions(frame, tracks, [t.caption or "…" for t in tracks], numbers=numbers), f"*{e}*"
        index, floor = {id(r): i for i, r in enumerate(result.regions)}, self.match_threshold()
        hits = [(tracks[index[id(r)]], sim) for r, sim in found if sim >= floor]
        if not hits:
            return frame, (f"*No region matches this phrase well: the best similarity is {found[0][1]:.2f}, "
                           f"below {floor:.2f}* ({THRESHOLD_HOW})")
        picture = spotlight(frame, [t.box for t, _ in hits])
        picture = draw_regions(picture, [t for t, _ in hits], [f"{sim:.2f}: {t.caption}" for t, sim in hits],
                               numbers=[t.number for t, _ in hits])
        return picture, "Matches, best first: " + ", ".join(f"region {t.number} ({sim:.2f})" for t, sim in hits)

    # -- the page -------------------------------------------------------------------------------
    def layout(self, max_regions, threshold) -> None:
        """The tab's contents and its stream event (inside ``gr.Tab``); ``max_regions`` and ``threshold``
        are the page's sliders, read with every frame."""
        gr.Markdown(f"Point your camera at something, press **Record**: each frame comes back with numbered "
                    f"regions and captions. A region keeps its number while it stays in view. Frames are "
                    f"analysed at a reduced size for speed; when the server is busy a frame is skipped, "
                    f"never queued. A stream lasts {LIVE_TIME_LIMIT} s; press Record again for more.")
        with gr.Row():
            with gr.Column(scale=3, min_width=280):
                camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="pil", height=240,
                                  elem_id="live-camera")
                shown = gr.Image(label="Regions, live", type="filepath", interactive=False, elem_id="live-frame",
                                 buttons=["fullscreen"])
            with gr.Column(scale=2, min_width=200):
                status = gr.Markdown("Press **Record** to start.", elem_id="live-status")
                phrase = gr.Textbox(label="Light up regions matching a phrase", placeholder="a red circle",
                                    max_length=MAX_PHRASE, elem_id="live-phrase")
                note = gr.Markdown(elem_id="live-matches")
                gr.Markdown("**Regions in view**")
                listed = gr.HTML(elem_id="live-captions")
        session = gr.State(None, time_to_live=LIVE_TIME_LIMIT * 4)
        camera.stream(self.frame, [camera, max_regions, threshold, phrase, session],
                      [shown, listed, note, status, session], stream_every=LIVE_EVERY, time_limit=LIVE_TIME_LIMIT,
                      concurrency_limit=LIVE_CONCURRENCY, concurrency_id="live", show_progress="hidden",
                      api_name="live_frame", api_visibility="private").then(
            self.stopped, status, status, queue=False, show_progress="hidden", api_visibility="private")

    @staticmethod
    def stopped(status: str | None) -> str:
        """The status line once a stream has ended (its time limit, or Stop): the last figures stay."""
        last = (status or "").split(" · ")[0]
        return (f"{last + ' · ' if 'frames/s' in last else ''}*The stream has stopped (each lasts up to "
                f"{LIVE_TIME_LIMIT} s): press Record for another (Stop first, if the camera still shows it).*")
