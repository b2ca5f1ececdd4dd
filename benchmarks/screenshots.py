"""The README's pictures, taken from the real app: ``python app.py`` (the bundled demo model) in Debian's
chromium, driven by playwright, the same launch as tests/test_browser.py (never ``playwright install``).

    python benchmarks/screenshots.py                      # all pictures into docs/images/
    python benchmarks/screenshots.py --only search        # one of them
    python benchmarks/screenshots.py --out /tmp/shots     # somewhere else

The photos are synthetic photo-preset scenes (``python -m regioncap.data.synthetic DIR --preset photo``),
generated afresh from a fixed seed. One function per picture, each registered in ``PICTURES``: it gets the
page (the app open and its model loaded) and a ``Shot`` with the photos, and returns the element the
picture ends at; the picture spans the page's main row from its top down to that element's bottom. A
picture that needs the browser started differently (a fake camera) says so in ``Picture.browser_args``.
PNGs are reduced to a small palette (``COLOURS``) to keep them small.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from _server import ROOT, Server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000
PHOTO_SEED, PHOTO_COUNT = 5, 6  # six photo-preset scenes; the demo model captions them right (checked by eye)
CAPTIONED = 1  # the beach scene: five shapes, four patterns
WIDTH, COLOURS = 900, 96  # pictures are scaled to this width and reduced to this many colours


@dataclass
class Shot:
    photos: list[Path]  # the generated scenes, sorted by name
    work: Path  # a scratch folder


def photos(folder: Path) -> list[Path]:
    subprocess.run([sys.executable, "-m", "regioncap.data.synthetic", str(folder), "--preset", "photo",
                    "--images", str(PHOTO_COUNT), "--seed", str(PHOTO_SEED), "--splits", f"{PHOTO_COUNT},0,0"],
                   cwd=ROOT, check=True, capture_output=True)
    return sorted((folder / "Images").glob("*.jpg"))


def wait_for_image(page, elem_id: str, previous: str | None = None) -> None:
    """Until component ``elem_id`` shows a loaded picture other than ``previous`` (its src)."""
    page.wait_for_function(
        "([id, prev]) => { const i = document.querySelector(`#${id} img`);"
        " return i && i.complete && i.naturalWidth > 0 && i.src !== prev; }", arg=[elem_id, previous],
        timeout=TIMEOUT_MS)


def src(page, elem_id: str) -> str | None:
    img = page.locator(f"#{elem_id} img").first
    return img.get_attribute("src") if img.count() else None


def set_number(page, index: int, value) -> None:
    """The ``index``-th slider's number box (0: Max regions, 1: the detector score threshold)."""
    box = page.locator("input[type=number]").nth(index)
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def caption(page, shot: Shot):
    """A photo captioned with numbered boxes (five regions: the sixth, at 0.51, is a wrong guess)."""
    set_number(page, 0, 5)
    page.locator("#input-image input[type=file]").set_input_files(str(shot.photos[CAPTIONED]))
    wait_for_image(page, "annotated")
    page.wait_for_function("(Number(document.querySelector('#regions-table [role=grid]')"
                           "?.getAttribute('aria-rowcount')) || 0) > 1", timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)  # the table's rows render after its row count
    return page.locator("#regions-table")


def search(page, shot: Shot):
    """A phrase search on the captioned photo: the two checkered shapes lit."""
    before = src(page, "annotated")
    if before is None:
        caption(page, shot)
    page.get_by_role("tab", name="Search").click()
    phrase = page.locator("#phrase textarea, #phrase input").first
    phrase.fill("a checkered shape")
    phrase.press("Enter")
    wait_for_image(page, "search-image")
    page.wait_for_function("(Number(document.querySelector('#matches [role=grid]')"
                           "?.getAttribute('aria-rowcount')) || 0) > 1", timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)
    return page.locator("#matches")


def keyboard_focus(page, shot: Shot):
    """The captioned photo explored by keyboard: a region's button focused (Tab, then an arrow key) and its
    box outlined on the picture."""
    if src(page, "annotated") is None:
        caption(page, shot)
    page.get_by_role("tab", name="Caption").click()
    buttons = page.locator("#region-explorer button[data-box]")
    buttons.first.wait_for(timeout=TIMEOUT_MS)
    buttons.first.focus()
    page.keyboard.press("ArrowDown")  # a key press: the focus ring shows as it does for a keyboard user
    page.locator("#region-outline").wait_for(state="visible", timeout=TIMEOUT_MS)
    return page.locator("#region-explorer")


def collection(page, shot: Shot):
    """A sentence search over a collection of the visitor's own photos."""
    page.get_by_role("tab", name="Collection").click()
    page.locator("#collection-upload input[type=file]").set_input_files([str(p) for p in shot.photos])
    page.locator("#collection-note").get_by_text("Your collection").wait_for(timeout=TIMEOUT_MS)
    query = page.locator("#collection-query textarea, #collection-query input").first
    query.fill("a green star next to a black circle")
    query.press("Enter")
    page.wait_for_function("document.querySelectorAll('#collection-gallery img').length >= 3 && "
                           "[...document.querySelectorAll('#collection-gallery img')].every(i => i.complete && "
                           "i.naturalWidth > 0)", timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)
    return page.locator("#collection-gallery")


