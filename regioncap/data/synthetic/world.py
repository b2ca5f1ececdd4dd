"""The shapes world: what objects there are, their geometry, and placing them with bounded occlusion.

Shared by both presets. Boxes are 0-based inclusive pixel indices ``[x1, y1, x2, y2]`` clipped to
the image, as ``regioncap.data.flickr30k.read_annotation`` returns them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPE_TYPES = {"circle": "people", "square": "vehicles", "triangle": "animals",
               "star": "instruments", "hexagon": "clothing", "cross": "bodyparts"}
SHAPE_SYNONYMS = {"circle": ["ball", "disc"], "square": ["box"], "cross": ["plus"]}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
          "hexagon": "hexagons", "cross": "crosses"}
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 215, 40),
           "purple": (140, 60, 180), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20)}
SIZES = {"small": (0.14, 0.20), "medium": (0.24, 0.32), "large": (0.38, 0.48)}
SIZE_SYNONYMS = {"small": ["little", "tiny"], "large": ["big"]}
PATTERNS = ["plain", "striped", "dotted", "checkered"]
PATTERN_AFTER = {"striped": "with stripes", "dotted": "with dots", "checkered": "with checks"}
# (adjective, nouns, base colour, prepositions that place objects on it)
BACKGROUNDS = [
    ("grey", ["background", "backdrop"], (128, 128, 128), ["on", "against"]),
    ("light blue", ["wall"], (170, 200, 230), ["in front of", "against"]),
    ("beige", ["floor"], (225, 205, 170), ["on"]),
    ("dark green", ["field", "lawn"], (40, 90, 50), ["in", "on"]),
    ("brown", ["table", "wooden table"], (130, 90, 55), ["on"]),
    ("pink", ["carpet", "rug"], (230, 170, 190), ["on"]),
    ("dark blue", ["sky"], (25, 35, 80), ["against", "in front of"]),
    ("white", ["sheet of paper", "page"], (240, 240, 235), ["on"]),
]


def attribute_words() -> dict[str, dict[str, str]]:
    """``{attribute: {word: value}}``: every word the sentences use to name an object's shape, colour,
    size or pattern, mapped to the value it names ("big" -> "large", "stripes" -> "striped"); built
    from the word lists above, for :func:`regioncap.metrics.attribute_mention_rates`."""
    shape = {s: s for s in SHAPE_TYPES} | {w: s for s, ws in SHAPE_SYNONYMS.items() for w in ws}
    shape |= {w: s for s, w in PLURAL.items()}
    size = {s: s for s in SIZES} | {w: s for s, ws in SIZE_SYNONYMS.items() for w in ws}
    pattern = {p: p for p in PATTERNS if p != "plain"} | {t.split()[-1]: p for p, t in PATTERN_AFTER.items()}
    return {"shape": shape, "colour": {c: c for c in COLOURS}, "size": size, "pattern": pattern}


ATTRIBUTE_WORDS = attribute_words()
SS = 2  # supersampling factor for anti-aliased edges
MIN_VISIBLE, MIN_IN_FRAME, MIN_CONTRAST = 0.6, 0.8, 100.0


def _unit_shape(shape: str) -> list[tuple[float, float]] | None:
    """Vertices spanning about [-1, 1] (y down); None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        return [(-0.9, -0.9), (0.9, -0.9), (0.9, 0.9), (-0.9, 0.9)]
    if shape == "triangle":
        return [(0.0, -0.95), (1.0, 0.8), (-1.0, 0.8)]
    if shape == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in (k * math.pi / 3 for k in range(6))]
    if shape == "star":
        return [((1.0 if k % 2 == 0 else 0.45) * math.sin(k * math.pi / 5),
                 -(1.0 if k % 2 == 0 else 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
    w = 0.32  # cross: arms of half-width w
    return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
            (-w, -w)]


@dataclass
class Obj:
    shape: str
    colour: str
    size: str
    pattern: str
    cx: float = 0.0
    cy: float = 0.0
    r: float = 0.0
    angle: float = 0.0
    points: list[tuple[float, float]] | None = None  # polygon in image pixels (None: circle)
    area: int = 0  # pixels, counting any part outside the image
    box: list[int] = field(default_factory=list)  # 0-based [x1, y1, x2, y2], clipped

    def draw(self, draw: ImageDraw.ImageDraw, scale: float, dx: float = 0.0, dy: float = 0.0) -> None:
        if self.points is None:
            c = ((self.cx - dx) * scale, (self.cy - dy) * scale)
            draw.ellipse([c[0] - self.r * scale, c[1] - self.r * scale, c[0] + self.r * scale,
                          c[1] + self.r * scale], fill=255)
        else:
            draw.polygon([((x - dx) * scale, (y - dy) * scale) for x, y in self.points], fill=255)


def _pose(o: Obj, cx: float, cy: float, r: float, angle: float, w: int, h: int) -> None:
    o.cx, o.cy, o.r, o.angle = cx, cy, r, angle
    unit = _unit_shape(o.shape)
    if unit is None:
        o.points = None
        xs, ys = [cx - r, cx + r], [cy - r, cy + r]
    else:
        c, s = math.cos(angle), math.sin(angle)
        o.points = [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in unit]
        xs, ys = [p[0] for p in o.points], [p[1] for p in o.points]
    o.box = [max(0, int(min(xs))), max(0, int(min(ys))), min(w - 1, int(max(xs))), min(h - 1, int(max(ys)))]


def _mask(o: Obj, w: int, h: int) -> tuple[np.ndarray, int]:
    """The object's pixels inside the (h, w) image, and its pixel count had the image no edges."""
    pad = int(o.r) + 2  # rasterised area, not the analytic one: same pixel rule as the visible part
    im = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    o.draw(ImageDraw.Draw(im), 1.0, -pad, -pad)
    full = np.asarray(im) > 127
    return full[pad:pad + h, pad:pad + w], int(full.sum())


def _sample_objects(rng: random.Random, n: int, bg_rgb) -> list[Obj]:
    colours = [c for c, rgb in COLOURS.items() if math.dist(rgb, bg_rgb) >= MIN_CONTRAST]
    seen, objs = set(), []
    while len(objs) < n:
        key = (rng.choice(list(SHAPE_TYPES)), rng.choice(colours), rng.choice(list(SIZES)), rng.choice(PATTERNS))
        if key not in seen:
            seen.add(key)
            objs.append(Obj(*key))
    return objs


def _place(rng: random.Random, objs: list[Obj], w: int, h: int, sizes: dict = SIZES,
           min_visible: float = MIN_VISIBLE, tries: int = 60) -> list[Obj]:
    """Place objects in drawing order; returns those that fit (later ones cover earlier ones).

    Each placed object keeps >= ``min_visible`` of its area visible and >= MIN_IN_FRAME inside the image.
    """
    placed, masks = [], []
    for o in objs:
        lo, hi = sizes[o.size]
        for _ in range(tries):
            r = rng.uniform(lo, hi) * min(w, h) / 2
            angle = 0.0 if o.shape == "circle" else math.radians(rng.uniform(-15, 15))
            _pose(o, rng.uniform(0.8 * r, w - 0.8 * r), rng.uniform(0.8 * r, h - 0.8 * r), r, angle, w, h)
            m, o.area = _mask(o, w, h)
            if m.sum() < MIN_IN_FRAME * o.area:
                continue
            ok = True
            covered = m.copy()  # what lies above object j: the new one and everything placed after j
            for j in range(len(placed) - 1, -1, -1):
                if (masks[j] & ~covered).sum() < min_visible * placed[j].area:
                    ok = False
                    break
                covered |= masks[j]
            if ok:
                placed.append(o)
                masks.append(m)
                break
    return placed
