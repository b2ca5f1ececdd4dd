"""The Video tab in a real browser: upload a synthetic video, get the annotated video, the timeline and
the moments a phrase matches. Skipped without /usr/bin/chromium, unless REGIONCAP_REQUIRE_BROWSER=1."""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

pytest.importorskip("av")
from test_browser import TIMEOUT_MS, browser_context, demo_server, shoot  # noqa: E402,F401  (fixtures)

from regioncap.video.synthetic import MovingScene, Mover, write_video  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]
# 6 s: a red circle all along, a blue square from 2 to 4 s
MOVERS = [Mover("circle", "red", "medium", 30, 0.0, 6.0, 50, 50, 60, 55),
          Mover("square", "blue", "medium", 28, 2.0, 4.0, 200, 140, 196, 140)]


def test_video_tab_captions_an_upload_and_finds_a_moment(demo_server, browser_context, tmp_path):  # noqa: F811
    video = tmp_path / "walk.mp4"
    write_video(video, MovingScene(MOVERS, seed=5, seconds=6.0), fps=10)
    page = browser_context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(demo_server, timeout=TIMEOUT_MS)
        page.locator("#model-banner").get_by_text("synthetic scenes").wait_for(timeout=TIMEOUT_MS)
        page.get_by_role("tab", name="Video").click()
        page.get_by_text("at most 100 MB and 3 minutes").wait_for(timeout=TIMEOUT_MS)  # the limits are stated
        page.locator("#video-input input[type=file]").set_input_files(str(video))
        page.locator("#video-input video").first.wait_for(state="attached", timeout=TIMEOUT_MS)
        page.get_by_role("button", name="Caption the video").click()
        page.locator("#video-status").get_by_text("12 frames analysed").wait_for(timeout=3 * TIMEOUT_MS)
        page.locator("#video-output video").first.wait_for(state="attached", timeout=TIMEOUT_MS)
        assert page.locator("#video-timeline [role=grid]").get_attribute("aria-rowcount") == "3"  # header + 2
        first, second = (page.locator(f"#video-timeline [role=row][aria-rowindex='{i}']").first.inner_text()
                         for i in (2, 3))
        assert "red circle" in first and "0:00.0" in first and "0:05.5" in first, first
        assert "blue square" in second and "0:02.0" in second and "0:03.5" in second, second
        shoot(page, "video-1-timeline.png", tmp_path)
        page.locator("#video-phrase textarea, #video-phrase input").first.fill("a blue square")
        page.get_by_role("button", name="Find", exact=True).click()
        page.locator("#video-moments").get_by_text("1 moment matches").wait_for(timeout=TIMEOUT_MS)
        listed = page.locator("#video-moments").inner_text()
        assert "0:02.0–0:03.5" in listed and "blue square" in listed, listed
        page.locator("#video-frames img").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        shoot(page, "video-2-moment.png", tmp_path)
    except Exception:
        shoot(page, "video-failure.png", tmp_path)
        raise
    assert not errors, errors
