"""The single image loader: sources, modes, EXIF, animation, and every way an image can be bad."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from regioncap.data.image import DEFAULT_MAX_PIXELS, load_image
from regioncap.errors import ImageError


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def test_default_limit():
    assert DEFAULT_MAX_PIXELS == 40_000_000


def test_sources_path_bytes_file_pil(tmp_path):
    im = Image.new("RGB", (30, 20), (200, 10, 10))
    data = _png(im)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    for src in (path, str(path), data, bytearray(data), io.BytesIO(data), im):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (30, 20) and out.getpixel((5, 5)) == (200, 10, 10)
    assert load_image(im) is not im  # a PIL input is never handed back (or modified)


@pytest.mark.parametrize("arr, pixel", [
    (np.full((4, 6, 3), 7, np.uint8), (7, 7, 7)),
    (np.full((4, 6), 9, np.uint8), (9, 9, 9)),
    (np.full((4, 6, 1), 9, np.uint8), (9, 9, 9)),
    (np.full((4, 6, 4), 255, np.uint8) * np.array([1, 0, 0, 1], np.uint8), (255, 0, 0)),
    (np.full((4, 6, 3), 0.5, np.float32), (128, 128, 128)),
    (np.ones((4, 6), bool), (255, 255, 255)),
    (np.full((4, 6), 65535, np.uint16), (255, 255, 255)),
])
def test_numpy_arrays(arr, pixel):
    out = load_image(arr)
    assert out.mode == "RGB" and out.size == (6, 4) and out.getpixel((0, 0)) == pixel


@pytest.mark.parametrize("arr", [np.zeros((4,), np.uint8), np.zeros((4, 6, 2), np.uint8), np.zeros((0, 6, 3), np.uint8),
                                 np.full((2, 2), np.nan, np.float32)])
def test_bad_arrays(arr):
    with pytest.raises(ImageError):
        load_image(arr)


def _mode_image(mode: str) -> Image.Image:
    if mode == "P+transparency":
        im = Image.new("P", (4, 4), 1)
        im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        im.info["transparency"] = 1  # palette entry 1 (red) is transparent -> white
        return im
    if mode == "I;16":
        return Image.fromarray(np.full((4, 4), 65535, np.uint16))
    if mode == "1":
        return Image.new("1", (4, 4), 1)
    if mode == "F":
        return Image.new("F", (4, 4), 1.0)
    if mode == "CMYK":
        return Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    if mode in ("LA", "RGBA"):
        return Image.new(mode, (4, 4), (0,) * (len(mode) - 1) + (0,))  # fully transparent black -> white
    return Image.new(mode, (4, 4), 255)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+transparency", "RGBA", "CMYK", "I;16", "I", "1", "F"])
def test_modes_become_rgb_white(mode):
    im = _mode_image(mode)
    out = load_image(im)
    assert out.mode == "RGB" and out.size == (4, 4)
    expected = (0, 0, 0) if mode == "P" else (255, 255, 255)
    assert out.getpixel((1, 1)) == expected, mode


@pytest.mark.parametrize("mode", ["LA", "P+transparency", "RGBA", "I;16", "1", "L"])
def test_modes_from_png_bytes(mode):
    out = load_image(_png(_mode_image(mode)))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_half_transparent_red_composited_on_white():
    out = load_image(Image.new("RGBA", (2, 2), (255, 0, 0, 128)))
    r, g, b = out.getpixel((0, 0))
    assert r == 255 and 120 <= g <= 135 and g == b


def test_cmyk_jpeg():
    out = load_image(_jpeg(Image.new("CMYK", (8, 8), (0, 255, 255, 0))))
    r, g, b = out.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    out = load_image(_jpeg(im, exif=exif.tobytes()))
    assert out.size == (20, 40)
    r, g, b = out.getpixel((10, 5))  # after the rotation the red half is on top
    assert r > 200 and b < 60
    assert load_image(_jpeg(im)).size == (40, 20)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = load_image(buf.getvalue())
    r, g, b = out.getpixel((4, 4))
    assert out.mode == "RGB" and r > 200 and b < 60


def test_missing_empty_and_not_images(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as info:
        load_image(tmp_path / "empty.jpg")
    assert "empty.jpg" in str(info.value)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    (tmp_path / "text.jpg").write_text("hello, I am not a picture")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(ImageError, match="not an image"):
        load_image(io.BytesIO(b"\x00" * 100))
    with pytest.raises(ImageError, match="unsupported"):
        load_image(42)


def test_truncated_and_corrupt(tmp_path):
    rng = np.random.default_rng(0)
    data = _jpeg(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])
    png = _png(Image.new("RGB", (32, 32), (1, 2, 3)))
    broken = png[:60] + b"\xff" * 20 + png[80:]
    with pytest.raises(ImageError):
        load_image(broken)


def _png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims another size (a decompression bomb's calling card)."""
    data = bytearray(_png(Image.new("L", (8, 8))))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def test_too_many_pixels_refused_before_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("decoded an image that should have been refused from its header")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="too large") as info:
        load_image(_png_claiming(8000, 8000))  # 64 M pixels > 40 M, below Pillow's own limit
    assert "8000x8000" in str(info.value)
    with pytest.raises(ImageError, match="too large"):
        load_image(_png_claiming(100_000, 100_000))  # Pillow's decompression-bomb error, reworded
    with pytest.raises(ImageError, match="too large"):
        load_image(_png(Image.new("L", (20, 20))), max_pixels=100)


def test_limit_applies_to_arrays_and_pil_images():
    with pytest.raises(ImageError, match="too large"):
        load_image(np.zeros((20, 20, 3), np.uint8), max_pixels=399)
    with pytest.raises(ImageError, match="too large"):
        load_image(Image.new("RGB", (20, 20)), max_pixels=399)
    assert load_image(Image.new("RGB", (20, 20)), max_pixels=400).size == (20, 20)
    assert load_image(Image.new("RGB", (20, 20)), max_pixels=None).size == (20, 20)
