"""Synthetic scenes in the Flickr30k Entities layout: the offline stand-in data set.

``python -m regioncap.data.synthetic OUT --images N --seed S [--splits 0.8,0.1,0.1]`` writes
``OUT/Images/<id>.jpg``, ``OUT/Annotations/<id>.xml``, ``OUT/Sentences/<id>.txt`` and
``OUT/{train,val,test}.txt`` in exactly the real data set's formats, so every loader, trainer
and evaluator runs the same code on it. Same seed -> same bytes; image ``i`` depends only on
(seed, i), so a small set is a prefix of a larger one with the same seed.

The world:

* images 192-256 px wide, 144-192 px high; one of eight named backgrounds (solid or gradient,
  with faint noise, a blotchy texture and a few faint distractor lines). The background is the
  image's scene chain (an ``<object>`` with ``<scene>1</scene>`` and no box).
* 2-4 objects: shape x colour x size x pattern, no two identical in one image, slightly rotated
  (not circles), overlapping but each with >= 60 % of its area visible; colours too close to the
  background are not used. The box is the shape's full bounding box clipped to the image.
* The shapes world reuses Flickr30k's coarse type names, one per shape, so the detector's
  classes are the real ones: circle -> people, square -> vehicles, triangle -> animals,
  star -> instruments, hexagon -> clothing, cross -> bodyparts.
* Five sentences per image in Flickr30k markup (``[/EN#<chain>/<type> words]``, ending in
  " ."), each mentioning 1-3 objects, every object in at least three; phrases read
  SIZE COLOUR PATTERN SHAPE ("a large red striped circle") with words dropped, synonyms
  ("big", "tiny", "box", "ball") and "with stripes" after the shape now and then. Sentences
  often name the scene and sometimes hold a not-visual phrase (``[/EN#0/notvisual this picture]``).
  Two objects of one shape are sometimes named together ("two circles"): a chain with two
  boxes, and objects with two ``<name>`` tags, as in the real data.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

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
NOTVISUAL_PHRASES = ["this picture", "the image", "this image", "the picture", "this drawing"]
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


def _place(rng: random.Random, objs: list[Obj], w: int, h: int) -> list[Obj]:
    """Place objects in drawing order; returns those that fit (later ones cover earlier ones)."""
    placed, masks = [], []
    for o in objs:
        lo, hi = SIZES[o.size]
        for _ in range(60):
            r = rng.uniform(lo, hi) * min(w, h) / 2
            angle = 0.0 if o.shape == "circle" else math.radians(rng.uniform(-15, 15))
            _pose(o, rng.uniform(0.8 * r, w - 0.8 * r), rng.uniform(0.8 * r, h - 0.8 * r), r, angle, w, h)
            m, o.area = _mask(o, w, h)
            if m.sum() < MIN_IN_FRAME * o.area:
                continue
            ok = True
            covered = m.copy()  # what lies above object j: the new one and everything placed after j
            for j in range(len(placed) - 1, -1, -1):
                if (masks[j] & ~covered).sum() < MIN_VISIBLE * placed[j].area:
                    ok = False
                    break
                covered |= masks[j]
            if ok:
                placed.append(o)
                masks.append(m)
                break
    return placed


def _secondary(rgb) -> np.ndarray:
    c = np.array(rgb, np.float32)
    lum = (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255
    return c * 0.45 if lum > 0.55 else c + (255 - c) * 0.6


def _fill(o: Obj, nrng: np.random.Generator, x0: int, y0: int, fw: int, fh: int) -> Image.Image:
    """The object's colour and pattern over a (fh, fw) patch at supersampled scale."""
    main = np.array(COLOURS[o.colour], np.float32)
    out = np.broadcast_to(main, (fh, fw, 3)).copy()
    if o.pattern != "plain":
        yy, xx = np.mgrid[0:fh, 0:fw].astype(np.float32)
        xx, yy = xx + x0 - o.cx * SS, yy + y0 - o.cy * SS
        phi = o.angle + float(nrng.choice([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4]))
        u = xx * math.cos(phi) + yy * math.sin(phi)
        v = -xx * math.sin(phi) + yy * math.cos(phi)
        d = 2 * o.r * SS
        if o.pattern == "striped":
            p = max(7.0, d / 5)
            sel = np.mod(u / p, 1.0) >= 0.6
        elif o.pattern == "dotted":
            p = max(8.0, d / 4.5)
            sel = (np.mod(u, p) - p / 2) ** 2 + (np.mod(v, p) - p / 2) ** 2 < (0.25 * p) ** 2
        else:
            p = max(8.0, d / 4)
            sel = (np.floor(u / p) + np.floor(v / p)) % 2 == 1
        out[sel] = _secondary(COLOURS[o.colour])
    return Image.fromarray(out.astype(np.uint8), "RGB")


