"""Hostile and malformed input (issue 7), part 1: images and text.

Each case goes through the public way in: ``load_image`` / ``RegionCaptioner.analyze`` / ``query`` /
``align`` and the command line (exit code 2, one line on stderr, no traceback). Model files and
training data are in test_robustness_files.py; the app's handlers and the served app in
test_load.py. Cases test_image.py, test_hub.py and test_cli.py already cover are not repeated here.
"""

import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regioncap.cli import main as cli_main
from regioncap.data.image import FORMATS, load_image, probe_image
from regioncap.errors import ImageError, TextError
from regioncap.models import model as model_module
from regioncap.models import results as results_module
from regioncap.data.prepare import MAX_SIDE
from regioncap.models.results import MAX_SENTENCE_TOKENS, MAX_TEXT_CHARS

ROOT = Path(__file__).resolve().parents[1]


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header claims width x height (a decompression bomb's calling card)."""
    data = bytearray(_save(Image.new("L", (8, 8)), "PNG"))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def _tiff_with_samples_per_pixel(n: int) -> bytes:
    """A TIFF whose SamplesPerPixel tag is forged (Pillow logs an error of its own before refusing it)."""
    data = bytearray(_save(Image.new("RGB", (4, 4)), "TIFF"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] == 277:
            data[entry + 8:entry + 10] = struct.pack("<H", n)
    return bytes(data)


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _exif_rotated_jpeg() -> bytes:
    """40x20 stored, red left half; EXIF orientation 6 -> shown 20x40 with red on top."""
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(im, "JPEG", quality=95, exif=exif.tobytes())


BAD_IMAGES = {  # file name -> (bytes, what the one-line message must say)
    "notes.jpg": (b"this is a shopping list, not a picture\n", "not an image"),
    "empty.jpg": (b"", "empty"),
    "truncated.jpg": (_save(_noise(64, 64), "JPEG", quality=90)[:1500], "corrupt or truncated"),
    "huge.png": (_png_claiming(8000, 8000), "too large"),
    "bomb.png": (_png_claiming(100_000, 100_000), "too large"),
    "ghostscript.jpg": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not an image"),
    "forged.tif": (_tiff_with_samples_per_pixel(5000), "not an image"),
    "zeros.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not an image"),
}


# -- 1. images: load_image ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animated_webp_and_apng_give_the_first_frame(fmt):
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **extra)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    r, g, b = load_image(data).getpixel((4, 4))
    assert r > 200 and b < 60


def test_sixteen_bit_grey_is_scaled_not_clipped():
    arr = np.array([[0, 32896, 65535]], np.uint16)
    out = load_image(_save(Image.fromarray(arr), "PNG"))
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_pillow_bomb_guard_stays_on_and_is_reworded():
    sources = [ROOT / "app.py", *sorted((ROOT / "regioncap").rglob("*.py"))]
    for path in sources:  # nothing of ours switches Pillow's guards off
        text = path.read_text(encoding="utf-8")
        assert "MAX_IMAGE_PIXELS" not in text and "LOAD_TRUNCATED_IMAGES" not in text, path
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS >= 40_000_000
    with pytest.raises(ImageError, match="too large .*decompression bomb"):
        load_image(_png_claiming(100_000, 100_000), max_pixels=None)  # our limit off: Pillow's still refuses


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_files_are_one_clear_image_error(name, tmp_path):
    data, message = BAD_IMAGES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    if name != "truncated.jpg":  # a corrupt body is only found by decoding; everything else from the header
        with pytest.raises(ImageError, match=message):
            probe_image(path)


