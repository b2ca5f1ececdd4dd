"""What visitors send, read: uploads, settings, typed boxes, the session; and their errors told plainly."""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402

from regioncap.errors import RegionCapError  # noqa: E402

logger = logging.getLogger("regioncap.app")


def user_errors(fn):
    """regioncap's user errors -> gr.Error with their message; anything else is logged, never shown raw."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except RegionCapError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:
            logger.exception("%s failed", fn.__name__)
            raise gr.Error("Something went wrong on the server (see its log); try another image or other "
                           "settings.", print_exception=False) from None
    return wrapper


def upload(image) -> tuple[str, str] | None:
    """(path, original name) of an image input: Gradio's FileData dict, a path, or None."""
    if isinstance(image, dict):
        path = image.get("path")
        return (path, image.get("orig_name") or Path(path).name) if path else None
    return (str(image), Path(str(image)).name) if image else None


def parse_settings(max_regions, threshold) -> tuple[int, float]:
    try:
        return int(max_regions), round(float(threshold), 4)
    except (TypeError, ValueError):
        raise RegionCapError(f"max regions must be a whole number and the threshold a number in [0, 1], "
                             f"got {max_regions!r} and {threshold!r}") from None


def box_text(box) -> str:
    return ", ".join(str(round(c)) for c in box)


def parse_box(text: str, width: int, height: int) -> list[float]:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text or "")
    if len(numbers) != 4:
        raise RegionCapError(f"A box is four numbers 'x1, y1, x2, y2' in image pixels (this image is "
                             f"{width}x{height}), got {(text or '').strip()[:60]!r}")
    x1, y1, x2, y2 = map(float, numbers)
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def session_id(request) -> str:
    return getattr(request, "session_hash", None) or "anonymous"
