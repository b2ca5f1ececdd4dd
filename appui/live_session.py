"""One visitor's Live stream: its tracker and frame times, what it has announced, and the camera lease that
lets one stream at a time be analysed.

What is announced (pure functions, :func:`due` and :func:`newcomers`): a region that came into view, once,
when its track is new — a region that moves keeps its track (``regioncap.track``) and is not news, one seen in
a single frame is not announced either — and at most one announcement every ``ANNOUNCE_EVERY`` seconds
(what comes into view meanwhile is said with the next). The words are ``regioncap.narrate``'s.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from regioncap.narrate import came_into_view, describe, reading_order
from regioncap.track import RegionTracker

LIVE_TIME_LIMIT = 30  # seconds one visitor's stream lasts; "Record" starts another
FPS_WINDOW = 3.0  # seconds of answered frames the frames-per-second figure is taken over
STALE = 2.0  # seconds without a frame after which a stream counts as new (fresh numbers and count)
ANNOUNCE_EVERY = 2.0  # seconds between two announcements at least
ANNOUNCE_SEEN = 2  # frames a region must have been seen in before it is announced (a one-frame flicker is not)


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
        """The narration of the regions in view in the last answered frame. Each field is read once: "Describe
        now" runs in another thread than the frames, and a new stream may begin (:meth:`begin`) meanwhile."""
        tracks, size = self.tracks, self.size
        if size is None:
            return "Nothing has been analysed yet: press Record to start the camera."
        return describe([t for t in tracks if t.missed == 0], *size)


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