def test_only_photo_formats_are_opened():
    assert set(FORMATS) >= {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"}
    for fmt in ("PPM", "TGA", "PCX"):
        with pytest.raises(ImageError, match="not one of the accepted formats"):
            load_image(_save(Image.new("RGB", (4, 4)), fmt))
    assert load_image(_save(Image.new("RGB", (4, 4), (9, 9, 9)), "BMP")).getpixel((0, 0)) == (9, 9, 9)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_images_never_raise_anything_but_image_error():
    # A small seeded fuzz: random byte flips and cuts of valid files of every accepted format.
    rng = np.random.default_rng(7)
    seeds = [_save(_noise(24, 16), fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")]
    for data in seeds:
        for _ in range(60):
            d = bytearray(data)
            for pos in rng.integers(0, len(d), rng.integers(1, 8)):
                d[pos] = rng.integers(0, 256)
            if rng.random() < 0.3:
                d = d[: rng.integers(1, len(d))]
            try:
                assert load_image(bytes(d)).mode == "RGB"
            except ImageError:
                pass


# -- 1. images: analyze ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (5, 5), (1, 300), (300, 2), (3, 1)])
def test_tiny_and_thin_images_are_analysed(tiny_model, size):
    result = tiny_model.analyze(Image.new("RGB", size, (200, 40, 40)), max_regions=5, score_threshold=0.0)
    assert (result.width, result.height) == size and result.image_vector.isfinite().all()
    for r in result.regions:
        x1, y1, x2, y2 = r.box
        assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
    assert result.query("a red circle", top_k=2) is not None
    whole = tiny_model.analyze(Image.new("RGB", size), boxes=[[0, 0, size[0], size[1]]])
    assert whole.regions[0].box == [0.0, 0.0, float(size[0]), float(size[1])]


def test_large_image_is_reduced_before_the_detector_and_boxes_come_back_in_its_pixels(tiny_model, monkeypatch):
    image = _noise(400, 300).resize((4000, 3000), Image.Resampling.NEAREST)
    seen, raw = [], []
    transform = tiny_model.detector.transform
    real_call, real_post = transform.forward, transform.postprocess

    def spy_call(images, targets=None):
        seen.extend(tuple(im.shape[-2:]) for im in images)
        return real_call(images, targets)

    def spy_post(result, image_shapes, original_sizes):
        out = real_post(result, image_shapes, original_sizes)
        raw.append((out[0]["boxes"].clone(), out[0]["scores"].clone(), original_sizes[0]))
        return out

    monkeypatch.setattr(transform, "forward", spy_call)
    monkeypatch.setattr(transform, "postprocess", spy_post)
    result = tiny_model.analyze(image, max_regions=10, score_threshold=0.0)
    assert (result.width, result.height) == (4000, 3000)
    assert seen == [(1536, 2048)] and max(seen[0]) == MAX_SIDE  # the detector never saw 4000 x 3000
    boxes, scores, work = raw[0]
    assert tuple(work) == (1536, 2048) and result.regions
    for r in result.regions:  # each region is one of the detector's boxes scaled by 4000/2048 = 3000/1536
        assert any(torch.allclose(torch.tensor(r.box), b * 4000 / 2048, atol=0.02) for b in boxes), r.box
        assert 0 <= r.box[0] < r.box[2] <= 4000 and 0 <= r.box[1] < r.box[3] <= 3000
    user = tiny_model.analyze(image, boxes=[[3000, 2000, 3990, 2990], [-5, -5, 9000, 9000]])
    assert [r.box for r in user.regions] == [pytest.approx([3000, 2000, 3990, 2990]), [0, 0, 4000, 3000]]


def test_exif_orientation_reaches_analyze_and_the_cli(tiny_model, saved_model, tmp_path, capsys):
    result = tiny_model.analyze(_exif_rotated_jpeg(), score_threshold=0.0)
    assert (result.width, result.height) == (20, 40)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_exif_rotated_jpeg())
    assert cli_main(["caption", str(path), "--model", str(saved_model[1]), "--threshold", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["width"], out["height"]) == (20, 40)
    assert all(r["box"][2] <= 20 and r["box"][3] <= 40 for r in out["regions"])


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "regioncap", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_cli_refuses_bad_images_with_exactly_one_line(name, tmp_path):
    # The real entry point in a subprocess: what a user's terminal shows, Pillow's own logging included.
    data, message = BAD_IMAGES[name]
    (tmp_path / name).write_bytes(data)
    proc = _cli("caption", name, "--model", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"regioncap: error: {name}: ") and message in lines[0]


# -- 2. text --------------------------------------------------------------------------------------
@pytest.fixture
def analysed(tiny_model, image_file):
    return tiny_model.analyze(image_file, max_regions=5, score_threshold=0.0)


@pytest.mark.parametrize("phrase, message", [
    ("", "empty phrase"), ("   \n\t ", "empty phrase"), (None, "empty phrase"),
    ("一只红色的圆", "vocabulary"), ("красный круг", "vocabulary"), ("دائرة حمراء", "vocabulary"),
    ("🔴🟦⭐", "vocabulary"), ("qwzx " * 2000, "vocabulary"), ("\x00\x1b[31m\ud800", "vocabulary"),
])
def test_unusable_phrases_are_a_text_error(analysed, phrase, message):
    with pytest.raises(TextError, match=message) as info:
        analysed.query(phrase)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize("phrase", ["a red 圆 circle 🔴", "ＲＥＤ circle", "a\x00red\tcircle", "RED CIRCLE!!!"])
def test_mixed_scripts_with_a_known_word_are_answered(analysed, phrase):
    matches = analysed.query(phrase, top_k=2)
    assert len(matches) == 2 and all(-1.0001 <= sim <= 1.0001 for _, sim in matches)


def test_the_length_the_model_reads_is_capped(tiny_model, analysed, monkeypatch):
    read, encoded = [], []
    real_tokenize, real_forward = model_module.tokenize, tiny_model.text_encoder.forward
    for module in (model_module, results_module):
        monkeypatch.setattr(module, "tokenize", lambda text: read.append(len(text)) or real_tokenize(text))
    monkeypatch.setattr(tiny_model.text_encoder, "forward",
                        lambda tokens, lengths: encoded.append(tuple(tokens.shape)) or real_forward(tokens, lengths))
    long = "a large red circle " * 527  # 10,013 characters
    start = time.perf_counter()
    assert len(analysed.query(long)) == 3
    alignment = analysed.align(long)
    assert time.perf_counter() - start < 5
    max_len = tiny_model.config.text_encoder.max_len
    assert read and max(read) <= MAX_TEXT_CHARS
    assert encoded and all(width <= max_len for _, width in encoded)
    assert 1 <= len(alignment) <= MAX_SENTENCE_TOKENS and sum(n for n, _ in encoded[1:]) == len(alignment)


@pytest.mark.parametrize("sentence", ["", "🙂 🙃", "这是一个句子", "the of and . , !"])
def test_align_refuses_sentences_without_known_content_words(analysed, sentence):
    with pytest.raises(TextError):
        analysed.align(sentence)


def test_cli_query_with_unusable_text_is_one_line(saved_model, image_file, capsys):
    for phrase in ("一只红色的圆", "🔴" * 5000):
        assert cli_main(["query", str(image_file), phrase, "--model", str(saved_model[1])]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "vocabulary" in err and len(err) < 200
    assert cli_main(["query", str(image_file), "red " * 2500, "--model", str(saved_model[1]), "--threshold", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["matches"]
