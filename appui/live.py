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

Announcements (a polite live region): what came into view and where, only for new tracks (a region that
merely moves keeps its track), at most one every ``ANNOUNCE_EVERY`` seconds; "Describe now" reads the
narration of the regions in view.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from regioncap.errors import RegionCapError  # noqa: E402
from regioncap.narrate import came_into_view, describe, reading_order  # noqa: E402
from regioncap.track import RegionTracker  # noqa: E402
from regioncap.viz import draw_regions, spotlight  # noqa: E402

from appui.common import MAX_PHRASE, THRESHOLD_HOW, _settings  # noqa: E402

logger = logging.getLogger("regioncap.app")
LIVE_EVERY = 0.1  # seconds between the frames the browser sends (at most 10 frames/s)
LIVE_TIME_LIMIT = 30  # seconds one visitor's stream lasts; "Record" starts another
LIVE_STREAMS = 4  # streams connected at once: one analysed (a 2-vCPU Space stays usable), the others told it is busy
LIVE_MIN_SIDE, LIVE_MAX_SIDE, LIVE_PROPOSALS = 320, 640, 150  # torchvision's mobilenet_v3_large_320_fpn
WEBCAM_WIDTH = 640  # the camera width asked of the browser (ideal: it sends what the camera has nearest)
DISPLAY_MAX = 640  # long side of the drawn frame sent back
JPEG_QUALITY = 80  # of the drawn frame (4:2:0): ~30-60 kB at 640x480
FPS_WINDOW = 3.0  # seconds of answered frames the frames-per-second figure is taken over
STALE = 2.0  # seconds without a frame after which a stream counts as new (fresh numbers and count)
ANNOUNCE_EVERY = 2.0  # seconds between two announcements at least
ANNOUNCE_SEEN = 2  # frames a region must have been seen in before it is announced (a one-frame flicker is not)
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
new MutationObserver(fix).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                   attributes: true, attributeFilter: ['aria-label']});
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


# -- announcements: pure functions -----------------------------------------------------------------
def due(now: float, last: float | None, every: float = ANNOUNCE_EVERY) -> bool:
    """Whether an announcement may be made at ``now`` when the last one was made at ``last`` (None: none yet)."""
    return last is None or now - last >= every


def newcomers(tracks: Sequence, announced: Mapping[int, object], min_seen: int = ANNOUNCE_SEEN) -> list:
    """The tracks to announce: in view (``missed == 0``), seen in at least ``min_seen`` frames, and not yet
    announced. ``announced`` maps a number to the track announced under it: a region that moves keeps its
    Track object, so it is never news again; a new region that takes a freed number is a new object."""
    return [t for t in tracks if t.missed == 0 and t.seen >= min_seen and announced.get(t.number) is not t]


def announcement(tracks: Sequence, width: float, height: float) -> str:
    """Each track's "a red triangle came into view at the left" as a sentence, in reading order."""
    order = reading_order([t.box for t in tracks], width, height)
    said = (came_into_view(tracks[i].caption or "a region", tracks[i].box, width, height) for i in order)
    return " ".join(s[:1].upper() + s[1:] + "." for s in said)


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


