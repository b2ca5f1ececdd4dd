"""The Live tab's handler called directly (no server, no browser): numbering across frames, the phrase,
the status line, problems told without raising, and the live work size / twin model."""

import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import gradio as gr  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's own pandas calls
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def live():
    from appui.common import ModelHolder
    from appui.handlers import RegionApp
    from appui.live import LiveApp

    holder = ModelHolder(str(ROOT / "assets" / "demo-model"))
    holder.load()  # here, not in a thread
    return LiveApp(RegionApp(holder))


@pytest.fixture(scope="module")
def frames():
    from test_browser_live import scene_frames

    return scene_frames()  # 640x480 frames of a scene with a cross, a hexagon, a star and a triangle


def test_frames_keep_their_numbers_and_the_list_changes_only_when_the_regions_do(live, frames):
    video, shown = frames
    path, listed, note, status, session = live.frame(video[0], 10, 0.5, "", None)
    assert Path(path).is_file() and note == ""
    assert '<li value="1">' in listed and listed.startswith('<ol aria-label="Regions in view')
    assert "analysed at 192×144 px" in status and "640×480" in status and "frames/s" in status
    first = {t.number: t.caption for t in session.tracker.tracks}
    assert sorted(first) == list(range(1, len(first) + 1)) and len(first) >= len(shown)
    assert shown <= {w for c in first.values() for w in c.split()}
    for frame in video[1:8]:  # the view pans 1 px a frame
        path2, listed2, *_, session = live.frame(frame, 10, 0.5, "", session)
        assert path2 != path
    assert {t.number: t.caption for t in session.tracker.tracks if t.missed == 0} == first
    assert listed2 == gr.skip()  # unchanged: not sent again (a screen reader stays quiet)
    assert float(status.split("**")[1].split()[0]) >= 0.0


def test_a_phrase_lights_up_matches_with_the_search_tabs_wording(live, frames):
    video, _ = frames
    *_, session = live.frame(video[0], 10, 0.5, "", None)
    _, _, note, _, session = live.frame(video[0], 10, 0.5, "a red triangle", session)
    triangle = next(t.number for t in session.tracker.tracks if "triangle" in t.caption)
    assert note.startswith(f"Matches, best first: region {triangle} (")
    _, _, note, _, _ = live.frame(video[0], 10, 0.5, "zebra", session)  # no known word: said, not raised
    assert "zebra" in note and note.startswith("*")
    live._floor = 0.99  # a threshold no region reaches: the Search tab's note
    try:
        _, _, note, _, _ = live.frame(video[0], 10, 0.5, "a red triangle", session)
    finally:
        live._floor = None
    assert note.startswith("*No region matches this phrase well: the best similarity is") and "below 0.99" in note


def test_problems_are_told_in_the_status_line_never_raised(live, frames):
    video, _ = frames
    out = live.frame(None, 10, 0.5, "", None)  # no frame yet
    assert all(o == gr.skip() for o in out[:4])
    *_, status, _ = live.frame(video[0], "ten", 0.5, "", None)  # a user error
    assert status.startswith("*max regions must be a whole number")
    *_, status, _ = live.frame("not an image", 10, 0.5, "", None)  # anything else: logged, a plain note
    assert status == "*This frame could not be analysed (see the server log); trying the next one.*"
    _, _, note, _, _ = live.frame(video[0], 10, 0.5, "a" * 300, None)
    assert note == gr.skip()  # a too-long phrase: told in the status line
    *_, status, _ = live.frame(video[0], 10, 0.5, "a" * 300, None)
    assert "too long for a phrase" in status


def test_the_status_line_says_when_a_stream_has_stopped():
    from appui.live import LIVE_TIME_LIMIT, LiveApp

    text = LiveApp.stopped("**5.2 frames/s** · 80 ms a frame · analysed at 192×144 px")
    assert text.startswith("**5.2 frames/s** · *The stream has stopped") and f"up to {LIVE_TIME_LIMIT} s" in text
    assert LiveApp.stopped(None).startswith("*The stream has stopped")
    assert LiveApp.stopped("*No model is loaded*").startswith("*The stream has stopped")


