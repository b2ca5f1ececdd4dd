"""The Live tab: the visitor's camera streamed through the model, regions numbered stably across frames.

Gradio's webcam stream (``gr.Image(sources="webcam", streaming=True)`` and its ``stream`` event): the
browser captures a JPEG every ``LIVE_EVERY`` seconds while the stream holds a place in the queue and
posts it to ``/stream/{event_id}``, where Gradio 6 keeps only the latest one; the server answers one
frame at a time and then takes the newest that arrived meanwhile. So when the server is busy, frames
are dropped, never queued (``trigger_mode`` does not apply to a stream's chunks). ``LIVE_TIME_LIMIT``
ends one visitor's stream. One stream at a time is analysed (:class:`CameraLease`); up to
``LIVE_STREAMS`` are connected at once (the ``live`` concurrency group), the others told that the camera
is busy and for how long, and a later one waits in the queue.

The browser is asked for a camera about ``WEBCAM_WIDTH`` px wide, the back one where there is one, not
mirrored (Gradio's default asks for 1920×1440, mirrored). Each frame is reduced to display size
(``DISPLAY_MAX``) and to the live work size (the model's own input size, at most torchvision's
``fasterrcnn_mobilenet_v3_large_320_fpn`` settings: 320 px short side, 640 long, 150 proposals; a COCO-size
model runs as a twin with those settings sharing its weights), analysed, its regions matched to the last
frames' (:class:`regioncap.track.RegionTracker`), and drawn on the display-size frame. The drawn frame goes
back inline (a ``data:`` URI in an ``<img>`` whose alt text is the narration), so nothing is written to disk
for it: Gradio would copy every returned picture file into its cache, one folder per frame.

A polite live region announces what came into view and where (:mod:`appui.live_session`: new tracks only,
at most one announcement every 2 s); "Describe now" reads the narration of the regions in view there.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import threading
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from regioncap.errors import RegionCapError  # noqa: E402
from regioncap.viz import draw_regions, spotlight  # noqa: E402

from appui import matching  # noqa: E402
from appui.inputs import parse_settings  # noqa: E402
from appui.settings import MAX_PHRASE  # noqa: E402
from appui.live_session import LIVE_TIME_LIMIT, CameraLease, LiveSession, busy_text  # noqa: E402

logger = logging.getLogger("regioncap.app")
LIVE_EVERY = 0.1  # seconds between the frames the browser sends (at most 10 frames/s)
LIVE_STREAMS = 4  # streams connected at once: one analysed (a 2-vCPU Space stays usable), the others told it is busy
LIVE_MIN_SIDE, LIVE_MAX_SIDE, LIVE_PROPOSALS = 320, 640, 150  # torchvision's mobilenet_v3_large_320_fpn
WEBCAM_WIDTH = 640  # the camera width asked of the browser (ideal: it sends what the camera has nearest)
DISPLAY_MAX = 640  # long side of the drawn frame sent back
JPEG_QUALITY = 80  # of the drawn frame (4:2:0): 17-35 kB for the test scenes at 640x480
WEBCAM = gr.WebcamOptions(mirror=False, constraints={"video": {"width": {"ideal": WEBCAM_WIDTH},
                                                               "facingMode": "environment"}})
RECORD_NAMES = {"Record": "Record: stream your camera through the model", "Stop": "Stop the stream",
                "Waiting": "Waiting for the server to take the stream"}
# Gradio names the webcam's button "capture photo" (aria-label) whatever it shows; give it the name of what
# it does, keeping its visible word first (WCAG 2.5.3), again whenever Gradio re-renders or re-labels it.
RECORD_NAME_JS = "const names = " + json.dumps(RECORD_NAMES) + """;
const fix = () => {
  for (const b of document.querySelectorAll('#live-camera button.capture-button')) {
    const text = b.textContent.trim(), name = names[text] || text;
    if (name && b.getAttribute('aria-label') !== name) b.setAttribute('aria-label', name);
  }
};
if (!window.regioncapRecordName) {  // once a page, however often the component mounts
  window.regioncapRecordName = new MutationObserver(fix);
  window.regioncapRecordName.observe(document.body, {subtree: true, childList: true, characterData: true,
                                                     attributes: true, attributeFilter: ['aria-label']});
}
fix();
"""


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


def display_size(width: int, height: int, longest: int = DISPLAY_MAX) -> tuple[int, int]:
    """The size a width x height frame is drawn at: its long side at most ``longest`` (never enlarged)."""
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


# -- the HTML the tab shows ------------------------------------------------------------------------
def picture_html(picture: Image.Image, alt: str) -> str:
    """The drawn frame inline (a JPEG ``data:`` URI: Gradio keeps no copy of it) with ``alt`` as its text."""
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=JPEG_QUALITY)
    src = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return (f'<img src="{src}" alt="{html.escape(alt)}" width="{picture.width}" height="{picture.height}" '
            f'style="max-width: 100%; height: auto">')


def spoken_html(text: str) -> str:
    """The live region: a screen reader reads its text whenever it changes (politely, when it is idle)."""
    return f'<p aria-live="polite" aria-atomic="true">{html.escape(text)}</p>'


def captions_html(tracks) -> str:
    """The regions as an ordered list whose items carry the regions' own numbers (a screen reader reads
    "3, a red circle")."""
    if not tracks:
        return "<p>No region found in this frame.</p>"
    items = "".join(f'<li value="{t.number}">{html.escape(t.caption or "…")}</li>'
                    for t in sorted(tracks, key=lambda t: t.number))
    return f'<ol aria-label="Regions in view, by number">{items}</ol>'


class LiveApp:
    """The Live tab's handler and layout, on a RegionApp's model holder."""

    def __init__(self, app):
        self.app, self._lock = app, threading.Lock()
        self._base = self._model = None
        self.lease = CameraLease()

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

    # -- the stream handler ---------------------------------------------------------------------
    def frame(self, image, max_regions=10, threshold=0.5, phrase="", session: LiveSession | None = None):
        """One frame -> (drawn frame, region list, phrase note, status, announcement, session). Never raises: a
        problem is told in the status line (a failing frame is logged once a stream) and the stream goes on."""
        session = session or LiveSession()
        skip = gr.skip()
        if image is None:
            return skip, skip, skip, skip, skip, session
        try:
            now = time.monotonic()
            session.begin(now)
            wait = self.lease.claim(session, now, session.started + LIVE_TIME_LIMIT)
            if wait is not None:
                text = busy_text(wait, session.started + LIVE_TIME_LIMIT - now)
                spoken, session.told_busy = (skip if session.told_busy else spoken_html(text)), True
                return skip, skip, skip, f"*{text}*", spoken, session
            answer = self._frame(image, max_regions, threshold, phrase, session)
            self.lease.touch(session, session.last_frame)
            return answer
        except RegionCapError as e:
            return skip, skip, skip, f"*{e}*", skip, session
        except Exception:
            session.failures += 1
            if session.failures == 1:
                logger.exception("live frame failed (further failures of this stream are not logged)")
            return (skip, skip, skip, "*This frame could not be analysed (see the server log); trying the next "
                    "one.*", skip, session)

    def _frame(self, image, max_regions, threshold, phrase, session: LiveSession):
        t0 = time.perf_counter()
        frame = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(image).convert("RGB")
        settings, model = parse_settings(max_regions, threshold), self.model()
        shown = display_size(*frame.size)
        display = frame.resize(shown, Image.Resampling.BILINEAR, reducing_gap=2.0) if shown != frame.size else frame
        size = work_size(model, *display.size)
        small = display.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0) if size != display.size else display
        t1 = time.perf_counter()
        result = model.analyze(small, max_regions=settings[0], score_threshold=settings[1])
        t2 = time.perf_counter()
        sx, sy = display.width / small.width, display.height / small.height
        boxes = [[r.box[0] * sx, r.box[1] * sy, r.box[2] * sx, r.box[3] * sy] for r in result.regions]
        tracks = session.tracker.update(boxes, [r.caption for r in result.regions], result.vectors.tolist())
        session.tracks, session.size = tracks, display.size
        drawn, note = self._draw(display, result, tracks, phrase)
        picture = picture_html(drawn, session.narration())
        t3 = time.perf_counter()
        session.timings_ms = {"reduce": (t1 - t0) * 1e3, "analysis": (t2 - t1) * 1e3, "draw": (t3 - t2) * 1e3}
        now = time.monotonic()
        fps, said = session.tick(now), session.announce(now)
        listed = captions_html(tracks)
        listed, session.captions_html = (gr.skip() if listed == session.captions_html else listed), listed
        camera = "" if display is frame else f" (your camera sends {frame.width}×{frame.height})"
        status = (f"**{fps:.1f} frames/s** · {(t3 - t0) * 1e3:.0f} ms a frame (analysis {(t2 - t1) * 1e3:.0f} ms) · "
                  f"analysed at {small.width}×{small.height} px for speed, boxes drawn on a "
                  f"{display.width}×{display.height} frame{camera}")
        return picture, listed, note, status, gr.skip() if said is None else spoken_html(said), session

    def _draw(self, frame: Image.Image, result, tracks, phrase: str) -> tuple[Image.Image, str]:
        """The frame with its numbered regions; with a phrase, only the matching ones, lit as on the Search tab."""
        phrase = matching.check_phrase(phrase)  # too long: a RegionCapError, said under the phrase
        numbers = [t.number for t in tracks]
        if not phrase:
            return draw_regions(frame, tracks, [t.caption or "…" for t in tracks], numbers=numbers), ""
        if not tracks:
            return frame, "*No region in this frame to search: lower the detector score threshold.*"
        try:  # the Search tab's rule: the model's calibrated match threshold
            found = matching.phrase_matches(result, phrase, len(tracks), matching.match_threshold(self.app.holder))
        except RegionCapError as e:  # an unknown word: said under the phrase, the frame still shown
            return draw_regions(frame, tracks, [t.caption or "…" for t in tracks], numbers=numbers), f"*{e}*"
        index = {id(r): i for i, r in enumerate(result.regions)}
        hits = [(tracks[index[id(r)]], sim) for r, sim in found.matches]
        if not hits:
            return frame, found.note
        picture = spotlight(frame, [t.box for t, _ in hits])
        picture = draw_regions(picture, [t for t, _ in hits], [f"{sim:.2f}: {t.caption}" for t, sim in hits],
                               numbers=[t.number for t, _ in hits])
        return picture, "Matches, best first: " + ", ".join(f"region {t.number} ({sim:.2f})" for t, sim in hits)

    def describe_now(self, session: LiveSession | None, spoken: str | None = None) -> str:
        """The "Describe now" button: the narration of the regions in view, into the live region (said again
        when it is the same text; the next announcement then waits its 2 s)."""
        text = session.narration() if session is not None else LiveSession().narration()
        if session is not None and session.ended:
            text = f"The stream has stopped. Its last frame: {text}"
        elif session is not None and session.size is None and session.told_busy:
            text = "Nothing has been analysed yet: the camera is busy with another visitor's stream."
        if spoken == spoken_html(text):
            text += "\u00a0"  # a changed text is read again
        if session is not None:
            session.announced_at = time.monotonic()
        return spoken_html(text)

    # -- the page -------------------------------------------------------------------------------
    def layout(self, max_regions, threshold) -> None:
        """The tab's contents and its events (inside ``gr.Tab``); ``max_regions`` and ``threshold`` are the
        page's sliders, read with every frame."""
        gr.Markdown(f"Point your camera at something, press **Record**: each frame comes back with numbered "
                    f"regions and captions. A region keeps its number while it stays in view; what comes into "
                    f"view is announced. Frames are analysed at a reduced size for speed; when the server is "
                    f"busy a frame is skipped, never queued. A stream lasts {LIVE_TIME_LIMIT} s; press Record "
                    f"again for more.")
        with gr.Row():
            with gr.Column(scale=3, min_width=280):
                camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="pil", height=240,
                                  webcam_options=WEBCAM, elem_id="live-camera")
                shown = gr.HTML("", elem_id="live-frame")
            with gr.Column(scale=2, min_width=200):
                status = gr.Markdown("Press **Record** to start.", elem_id="live-status")
                spoken = gr.HTML(spoken_html(""), elem_id="live-spoken", js_on_load=RECORD_NAME_JS)
                describe_button = gr.Button("Describe now", size="sm", elem_id="live-describe")
                phrase = gr.Textbox(label="Light up regions matching a phrase", placeholder="a red circle",
                                    max_length=MAX_PHRASE, elem_id="live-phrase")
                note = gr.Markdown(elem_id="live-matches")
                gr.Markdown("### Regions in view")
                listed = gr.HTML(elem_id="live-captions")
        session = gr.State(None, time_to_live=LIVE_TIME_LIMIT * 4)
        private = {"show_progress": "hidden", "api_visibility": "private"}
        camera.stream(self.frame, [camera, max_regions, threshold, phrase, session],
                      [shown, listed, note, status, spoken, session], stream_every=LIVE_EVERY,
                      time_limit=LIVE_TIME_LIMIT, concurrency_limit=LIVE_STREAMS, concurrency_id="live",
                      api_name="live_frame", **private).then(
            self.ended, [status, session], status, queue=False, **private)
        describe_button.click(self.describe_now, [session, spoken], spoken, queue=False, **private)

    def ended(self, status: str | None, session: LiveSession | None) -> str:
        """A stream has ended (its time limit, or Stop): the camera is free for the next, and the status says so."""
        if session is not None:
            session.ended = True
            self.lease.release(session)
        return self.stopped(status)

    @staticmethod
    def stopped(status: str | None) -> str:
        """The status line once a stream has ended (its time limit, or Stop): the last figures stay."""
        last = (status or "").split(" · ")[0]
        return (f"{last + ' · ' if 'frames/s' in last else ''}*The stream has stopped (each lasts up to "
                f"{LIVE_TIME_LIMIT} s): press Record for another (Stop first, if the camera still shows it).*")
