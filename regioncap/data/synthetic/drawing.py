"""Rendering the shapes preset: supersampled backgrounds, patterned fills, anti-aliased objects."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from .world import COLOURS, SS, Obj


def _secondary(rgb) -> np.ndarray:
    c = np.array(rgb, np.float32)
    lum = (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255
    return c * 0.45 if lum > 0.55 else c + (255 - c) * 0.6


def _fill(o: Obj, nrng: np.random.Generator, x0: int, y0: int, fw: int, fh: int, rgb=None) -> Image.Image:
    """The object's colour (``rgb``, default its named colour) and pattern over a (fh, fw) supersampled patch."""
    rgb = COLOURS[o.colour] if rgb is None else rgb
    main = np.array(rgb, np.float32)
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
        out[sel] = _secondary(rgb)
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