def test_fps_counts_answered_frames_and_a_pause_starts_afresh():
    from appui.live import LiveSession

    s = LiveSession()
    s.begin(0.0)
    assert s.tick(0.0) == 0.0
    for t in (0.2, 0.4, 0.6, 0.8):
        s.begin(t)
        fps = s.tick(t)
    assert fps == pytest.approx(5.0)  # 4 intervals in 0.8 s
    s.tracker.update([[0, 0, 10, 10]], ["a"])
    s.begin(3.5)  # 2.7 s since the last frame: a new stream
    assert s.tracker.tracks == [] and s.tick(3.5) == 0.0


def test_work_size_and_the_live_twin(make_model):
    from appui.live import LIVE_MAX_SIDE, LIVE_MIN_SIDE, LIVE_PROPOSALS, live_model, work_size

    small = make_model()  # tiny config: 64 / 96 px, 100 / 50 proposals
    assert live_model(small) is small
    assert work_size(small, 640, 480) == (85, 64) and work_size(small, 40, 30) == (40, 30)  # never enlarged
    big = make_model(detector={"min_size": 480, "max_size": 800, "rpn_pre_nms_top_n_test": 300,
                               "rpn_post_nms_top_n_test": 200})
    twin = live_model(big)
    d = twin.config.detector
    assert (d.min_size, d.max_size) == (LIVE_MIN_SIDE, LIVE_MAX_SIDE) == (320, 640)
    assert d.rpn_pre_nms_top_n_test == d.rpn_post_nms_top_n_test == LIVE_PROPOSALS
    assert big.config.detector.min_size == 480  # the model itself is untouched
    assert twin.detector.transform.min_size == (320,) and work_size(twin, 640, 480) == (427, 320)
    for (name, p), q in zip(big.state_dict().items(), twin.state_dict().values()):
        assert p.data_ptr() == q.data_ptr(), name  # the same tensors: no second copy of the weights
    result = twin.analyze(torch.rand(3, 480, 640), score_threshold=0.0)
    assert (result.width, result.height) == (640, 480)
    assert all(0 <= r.box[0] < r.box[2] <= 640 and 0 <= r.box[1] < r.box[3] <= 480 for r in result.regions)


def test_a_busy_server_drops_frames_never_queues_them(tmp_path, monkeypatch):
    """Through the real app: frames posted every 0.05 s to a handler that takes 0.3 s. Each answer is for
    the newest frame; the ones in between are dropped, and closing the stream leaves nothing to catch up."""
    import time

    from PIL import Image

    import appui.live as live_module
    from test_app import make_tiny_model, start_app

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_live

    seen, frame = [], live_module.LiveApp._frame

    def slow(self, image, *args):
        seen.append(round(image.getpixel((0, 0))[0] / 6))  # frame i is a solid red of 6 * i
        time.sleep(0.3)
        return frame(self, image, *args)

    monkeypatch.setattr(live_module.LiveApp, "_frame", slow)
    demo, url = start_app(make_tiny_model(tmp_path / "model"))
    try:
        urls = [bench_live.data_url(Image.new("RGB", (64, 48), (6 * i, 0, 0))) for i in range(40)]
        t0 = time.monotonic()
        answers = bench_live.stream_answers(url, urls, seconds=1.5, every=0.05)  # ~30 frames posted
        elapsed = time.monotonic() - t0
    finally:
        demo.close()
    assert len(answers) == len(seen) and 3 <= len(seen) <= 1.5 / 0.3 + 2, seen
    assert seen[0] == 0 and seen == sorted(set(seen)), seen  # in order, none twice
    assert max(b - a for a, b in zip(seen, seen[1:])) >= 3, seen  # frames in between were dropped
    assert seen[-1] >= 20 and elapsed < 1.5 + 3, (seen, elapsed)  # the last answer is a recent frame