def _background(rng: random.Random, nrng: np.random.Generator, base, w: int, h: int) -> Image.Image:
    """Supersampled background: solid or gradient, a faint blotchy texture, a few faint lines."""
    W, H = w * SS, h * SS
    base = np.array(base, np.float32) + nrng.uniform(-12, 12, 3)
    img = np.broadcast_to(base, (H, W, 3)).copy()
    if rng.random() < 0.5:  # gradient along a random direction
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        t = (xx * math.cos(a) + yy * math.sin(a)) / max(W, H)
        img += (t - t.mean())[..., None] * rng.uniform(30, 70)
    if rng.random() < 0.6:  # blotchy texture: upsampled coarse noise
        coarse = nrng.normal(0, rng.uniform(4, 10), (6, 8)).astype(np.float32)
        up = np.asarray(Image.fromarray(coarse, "F").resize((W, H), Image.BILINEAR))
        img += up[..., None]
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(0, 3)):
        shade = tuple(int(np.clip(c + rng.choice([-1, 1]) * rng.uniform(15, 35), 0, 255)) for c in base)
        pts = [(rng.uniform(0, W), rng.uniform(0, H)) for _ in range(2)]
        draw.line(pts, fill=shade, width=rng.randint(1, 2) * SS)
    return im


def render(rng: random.Random, nrng: np.random.Generator, w: int, h: int, bg, objs: list[Obj]) -> Image.Image:
    im = _background(rng, nrng, bg[2], w, h)
    for o in objs:
        x0, y0 = max(0, int((o.cx - o.r * 1.5) * SS)), max(0, int((o.cy - o.r * 1.5) * SS))
        x1, y1 = min(w * SS, int((o.cx + o.r * 1.5) * SS) + 1), min(h * SS, int((o.cy + o.r * 1.5) * SS) + 1)
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        o.draw(ImageDraw.Draw(mask), SS, x0 / SS, y0 / SS)
        im.paste(_fill(o, nrng, x0, y0, x1 - x0, y1 - y0), (x0, y0), mask)
    im = im.reduce(SS)
    arr = np.asarray(im).astype(np.float32) + nrng.normal(0, rng.uniform(1, 5), (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


# -- sentences ---------------------------------------------------------------------------------
def _article(rng: random.Random, next_word: str) -> str:
    a = rng.choices(["a", "the", "one"], [0.62, 0.32, 0.06])[0]
    return "an" if a == "a" and next_word[0] in "aeiou" else a


def _object_words(rng: random.Random, o: Obj) -> list[str]:
    """SIZE COLOUR PATTERN SHAPE, each word sometimes dropped or varied."""
    words, after = [], []
    if o.size != "medium" and rng.random() < 0.8:
        words.append(o.size if rng.random() < 0.8 else rng.choice(SIZE_SYNONYMS[o.size]))
    if rng.random() < 0.95:
        words.append(o.colour)
    if o.pattern != "plain" and rng.random() < 0.8:
        if rng.random() < 0.75:
            words.append(o.pattern)
        else:
            after = PATTERN_AFTER[o.pattern].split()
    synonyms = SHAPE_SYNONYMS.get(o.shape)
    words.append(rng.choice(synonyms) if synonyms and rng.random() < 0.08 else o.shape)
    return [_article(rng, words[0])] + words + after


def _relation(rng: random.Random, a: Obj, b: Obj, allow_and: bool = True) -> str:
    """A word linking "a REL b"; above/below/left/right only when the boxes say so."""
    geo = []
    ty = 0.25 * min(a.box[3] - a.box[1], b.box[3] - b.box[1])
    tx = 0.25 * min(a.box[2] - a.box[0], b.box[2] - b.box[0])
    if a.box[3] <= b.box[1] + ty:
        geo.append("above")
    if b.box[3] <= a.box[1] + ty:
        geo.append("below")
    if a.box[2] <= b.box[0] + tx:
        geo.append("to the left of")
    if b.box[2] <= a.box[0] + tx:
        geo.append("to the right of")
    if geo and rng.random() < 0.45:
        return rng.choice(geo)
    return rng.choice(["next to", "beside", "near"] + ["and", "and"] * allow_and)


def _mentions(rng: random.Random, n: int) -> list[list[int]]:
    """For each of 5 sentences, the objects it mentions: 1-3 each, every object in >= 3 sentences."""
    for _ in range(1000):
        rows: list[list[int]] = [[] for _ in range(5)]
        for k in range(n):
            for s in rng.sample(range(5), rng.choices([3, 4, 5], [0.6, 0.3, 0.1])[0]):
                rows[s].append(k)
        if all(1 <= len(r) <= 3 for r in rows):
            break
    else:  # n in 3..4: a cyclic assignment always fits
        rows = [[k for k in range(n) if (s - k) % 5 < 3] for s in range(5)]
    for r in rows:
        rng.shuffle(r)
    return rows


def _tag(chain: int | str, etype: str, words: list[str]) -> str:
    return f"[/EN#{chain}/{etype} {' '.join(words)}]"


def _sentences(rng: random.Random, objs: list[Obj], bg, chains: list[int]) -> tuple[list[str], dict]:
    """Five sentences; returns them and {(i, j): chain} of the object pairs named as a group."""
    scene_chain, groups, out = chains[len(objs)], {}, []
    rows = _mentions(rng, len(objs))
    with_scene = [rng.random() < 0.6 for _ in rows]
    if not any(with_scene):
        with_scene[rng.randrange(5)] = True
    for row, scene in zip(rows, with_scene):
        plural = len(row) > 1
        if len(row) == 2 and objs[row[0]].shape == objs[row[1]].shape and rng.random() < 0.4:
            a, b = objs[row[0]], objs[row[1]]
            key = tuple(sorted(row))
            groups.setdefault(key, chains[len(objs) + 1 + len(groups)])
            words = ["two"] + ([a.colour] if a.colour == b.colour and rng.random() < 0.7 else []) + [PLURAL[a.shape]]
            clause = [_tag(groups[key], SHAPE_TYPES[a.shape], words)]
        else:
            phr = [_tag(chains[k], SHAPE_TYPES[objs[k].shape], _object_words(rng, objs[k])) for k in row]
            if len(row) == 1:
                clause = phr
            elif len(row) == 2:
                rel = _relation(rng, objs[row[0]], objs[row[1]])
                clause, plural = [phr[0], rel, phr[1]], rel == "and"
            elif rng.random() < 0.5:
                clause = [phr[0], ",", phr[1], "and", phr[2]]
            else:
                clause = [phr[0], _relation(rng, objs[row[0]], objs[row[1]], False), phr[1], "and", phr[2]]
        s_words = [bg[0]] if rng.random() < 0.85 else []
        s_words.append(rng.choice(bg[1]))
        s_phrase = _tag(scene_chain, "scene", [rng.choice(["a", "the", "the"])] + s_words)
        where = [rng.choice(bg[3]), s_phrase] if scene else []
        there = ["there", "are" if plural else "is"]
        nv = _tag(0, "notvisual", rng.choice(NOTVISUAL_PHRASES).split())
        form = rng.random()
        if form < 0.2:
            words = ([nv, rng.choice(["shows", "contains", "has"])] if rng.random() < 0.6 else ["in", nv, ","] + there)
            words += clause + where
        elif scene and form < 0.4:
            words = [s_phrase, "with"] + clause
        elif form < 0.6:
            words = there + clause + where
        else:
            words = clause + where
        out.append(" ".join(words) + " .")
    return out, groups


def _xml(image_id: str, w: int, h: int, objs: list[Obj], chains: list[int], groups: dict) -> str:
    lines = ["<annotation>", f"\t<filename>{image_id}.jpg</filename>", "\t<size>", f"\t\t<width>{w}</width>",
             f"\t\t<height>{h}</height>", "\t\t<depth>3</depth>", "\t</size>"]
    for k, o in enumerate(objs):
        names = [chains[k]] + [c for pair, c in groups.items() if k in pair]
        lines += ["\t<object>"] + [f"\t\t<name>{c}</name>" for c in names] + ["\t\t<bndbox>"]
        lines += [f"\t\t\t<{t}>{v + 1}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), o.box)]
        lines += ["\t\t</bndbox>", "\t</object>"]
    lines += ["\t<object>", f"\t\t<name>{chains[len(objs)]}</name>", "\t\t<nobndbox>0</nobndbox>",
              "\t\t<scene>1</scene>", "\t</object>", "</annotation>"]
    return "\n".join(lines) + "\n"


def make_example(seed: int, index: int, image_id: str) -> tuple[Image.Image, str, str]:
    """Image `index` of the set with `seed`: (RGB image, annotation XML text, sentences text)."""
    rng = random.Random(f"regioncap-synthetic:{seed}:{index}")
    nrng = np.random.default_rng([seed & 0xFFFFFFFF, index])
    w, h = rng.randint(192, 256), rng.randint(144, 192)
    bg = rng.choice(BACKGROUNDS)
    objs: list[Obj] = []
    while len(objs) < 2:
        objs = _place(rng, _sample_objects(rng, rng.randint(2, 4), bg[2]), w, h)
    chains = rng.sample(range(100000, 1000000), len(objs) + 6)  # objects, scene, a group per sentence at most
    sentences, groups = _sentences(rng, objs, bg, chains)
    image = render(rng, nrng, w, h, bg, objs)
    return image, _xml(image_id, w, h, objs, chains, groups), "\n".join(sentences) + "\n"


def _split_counts(n: int, splits) -> list[int]:
    """Largest-remainder rounding of n * fractions (a zero fraction always gets zero images)."""
    fr = [float(f) for f in splits]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or sum(fr) <= 0:
        raise ValueError(f"splits must be three non-negative fractions with a positive sum, got {splits}")
    exact = [n * f / sum(fr) for f in fr]
    counts = [int(e) for e in exact]
    for i in sorted(range(3), key=lambda i: -(exact[i] - counts[i]))[: n - sum(counts)]:
        counts[i] += 1
    return counts


def generate(out, images: int, seed: int, splits=(0.8, 0.1, 0.1), progress: bool = False) -> dict[str, list[str]]:
    """Write `images` synthetic images in the Flickr30k Entities layout under `out`; returns the split ids."""
    from tqdm import tqdm

    counts = _split_counts(images, splits)
    out = Path(out)
    for sub in ("Images", "Annotations", "Sentences"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in random.Random(f"regioncap-synthetic-ids:{seed}").sample(range(10**9, 10**10), images)]
    for index, image_id in enumerate(tqdm(ids, desc="synthetic", unit="img", disable=not progress)):
        image, xml, text = make_example(seed, index, image_id)
        image.save(out / "Images" / f"{image_id}.jpg", format="JPEG", quality=92, subsampling=0)
        (out / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8", newline="\n")
        (out / "Sentences" / f"{image_id}.txt").write_text(text, encoding="utf-8", newline="\n")
    result, start = {}, 0
    for name, count in zip(("train", "val", "test"), counts):
        result[name] = ids[start:start + count]
        start += count
        (out / f"{name}.txt").write_text("".join(i + "\n" for i in result[name]), encoding="utf-8", newline="\n")
    logger.info("wrote %d synthetic images to %s (%s)", images, out,
                ", ".join(f"{k} {len(v)}" for k, v in result.items()))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m regioncap.data.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("out", help="output folder (Flickr30k Entities layout)")
    p.add_argument("--images", type=int, default=2000, help="number of images (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions (default 0.8,0.1,0.1)")
    args = p.parse_args(argv)
    if args.images < 0:
        p.error("--images must be >= 0")
    try:
        splits = [float(x) for x in args.splits.split(",")]
        _split_counts(args.images, splits)
    except ValueError:
        p.error(f"--splits must be three non-negative fractions like 0.8,0.1,0.1, got {args.splits!r}")
    result = generate(args.out, args.images, args.seed, splits, progress=True)
    print(f"wrote {args.images} images to {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