def live(page, shot: Shot):
    """The Live tab, chromium's fake camera playing a panning shapes scene (``live_camera``): numbered
    regions drawn on the frame and listed beside it, with the frames per second."""
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-camera").get_by_text("Click to Access Webcam").click(timeout=TIMEOUT_MS)
    page.locator("#live-camera button.capture-button").click(timeout=TIMEOUT_MS)  # Record
    page.locator("#live-captions li").first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(3000)  # a few seconds of frames: the frames/s figure settles
    return page.locator("#live-frame")


def live_camera(shot: Shot) -> list[str]:
    """Chromium flags: a fake camera playing ``regioncap.testing.scene_frames`` (written into shot.work)."""
    sys.path.insert(0, str(ROOT))
    from regioncap.testing import scene_frames, write_y4m

    video = write_y4m(scene_frames()[0], shot.work / "live.y4m")
    return ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={video}"]


def video(page, shot: Shot):
    """The Video tab: a synthetic video of moving shapes captioned (annotated video, timeline of its
    regions) and the moments of one shape's phrase found, each with its frame."""
    sys.path.insert(0, str(ROOT))
    from regioncap.video.synthetic import MovingScene, write_video

    scene = MovingScene.random(3, 12.0, size=(512, 384))
    path = shot.work / "shapes.mp4"
    write_video(path, scene, fps=10)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input input[type=file]").set_input_files(str(path))
    page.locator("#video-input video").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Caption the video").click()
    page.locator("#video-status").get_by_text("frames analysed").wait_for(timeout=TIMEOUT_MS)
    page.locator("#video-phrase textarea, #video-phrase input").first.fill(scene.movers[0].phrase)
    page.get_by_role("button", name="Find", exact=True).click()
    page.locator("#video-frames img").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)  # the annotated video's first frame shows
    return page.locator("#video-status")


@dataclass
class Picture:
    file: str  # written into --out
    take: Callable  # (page, Shot) -> the element the picture ends at
    browser_args: Callable = lambda shot: []  # (Shot) -> extra chromium flags, e.g. a fake camera for a Live tab


# A new tab gets its own function and entry here (the Live picture starts chromium with a fake camera).
PICTURES = {"caption": Picture("caption.png", caption), "search": Picture("search.png", search),
            "keyboard": Picture("keyboard-focus.png", keyboard_focus),
            "collection": Picture("collection.png", collection), "live": Picture("live.png", live, live_camera),
            "video": Picture("video.png", video)}


def save(page, end, path: Path) -> None:
    """The main row from its top down to ``end``'s bottom, scaled to WIDTH and reduced to COLOURS colours."""
    row = page.locator("#input-image").locator("xpath=ancestor::div[contains(@class, 'row')][1]").first
    top, last = row.bounding_box(), end.bounding_box()
    scroll = page.evaluate("[window.scrollX, window.scrollY]")
    clip = {"x": top["x"] + scroll[0], "y": top["y"] + scroll[1], "width": top["width"],
            "height": last["y"] + last["height"] - top["y"] + 8}
    raw = path.with_suffix(".raw.png")
    page.screenshot(path=str(raw), clip=clip, full_page=True)
    with Image.open(raw) as im:
        im = im.convert("RGB")
        im = im.resize((WIDTH, round(im.height * WIDTH / im.width)), Image.Resampling.LANCZOS)
        im.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    raw.unlink()
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--only", nargs="+", choices=list(PICTURES), default=list(PICTURES))
    parser.add_argument("--model", default=str(ROOT / "assets" / "demo-model"))
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        sys.exit(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="regioncap-shots-"))
    server = Server(args.model, work)
    try:
        shot = Shot(photos(work / "photos"), work)
        server.wait(timeout=600)
        with sync_playwright() as p:
            extra = [flag for name in args.only for flag in PICTURES[name].browser_args(shot)]
            context = p.chromium.launch_persistent_context(str(work / "profile"), executable_path=CHROMIUM,
                                                           headless=True, args=ARGS + extra,
                                                           viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.goto(server.url, timeout=TIMEOUT_MS)
            page.locator("#input-image input[type=file]").wait_for(state="attached", timeout=TIMEOUT_MS)
            # the model is loaded once the page says what it was trained on (a shapes-world model: a banner)
            page.locator("#model-banner").get_by_text("synthetic scenes").wait_for(timeout=TIMEOUT_MS)
            for name in args.only:  # in PICTURES' order: search reuses caption's photo when both run
                picture = PICTURES[name]
                save(page, picture.take(page, shot), args.out / picture.file)
            context.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
