"""The ``photo`` preset: Flickr30k-like pictures, so the real-resolution code paths run offline.

* Picture sizes as Flickr30k's: the long side 500 px, aspect ratios 4:3, 3:2, 1:1, 16:9, 5:4 in
  landscape and portrait (``ASPECTS``), most often 500 x 375 / 500 x 333.
* Eleven scenes with textured backgrounds: ground and sky with a horizon, sand/grass/snow/water
  noise, brick and plank stripes, floor tiles, lit gradients. The scene is the image's scene chain.
* 3-8 objects from the shapes world (the same entity types), 11 colours, soft shading and a
  ground shadow; later objects may hide up to half of earlier ones (partial occlusion).
* Wording in :mod:`.photo_wording`: more templates, attribute orders, synonyms and relations
  (including "in front of" / "behind" from the actual occlusion).

Drawn at 1x with supersampled (anti-aliased) object masks, so a 500 x 375 picture costs a few
tens of milliseconds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .drawing import _fill
from .markup import _xml
from .photo_wording import photo_sentences
from .world import COLOURS, PATTERNS, SHAPE_TYPES, SS, Obj, _mask, _place

# (width, height) and weight: Flickr30k's long side is 500 px
ASPECTS = [((500, 375), 0.36), ((500, 333), 0.22), ((375, 500), 0.12), ((333, 500), 0.08), ((500, 500), 0.07),
           ((500, 281), 0.05), ((500, 400), 0.05), ((400, 500), 0.05)]
PHOTO_COLOURS = dict(COLOURS, brown=(120, 75, 40), pink=(240, 130, 170), grey=(130, 130, 135),
                     gold=(205, 160, 40), teal=(30, 140, 140))
PHOTO_SIZES = {"small": (0.10, 0.15), "medium": (0.17, 0.24), "large": (0.28, 0.36)}
PHOTO_MIN_VISIBLE, MIN_CONTRAST = 0.5, 90.0


@dataclass(frozen=True)
class Scene:
    name: str
    nouns: tuple[str, ...]  # head nouns of the scene phrase
    adjectives: tuple[str, ...]
    style: str  # ground_sky | noise | stripes | tiles | gradient
    colours: tuple[tuple[int, int, int], ...]  # main colour first (ground for ground_sky), then others
    preps: tuple[str, ...]  # "a circle ON the beach"


SCENES = [
    Scene("beach", ("beach", "shore", "coast"), ("sandy", "sunny"), "ground_sky", ((220, 200, 150), (135, 190, 235)),
          ("on", "at")),
    Scene("field", ("field", "meadow", "pasture"), ("grassy", "green", "open"), "ground_sky",
          ((70, 140, 60), (150, 195, 235)), ("in", "on", "across")),
    Scene("street", ("street", "road", "sidewalk"), ("busy", "city", "wet"), "ground_sky",
          ((90, 90, 95), (185, 190, 200)), ("on", "along")),
    Scene("snow", ("hillside", "hill", "slope"), ("snowy", "white"), "ground_sky", ((238, 240, 245), (120, 160, 210)),
          ("in", "on")),
    Scene("water", ("lake", "pool", "pond"), ("blue", "calm"), "noise", ((40, 100, 150), (60, 130, 175)),
          ("in", "near", "by")),
    Scene("lawn", ("lawn", "park", "garden"), ("green", "sunny"), "noise", ((60, 125, 55), (85, 150, 70)),
          ("on", "in")),
    Scene("brick", ("wall", "building", "facade"), ("brick", "red brick", "old"), "stripes",
          ((150, 75, 55), (185, 160, 140)), ("in front of", "against", "near")),
    Scene("planks", ("floor", "deck", "boardwalk"), ("wooden", "brown"), "stripes",
          ((150, 105, 65), (120, 80, 50)), ("on", "across")),
    Scene("tiles", ("floor", "kitchen floor", "tiled floor"), ("clean", "white"), "tiles",
          ((205, 205, 195), (160, 160, 150)), ("on", "across")),
    Scene("stage", ("stage", "platform"), ("dark", "dim", "empty"), "gradient", ((45, 35, 60), (110, 90, 120)),
          ("on", "across")),
    Scene("room", ("room", "living room", "hallway"), ("bright", "warm"), "gradient",
          ((215, 195, 160), (245, 235, 215)), ("in", "inside")),
]


def _noise(nrng: np.random.Generator, sigma: float, shape: tuple) -> np.ndarray:
    return nrng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _sample(rng: random.Random, n: int, scene: Scene) -> list[Obj]:
    """n distinct objects whose colours stand out from every colour of the scene."""
    colours = [c for c, rgb in PHOTO_COLOURS.items() if min(math.dist(rgb, s) for s in scene.colours) >= MIN_CONTRAST]
    seen, objs = set(), []
    while len(objs) < n:
        key = (rng.choice(list(SHAPE_TYPES)), rng.choice(colours), rng.choice(list(PHOTO_SIZES)),
               rng.choice(PATTERNS))
        if key not in seen:
            seen.add(key)
            objs.append(Obj(*key))
    return objs


def _background(rng: random.Random, nrng: np.random.Generator, scene: Scene, w: int, h: int) -> np.ndarray:
    """(h, w, 3) float32 textured background.

    Every texture is a mix weight t between the scene's two colours plus a brightness offset, both
    (h, w) scalar fields, combined into colour once at the end: a third of the work of RGB fields.
    """
    ys = np.arange(h, dtype=np.float32)[:, None]  # (h, 1)
    xs = np.arange(w, dtype=np.float32)[None, :]  # (1, w)
    main = np.array(scene.colours[0], np.float32) + nrng.uniform(-10, 10, 3).astype(np.float32)
    other = np.array(scene.colours[1], np.float32) + nrng.uniform(-10, 10, 3).astype(np.float32)
    if scene.style == "ground_sky":  # sky gradient above a wavy horizon, textured ground below
        horizon = rng.uniform(0.25, 0.55) * h + rng.uniform(3, 12) * np.sin(xs / rng.uniform(30, 90))
        sky = ys < horizon
        t = sky.astype(np.float32)
        offset = np.where(sky, ys * np.float32(40 / h), _noise(nrng, 9, (h, w)) - (ys - horizon) * np.float32(25 / h))
    elif scene.style == "noise":  # grass / water: coarse blotches plus fine grain, a few ripples
        coarse = _noise(nrng, 1, (8, 10))
        up = np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.BILINEAR))
        t = np.clip(up * 0.5 + 0.5, 0, 1)
        offset = _noise(nrng, 12, (h, w)) + np.sin(ys / rng.uniform(3, 7) + np.sin(xs / 25.0) * 2) * 6
    elif scene.style == "stripes":  # bricks or planks: bands with mortar/seams and per-band shade
        period = rng.uniform(14, 30)
        band = np.floor(ys / period).astype(int)
        shade = nrng.uniform(-18, 18, int(h / period) + 2).astype(np.float32)[band]  # (h, 1)
        seam = np.mod(ys, period) < 2.5
        t = np.broadcast_to(seam, (h, w)).astype(np.float32)
        offset = np.where(seam, np.float32(0), shade) + _noise(nrng, 6, (h, w))
    elif scene.style == "tiles":
        p = rng.uniform(28, 60)
        a = rng.uniform(-0.4, 0.4)
        u, v = xs * math.cos(a) + ys * math.sin(a), -xs * math.sin(a) + ys * math.cos(a)
        t = ((np.mod(u, p) < 2) | (np.mod(v, p) < 2)).astype(np.float32)  # grout
        offset = _noise(nrng, 5, (h, w))
    else:  # gradient: a lamp-lit wall or stage
        cx, cy = rng.uniform(0, w), rng.uniform(0, h * 0.6)
        d = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / max(w, h)
        t = np.clip(1 - d * 1.4, 0, 1)
        offset = _noise(nrng, 4, (h, w))
    # global light: a gentle linear gradient in a random direction
    a = rng.uniform(0, 2 * math.pi)
    offset = offset + ((xs * math.cos(a) + ys * math.sin(a)) / max(w, h) - 0.5) * np.float32(30)
    img = (other - main) * t[..., None]
    img += offset[..., None]
    img += main
    return img


def _draw_object(img: np.ndarray, o: Obj, nrng: np.random.Generator) -> None:
    """Composite one object (shadow, shaded patterned fill, anti-aliased edge) into img in place."""
    h, w = img.shape[:2]
    m = int(o.r * 1.2) + 6
    x0, y0 = max(0, int(o.cx) - m), max(0, int(o.cy) - m)
    x1, y1 = min(w, int(o.cx) + m + 1), min(h, int(o.cy) + m + 1)
    pw, ph = x1 - x0, y1 - y0
    mask = Image.new("L", (pw * SS, ph * SS), 0)
    o.draw(ImageDraw.Draw(mask), SS, x0, y0)
    alpha = np.asarray(mask.reduce(SS), np.float32)[..., None] / 255  # anti-aliased coverage
    # ground shadow: the blurred mask, shifted down-right, darkens what lies below
    off = max(2, int(o.r * 0.12))
    shadow = np.asarray(mask.reduce(SS).filter(ImageFilter.BoxBlur(max(1, off))), np.float32)[..., None] / 255
    sh = np.zeros_like(shadow)
    sh[off:, off:] = shadow[:ph - off, :pw - off] if ph > off and pw > off else 0
    img[y0:y1, x0:x1] *= 1 - 0.35 * sh
    rgb = np.array(PHOTO_COLOURS[o.colour], np.float32) + nrng.uniform(-12, 12, 3).astype(np.float32)
    fill = _fill(o, nrng, x0 * SS, y0 * SS, pw * SS, ph * SS, np.clip(rgb, 0, 255))
    fill = np.asarray(fill.reduce(SS), np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)  # shading: lit from the upper left
    light = 1.08 - 0.22 * ((xx - o.cx + yy - o.cy) / (2.0 * max(o.r, 1.0)) + 0.5)
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - alpha) + fill * light[..., None] * alpha


def make_example(seed: int, index: int, image_id: str) -> tuple[Image.Image, str, str]:
    """Image `index` of the photo set with `seed`: (RGB image, annotation XML text, sentences text)."""
    rng = random.Random(f"regioncap-synthetic-photo:{seed}:{index}")
    nrng = np.random.default_rng([seed & 0xFFFFFFFF, index, 1])
    (w, h), = rng.choices([a for a, _ in ASPECTS], [p for _, p in ASPECTS])
    scene = rng.choice(SCENES)
    objs: list[Obj] = []
    while len(objs) < 3:
        objs = _place(rng, _sample(rng, rng.randint(3, 8), scene), w, h, PHOTO_SIZES, PHOTO_MIN_VISIBLE, 40)
    masks = [_mask(o, w, h)[0] for o in objs]
    # front[(i, j)]: object j (drawn later) hides part of object i
    front = {(i, j): True for i in range(len(objs)) for j in range(i + 1, len(objs)) if (masks[i] & masks[j]).any()}
    chains = rng.sample(range(100000, 1000000), len(objs) + 6)  # objects, scene, a group per sentence at most
    sentences, groups = photo_sentences(rng, objs, scene, chains, front)
    img = _background(rng, nrng, scene, w, h)
    for o in objs:
        _draw_object(img, o, nrng)
    img += _noise(nrng, rng.uniform(1.5, 4), (h, w, 1))  # sensor noise
    img += 0.5  # round, not truncate, on the cast below
    image = Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8), "RGB")
    return image, _xml(image_id, w, h, objs, chains, groups), "\n".join(sentences) + "\n"
