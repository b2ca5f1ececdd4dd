"""The one image loader: any source -> an upright RGB PIL image, or a clear ImageError.

Used by the dataset, the CLI, the app and ``RegionCaptioner.analyze`` alike, so a photo looks
the same to the model wherever it comes from:

* sources: a path (str / PathLike), bytes, a binary file object, a numpy array (H x W,
  H x W x 1/3/4; uint8, bool, other integers or floats in [0, 1]) or a PIL image;
* EXIF orientation applied; animated images give their first frame;
* every mode ends as RGB: alpha (LA, PA, RGBA, P with transparency) composited on white,
  16/32-bit greyscale scaled to 8 bits, 1-bit, CMYK, YCbCr converted;
* images with more than ``max_pixels`` pixels are refused from the header, *before* decoding;
  corrupt, truncated, empty and non-image input raise ImageError naming the source;
* only the photo formats in ``FORMATS`` are opened: Pillow's other plugins (EPS runs Ghostscript,
  PSD, DDS, FITS, ...) are a needless attack surface for uploads.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from regioncap.errors import ImageError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")  # Pillow ids opened (JPEG covers MPO too)
_OPENED_AS = {"JPEG": ("MPO",)}  # Pillow ids that a format of FORMATS opens under another name
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}


def _formats() -> list[str]:
    """FORMATS this Pillow build can open (AVIF, for one, is optional)."""
    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The lower-case file suffixes (".jpg", ".png", ...) that Pillow registers for the formats
    :func:`load_image` opens: what a folder walk treats as images (:mod:`regioncap.index.files`)."""
    formats = set(_formats())
    formats |= {alias for f in formats for alias in _OPENED_AS.get(f, ())}
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in formats)


def _describe(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    name = getattr(src, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else f"<{type(src).__name__}>"


def _from_array(arr: np.ndarray, what: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape:
        raise ImageError(f"{what}: array of shape {tuple(arr.shape)} is not an H x W (x 1/3/4) image")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(f"{what}: float array holds NaN or infinity")
        arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        top = 255 if arr.max(initial=0) <= 255 else 65535
        arr = (np.clip(arr, 0, top) * (255 / top)).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(f"{what}: unsupported array dtype {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(arr))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit greyscale: scale, do not clip
        arr = np.asarray(im).astype(np.float64)
        top = 1.0 if im.mode == "F" and arr.max(initial=0) <= 1.0 else (255.0 if arr.max(initial=0) <= 255 else 65535.0)
        arr = (np.clip(arr, 0, top) * (255.0 / top)).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return im.convert("RGB")


def _check_size(im: Image.Image, max_pixels: int, what: str) -> None:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{what}: image has no pixels ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"{what}: image too large ({w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,})")


def load_image(src, max_pixels: int | None = DEFAULT_MAX_PIXELS, exif: bool = True) -> Image.Image:
    """Load `src` as an upright RGB image (see the module docstring for what is accepted).

    Args:
        src: path, bytes, binary file object, numpy array or PIL image.
        max_pixels: refuse images with more pixels than this (None: no limit of ours; Pillow's own
            decompression-bomb limit still applies to files).
        exif: apply the EXIF orientation (default). False keeps the stored pixel layout: the frame
            a data set's boxes may have been drawn in (see ``Flickr30kEntities``).

    Returns:
        a loaded PIL image in mode "RGB" (a new object; a PIL input is never modified).

    Raises:
        ImageError: missing, empty, corrupt, truncated, too large, or not an image.
    """
    what = _describe(src)
    if isinstance(src, Image.Image):
        _check_size(src, max_pixels, what)
        return _finish(src, what, exif)
    if isinstance(src, np.ndarray):
        im = _from_array(src, what)
        _check_size(im, max_pixels, what)
        return _to_rgb(im)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageError("image data is empty (0 bytes)")
        return _open(io.BytesIO(bytes(src)), max_pixels, "image data", exif)
    if isinstance(src, (str, os.PathLike)):
        path = _existing_file(src)
        try:
            with open(path, "rb") as f:
                return _open(f, max_pixels, what, exif)
        except OSError as e:
            raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if hasattr(src, "read"):
        return _open(src, max_pixels, what, exif)
    raise ImageError(f"unsupported image source of type {type(src).__name__}")


def _existing_file(src) -> Path:
    """``src`` as a Path to a non-empty file; ImageError otherwise."""
    path = Path(src)
    if not path.is_file():
        raise ImageError(f"{path}: {'is a folder, not an image' if path.is_dir() else 'file not found'}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    return path


def probe_image(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file from its header alone (no decoding): a cheap check that a file
    :func:`load_image` will at least open. Raises ImageError like load_image (missing, empty, not an
    accepted format, too large); a corrupt body is only found when the image is decoded.
    The size is the stored one, before any EXIF orientation (see :func:`probe_image_frame`)."""
    return probe_image_frame(path, max_pixels)[0]


def probe_image_frame(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[tuple[int, int], int]:
    """((stored width, stored height), EXIF orientation 1-8) from the header alone; raises like probe_image.

    Orientations 5-8 swap the axes: the upright picture :func:`load_image` returns is height x width.
    """
    path = _existing_file(path)
    try:
        with open(path, "rb") as f:
            im = _open_header(f, str(path))
            with im:
                _check_size(im, max_pixels, str(path))
                return im.size, _orientation(im)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))  # the Orientation tag
    except Exception:  # a broken EXIF block: load_image ignores it too
        return 1
    return value if 1 <= value <= 8 else 1


def _open(fp, max_pixels, what: str, exif: bool = True) -> Image.Image:
    im = _open_header(fp, what)
    with im:
        _check_size(im, max_pixels, what)
        return _finish(im, what, exif)


def _open_header(fp, what: str) -> Image.Image:
    try:
        im = Image.open(fp, formats=_formats())  # reads the header only
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not an image, or not one of the accepted formats "
                         "(JPEG, PNG, GIF, WebP, BMP, TIFF, AVIF)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what}: image too large (decompression bomb check: {e})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{what}: cannot read image ({e})") from None
    except Exception as e:  # a plugin tripping over hostile bytes (struct.error, IndexError, ...)
        raise ImageError(f"{what}: cannot read image ({type(e).__name__}: {e})") from None
    return im


def _finish(im: Image.Image, what: str, exif: bool = True) -> Image.Image:
    """Decode the first frame, apply EXIF orientation (if `exif`), convert to RGB."""
    try:
        if getattr(im, "is_animated", False):
            im.seek(0)
        im.load()
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what}: image too large (decompression bomb check: {e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"{what}: corrupt or truncated image ({e})") from None
    except MemoryError:
        raise ImageError(f"{what}: not enough memory to decode this image") from None
    except Exception as e:  # decoders raise more than OSError on hostile input (struct.error, IndexError, ...)
        raise ImageError(f"{what}: corrupt or truncated image ({type(e).__name__}: {e})") from None
    try:
        upright = ImageOps.exif_transpose(im) if exif else im
    except Exception as e:  # a broken EXIF block should not lose the picture
        logger.debug("%s: ignoring unreadable EXIF orientation (%s)", what, e)
        upright = im
    try:
        out = _to_rgb(upright)
    except (OSError, ValueError) as e:
        raise ImageError(f"{what}: cannot convert mode {im.mode} to RGB ({e})") from None
    if out is im:  # never hand back the caller's object or one tied to an open file
        out = im.copy()
    return out
