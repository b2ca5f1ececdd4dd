"""Synthetic videos with ground truth: shapes-preset objects that come into view, drift and leave.

    scene = MovingScene.random(seed=3, seconds=180)
    write_video("scene.mp4", scene, fps=10)
    scene.in_view(12.5)          # [(mover index, box)] of the movers in view at 12.5 s

The background and the objects are drawn the way ``regioncap.data.synthetic`` draws its shapes scenes
(the demo model's training data), at its picture size (256 x 192 by default); each object moves in a
straight line between its appearance and its disappearance. What is in view when, and where, is the
ground truth the tests and ``benchmarks/bench_video.py`` check the records, the WebVTT track, the
tracks' numbers and the search against. Frames are made on demand: a long video is never held.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw

from regioncap.data.synthetic.drawing import _background, _fill
from regioncap.data.synthetic.world import BACKGROUNDS, COLOURS, MIN_CONTRAST, SIZES, SS, Obj, _pose

IN_VIEW = 0.8  # a mover is in view when at least this fraction of its box lies inside the picture


@dataclass
class Mover:
    """A shape seen from ``start`` to ``end`` seconds, moving from (x0, y0) to (x1, y1) (its centre, px)."""

    shape: str
    colour: str
    size: str
    radius: float
    start: float
    end: float
    x0: float
    y0: float
    x1: float
    y1: float
    pattern: str = "plain"

    @property
    def phrase(self) -> str:
        """What it is in words: "a small red circle"."""
        pattern = "" if self.pattern == "plain" else f" {self.pattern}"
        return f"a {self.size} {self.colour}{pattern} {self.shape}"

    def centre(self, t: float) -> tuple[float, float] | None:
        if not self.start <= t < self.end:
            return None
        f = (t - self.start) / max(1e-9, self.end - self.start)
        return self.x0 + f * (self.x1 - self.x0), self.y0 + f * (self.y1 - self.y0)

    def posed(self, t: float, width: int, height: int) -> Obj | None:
        c = self.centre(t)
        if c is None:
            return None
        o = Obj(self.shape, self.colour, self.size, self.pattern)
        _pose(o, c[0], c[1], self.radius, 0.0, width, height)
        return o


class MovingScene:
    """A background and its movers; :meth:`frame` draws the picture at a time, :meth:`in_view` says what shows."""

    def __init__(self, movers: list[Mover], size: tuple[int, int] = (256, 192), background: int = 0,
                 seed: int = 0, seconds: float | None = None):
        self.movers, self.size, self.seed = movers, size, seed
        self.seconds = seconds if seconds is not None else max((m.end for m in movers), default=1.0)
        w, h = size
        rng = random.Random(f"regioncap-video:{seed}")
        self.background_rgb = BACKGROUNDS[background % len(BACKGROUNDS)][2]
        self._background = _background(rng, np.random.default_rng([seed, 1]), self.background_rgb, w, h)

    @classmethod
    def random(cls, seed: int, seconds: float, size: tuple[int, int] = (256, 192), at_once: int = 3,
               life: tuple[float, float] = (6.0, 20.0), speed: float = 12.0) -> MovingScene:
        """Movers of distinct looks coming and going for ``seconds``: at most ``at_once`` in view, none
        overlapping another, each seen ``life`` seconds, drifting at most ``speed`` px a second."""
        rng = random.Random(f"regioncap-video-scene:{seed}")
        background = rng.randrange(len(BACKGROUNDS))
        bg_rgb = BACKGROUNDS[background][2]
        colours = [c for c, rgb in COLOURS.items() if math.dist(rgb, bg_rgb) >= MIN_CONTRAST]
        w, h = size
        movers: list[Mover] = []
        t = 0.0
        while t < seconds:
            live = [m for m in movers if m.start <= t < m.end]
            if len(live) < at_once:
                mover = _try_mover(rng, t, seconds, live, colours, w, h, life, speed)
                if mover is not None:
                    movers.append(mover)
                    continue
            t += rng.uniform(0.5, 3.0)
        return cls(movers, size, background, seed, seconds)

    def frame(self, t: float) -> Image.Image:
        """The picture at ``t`` seconds (RGB, ``size``)."""
        w, h = self.size
        im = self._background.copy()
        for i, m in enumerate(self.movers):
            o = m.posed(t, w, h)
            if o is None:
                continue
            x0, y0 = max(0, int((o.cx - o.r * 1.5) * SS)), max(0, int((o.cy - o.r * 1.5) * SS))
            x1, y1 = min(w * SS, int((o.cx + o.r * 1.5) * SS) + 1), min(h * SS, int((o.cy + o.r * 1.5) * SS) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            mask = Image.new("L", (x1 - x0, y1 - y0), 0)
            o.draw(ImageDraw.Draw(mask), SS, x0 / SS, y0 / SS)
            im.paste(_fill(o, np.random.default_rng([self.seed, 2, i]), x0, y0, x1 - x0, y1 - y0), (x0, y0), mask)
        im = im.reduce(SS)
        noise = np.random.default_rng([self.seed, 3, int(t * 1000)]).normal(0, 2.0, (h, w, 1))
        return Image.fromarray(np.clip(np.asarray(im, np.float32) + noise, 0, 255).round().astype(np.uint8), "RGB")

    def in_view(self, t: float) -> list[tuple[int, list[float]]]:
        """(mover index, box [x1, y1, x2, y2]) of each mover at least :data:`IN_VIEW` inside the picture."""
        w, h = self.size
        out = []
        for i, m in enumerate(self.movers):
            c = m.centre(t)
            if c is None:
                continue
            box = [c[0] - m.radius, c[1] - m.radius, c[0] + m.radius, c[1] + m.radius]
            inside = max(0.0, min(box[2], w) - max(box[0], 0)) * max(0.0, min(box[3], h) - max(box[1], 0))
            if inside >= IN_VIEW * (2 * m.radius) ** 2:
                out.append((i, [max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])]))
        return out


def _try_mover(rng, t, seconds, live, colours, w, h, life, speed) -> Mover | None:
    looks = {(m.shape, m.colour) for m in live}
    for _ in range(20):
        shape, colour = rng.choice(["circle", "square", "triangle", "star", "hexagon", "cross"]), rng.choice(colours)
        size = rng.choice(["small", "medium", "large"])
        if (shape, colour) in looks:
            continue
        r = rng.uniform(*SIZES[size]) * min(w, h) / 2
        end = min(seconds, t + rng.uniform(*life))
        x0, y0 = rng.uniform(r, w - r), rng.uniform(r, h - r)
        dx, dy = (rng.uniform(-speed, speed) * (end - t) for _ in range(2))
        x1, y1 = min(max(r, x0 + dx), w - r), min(max(r, y0 + dy), h - r)
        m = Mover(shape, colour, size, r, t, end, x0, y0, x1, y1)
        if all(_apart(m, other, t) for other in live):
            return m
    return None


def _apart(a: Mover, b: Mover, t: float) -> bool:
    """True when the two never overlap while both are in view (checked every half second)."""
    s = t
    while s < min(a.end, b.end):
        ca, cb = a.centre(s), b.centre(s)
        if ca and cb and math.dist(ca, cb) < 1.5 * (a.radius + b.radius):
            return False
        s += 0.5
    return True


def write_video(path, scene: MovingScene, fps: float = 10, seconds: float | None = None, codec: str = "libx264",
                rotation: int = 0, times=None, container_format: str | None = None, gop: int = 12) -> list[float]:
    """Encode ``scene`` to ``path`` with PyAV at ``fps`` (or at the given frame ``times``, for a variable
    frame rate), with a display ``rotation`` (degrees counter-clockwise) when asked; the frames are
    stored turned the other way, as a phone stores them. Returns the frame times written."""
    import av

    seconds = scene.seconds if seconds is None else seconds
    times = list(times) if times is not None else [i / fps for i in range(int(round(seconds * fps)))]
    turns = round(rotation / 90) % 4
    w, h = scene.size if turns % 2 == 0 else scene.size[::-1]
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000), options={"g": str(gop)})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for t in times:
            arr = np.asarray(scene.frame(t))
            if turns:
                arr = np.ascontiguousarray(np.rot90(arr, k=-turns))  # stored so that turning it back shows it upright
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return times