@dataclass
class LiveSession:
    """One visitor's stream: the tracker, when the last frames were answered, what the list shows, what was
    announced."""

    tracker: RegionTracker = field(default_factory=RegionTracker)
    times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    captions_html: str | None = None
    timings_ms: dict = field(default_factory=dict)  # the last frame's: reduce, analysis, draw (and encode)
    started: float | None = None  # when this stream's first frame arrived
    last_frame: float | None = None  # when its latest frame arrived (answered or not)
    ended: bool = False  # the stream has stopped: its next frame starts a new one
    failures: int = 0  # frames of this stream that failed (the first is logged)
    tracks: list = field(default_factory=list)  # the last answered frame's tracks
    size: tuple[int, int] | None = None  # ... in the coordinates of this drawn frame
    announced: dict = field(default_factory=dict)  # number -> the Track announced under it
    announced_at: float | None = None
    told_busy: bool = False

    def begin(self, now: float) -> None:
        """A frame arrives at ``now``: after a stop, a pause of over STALE seconds or LIVE_TIME_LIMIT seconds
        (no stream lasts longer), the stream starts afresh."""
        if (self.ended or self.last_frame is None or now - self.last_frame > STALE
                or now - self.started > LIVE_TIME_LIMIT):
            self.times.clear()
            self.tracker.reset()
            self.captions_html, self.tracks, self.size, self.announced, self.announced_at = None, [], None, {}, None
            self.started, self.ended, self.failures, self.told_busy = now, False, 0, False
        self.last_frame = now

    def tick(self, now: float) -> float:
        """Record a frame answered at ``now``; frames per second over the last FPS_WINDOW seconds."""
        self.times.append(now)
        self.last_frame = now  # a pause is counted from here: a slow frame is no pause
        recent = [t for t in self.times if now - t <= FPS_WINDOW]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0

    def announce(self, now: float) -> str | None:
        """What to say now about the last frame's tracks (see :func:`newcomers`), or None: nothing new, or
        the last announcement was under ANNOUNCE_EVERY seconds ago (the news waits for the next)."""
        fresh = newcomers(self.tracks, self.announced) if self.size else []
        if not fresh or not due(now, self.announced_at):
            return None
        self.announced.update({t.number: t for t in fresh})
        self.announced_at = now
        return announcement(fresh, *self.size)

    def narration(self) -> str:
        """The narration of the regions in view in the last answered frame."""
        if self.size is None:
            return "Nothing has been analysed yet: press Record to start the camera."
        return describe([t for t in self.tracks if t.missed == 0], *self.size)


class CameraLease:
    """The one stream the model analyses. A stream holds the camera from its first frame while its frames keep
    coming (a pause of STALE seconds frees it) and until it ends; any other is told how long that is."""

    def __init__(self):
        self._lock = threading.Lock()
        self.holder, self.until, self.last = None, 0.0, 0.0

    def claim(self, holder, now: float, until: float) -> float | None:
        """``holder``'s frame at ``now``, its stream ending at ``until``: None when the camera is (now) its own,
        else the seconds until the stream that holds it ends."""
        with self._lock:
            if self.holder is not None and self.holder is not holder and now - self.last <= STALE and now < self.until:
                return self.until - now
            self.holder, self.until, self.last = holder, until, now
            return None

    def touch(self, holder, now: float) -> None:
        """``holder``'s frame was answered at ``now``: a slow frame does not free the camera."""
        with self._lock:
            if self.holder is holder:
                self.last = now

    def release(self, holder) -> None:
        with self._lock:
            if self.holder is holder:
                self.holder = None


def busy_text(wait: float, own_left: float) -> str:
    """What a visitor whose frames wait for the camera is told: for how long, and whether their own stream
    lasts that long."""
    then = ("your stream starts then" if own_left > wait + 1 else "press Record again then")
    return f"The camera is busy: another visitor's stream ends in about {max(1, round(wait))} s; {then}."


class LiveApp:
    """The Live tab's handler and layout, on a RegionApp's model holder."""

    def __init__(self, app):
        self.app, self._lock = app, threading.Lock()
        self._base = self._model = None
        self._floor = None
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

    def match_threshold(self) -> float:
        if self._floor is None:
            self._floor = self.app.match_threshold()
        return self._floor

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
        settings, model = _settings(max_regions, threshold), self.model()
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

    def describe_now(self, session: LiveSession | None, spoken: str | None = None) -> str:
        """The "Describe now" button: the narration of the regions in view, into the live region (said again
        when it is the same text; the next announcement then waits ANNOUNCE_EVERY seconds)."""
        text = session.narration() if session is not None else LiveSession().narration()
        if session is not None and session.ended:
            text = f"The stream has stopped. Its last frame: {text}"
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
