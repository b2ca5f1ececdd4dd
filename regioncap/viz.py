"""Drawing regions on an image: numbered boxes with their captions.

Readable on dark and light images alike: each box is a coloured line over a dark outline, and
each label sits on a filled tag of the box's colour with black or white text (whichever
contrasts). Labels are kept inside the image: placed above the box, else inside it, shifted to
avoid earlier labels, and shortened with an ellipsis when wider than the image.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from regioncap.data.image import load_image

# Sasha Trubetskoy's distinct colours, most distinct first.
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
           (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195)]
OUTLINE = (0, 0, 0)


def _box_and_caption(region: Any) -> tuple[list[float], str]:
    if isinstance(region, dict):
        return list(region["box"]), str(region.get("caption", ""))
    return list(region.box), str(getattr(region, "caption", ""))


def _text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 150 else (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _sizes(width: int, height: int) -> tuple[int, int]:
    """(line width, font size) scaled with the image."""
    short = min(width, height)
    return max(2, round(short / 160)), max(10, min(28, round(short / 24)))


def _ellipsize(draw: ImageDraw.ImageDraw, text: str, font, max_width: int) -> str:
    """Shorten ``text`` with an ellipsis until it is at most ``max_width`` pixels wide."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _texts(regions: Sequence[Any], labels: Sequence[str] | None, numbered: bool,
           numbers: Sequence[int] | None = None) -> list[str]:
    out = []
    for i, region in enumerate(regions):
        caption = labels[i] if labels is not None else _box_and_caption(region)[1]
        prefix = f"{numbers[i] if numbers is not None else i + 1}" if numbered else ""
        out.append(f"{prefix}. {caption}" if prefix and caption else prefix or caption)
    return out


def label_rects(size: tuple[int, int], regions: Sequence[Any], labels: Sequence[str] | None = None,
                numbered: bool = True, numbers: Sequence[int] | None = None
                ) -> tuple[list[tuple[int, int, int, int]], list[str]]:
    """Where :func:`draw_regions` puts each label tag in an image of ``size`` (W, H): rectangles
    (x0, y0, x1, y1) inside the image, not overlapping where there is room, and the (possibly
    ellipsized) texts. A tag goes above its box, else inside its top, below it, inside its bottom,
    else the first free row."""
    width, height = size
    line, font_size = _sizes(width, height)
    font, pad = _font(font_size), max(2, line)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))  # measures text only
    placed, fitted = [], []
    for region, text in zip(regions, _texts(regions, labels, numbered, numbers)):
        x1, y1, _x2, y2 = _box_and_caption(region)[0]
        text = _ellipsize(draw, text, font, max(1, width - 2 * pad))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = min(width, right - left + 2 * pad), min(height, bottom - top + 2 * pad)
        x = min(max(0, int(x1)), width - tw)
        candidates = [int(y1) - th, int(y1), int(y2), int(y2) - th]  # above, inside top, below, inside bottom
        candidates = [y for y in candidates if 0 <= y <= height - th] or [min(max(0, int(y1)), height - th)]
        rect = None
        for y in candidates + list(range(0, height - th + 1, max(1, th // 2))):
            trial = (x, y, x + tw, y + th)
            if not any(_overlaps(trial, p) for p in placed):
                rect = trial
                break
        rect = rect or (x, candidates[0], x + tw, candidates[0] + th)
        placed.append(rect)
        fitted.append(text)
    return placed, fitted


def draw_regions(image, regions: Sequence[Any], labels: Sequence[str] | None = None, *,
                 numbered: bool = True, numbers: Sequence[int] | None = None) -> Image.Image:
    """Draw numbered boxes with captions; returns a new RGB image (the input is not changed).

    Args:
        image: PIL image, path, bytes or numpy array (anything ``load_image`` reads).
        regions: objects with ``.box`` [x1, y1, x2, y2] and ``.caption`` (``Region``), or dicts with
            "box" / "caption" (the CLI's JSON).
        labels: text per region instead of its caption (e.g. a similarity for query results).
        numbered: prefix each label with its 1-based index, matching the regions list.
        numbers: each region's own number (>= 1) instead of its index, for the prefix and the colour
            (e.g. a region followed across video frames keeps both).
    """
    image = load_image(image).copy()
    width, height = image.size
    line, font_size = _sizes(width, height)
    font, pad = _font(font_size), max(2, line)
    draw = ImageDraw.Draw(image)
    boxes = [[float(c) for c in _box_and_caption(r)[0]] for r in regions]
    rects, texts = label_rects(image.size, regions, labels, numbered, numbers)
    colours = [PALETTE[(numbers[i] - 1 if numbers is not None else i) % len(PALETTE)] for i in range(len(boxes))]
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        colour = colours[i]
        x1, x2 = sorted((min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)))
        y1, y2 = sorted((min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)))
        draw.rectangle((x1, y1, x2, y2), outline=OUTLINE, width=line + 2)  # dark edge shows on light images
        draw.rectangle((x1 + 1, y1 + 1, x2 - 1, y2 - 1) if x2 - x1 > 2 and y2 - y1 > 2 else (x1, y1, x2, y2),
                       outline=colour, width=line)
    for i, ((x0, y0, x1, y1), text) in enumerate(zip(rects, texts)):
        if not text:
            continue
        colour = colours[i]
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour, outline=OUTLINE)
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((x0 + pad - left, y0 + pad - top), text, fill=_text_colour(colour), font=font)
    return image


def spotlight(image: Image.Image, boxes: Sequence[Sequence[float]], dim: float = 0.65) -> Image.Image:
    """``image`` darkened by ``dim`` except inside ``boxes`` (pixel [x1, y1, x2, y2]): the matches stand out."""
    out = Image.blend(image, Image.new("RGB", image.size), dim)
    for box in boxes:
        x1, y1, x2, y2 = (round(c) for c in box)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(image.width, x2), min(image.height, y2)
        if x2 > x1 and y2 > y1:
            out.paste(image.crop((x1, y1, x2, y2)), (x1, y1))
    return out


def phrase_spans(sentence: str, phrases: Sequence[str]) -> list[tuple[int, int] | None]:
    """Where each phrase of ``align`` (lower-cased tokens joined by spaces) was typed in ``sentence``:
    ``(start, end)`` character offsets, searched in order and case-insensitively with any spacing
    between words; None for a phrase not found (e.g. one the tokenizer split differently)."""
    import re

    spans, cursor = [], 0
    for phrase in phrases:
        found = re.compile(r"\s*".join(map(re.escape, phrase.split())), re.I).search(sentence, cursor)
        spans.append((found.start(), found.end()) if found else None)
        cursor = found.end() if found else cursor
    return spans
