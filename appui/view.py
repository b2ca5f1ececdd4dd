"""One session's analysed picture (``View``), drawn at display size, its regions numbered in reading order.

The app numbers regions as a reader meets them — top to bottom, left to right
(:func:`regioncap.narrate.reading_order`) — on the picture, in the tables and in the region names a
screen reader hears; the downloaded JSON keeps the model's order (highest detector score first).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from regioncap.narrate import reading_order

from appui.settings import DISPLAY_MAX, DISPLAY_MIN


@dataclass
class View:
    """One session's analysed image: the result and the picture at display size."""

    path: str  # the upload in Gradio's cache
    name: str  # its original file name
    settings: tuple[int, float]  # (max_regions, threshold)
    result: object  # AnalysisResult: the detections, then the user's boxes
    canvas: Image.Image
    scale: float  # canvas pixels per image pixel
    corner: tuple[float, float] | None = None  # first corner clicked on the picture

    def order(self) -> list[int]:
        """Indices of ``result.regions`` in reading order: region number k is ``order()[k - 1]``."""
        r = self.result
        return reading_order([region.box for region in r.regions], r.width, r.height)

    def numbers(self) -> dict[int, int]:
        """``id(region)`` -> its number (1-based, reading order)."""
        return {id(self.result.regions[i]): k + 1 for k, i in enumerate(self.order())}


def canvas(image: Image.Image) -> tuple[Image.Image, float]:
    """``image`` at display size (small ones enlarged so labels stay legible) and the scale applied."""
    long_side = max(image.size)
    scale = DISPLAY_MIN / long_side if long_side < DISPLAY_MIN else min(1.0, DISPLAY_MAX / long_side)
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS), scale
