"""The Live tab's handler called directly (no server, no browser): numbering across frames, the phrase,
the status line, problems told without raising (and logged once a stream), the live work size / twin model,
the drawn frame (display size, inline, its narration as alt text), the webcam options, announcements
(appui.live_session's pure rules) and "Describe now", the camera held by one stream at a time; and through
the real app: frames dropped, never queued; nothing left in Gradio's cache; a second visitor told that the
camera is busy."""

import base64
import html
import io
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's own pandas calls
ROOT = Path(__file__).resolve().parents[1]
IMG = re.compile(r'^<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)" width="(\d+)" height="(\d+)" ')


@pytest.fixture(scope="module")
def region_app():
    from appui.model import ModelHolder
    from appui.handlers import RegionApp

    holder = ModelHolder(str(ROOT / "assets" / "demo-model"))
    holder.load()  # here, not in a thread
    return RegionApp(holder)


@pytest.fixture
def live(region_app):
    from appui.live import LiveApp

    return LiveApp(region_app)  # its own camera lease: no stream of another test holds it


@pytest.fixture(scope="module")
def frames():
    from test_browser_live import scene_frames

    return scene_frames()  # 640x480 frames of a scene with a cross, a hexagon, a star and a triangle


def picture(html_text: str) -> tuple[Image.Image, str]:
    """The drawn frame and its alt text out of the Live tab's ``<img>``."""
    found = IMG.match(html_text)
    assert found, html_text[:120]
    image = Image.open(io.BytesIO(base64.b64decode(found.group(1))))
    assert (image.width, image.height) == (int(found.group(3)), int(found.group(4)))
    return image.convert("RGB"), html.unescape(found.group(2))


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return 10 * np.log10(255 ** 2 / max(1e-9, (diff ** 2).mean()))


def expected_drawing(frame: Image.Image, session) -> Image.Image:
    from regioncap.viz import draw_regions

    tracks = session.tracks
    return draw_regions(frame, tracks, [t.caption for t in tracks], numbers=[t.number for t in tracks])


def test_frames_keep_their_numbers_and_the_list_changes_only_when_the_regions_do(live, frames):
    from regioncap.narrate import describe

    video, shown = frames
    drawn, listed, note, status, spoken, session = live.frame(video[0], 10, 0.5, "", None)
    assert note == "" and spoken == gr.skip()  # nothing announced on a region's first frame
    assert '<li value="1">' in listed and listed.startswith('<ol aria-label="Regions in view')
    assert "analysed at 192×144 px" in status and "drawn on a 640×480 frame" in status and "sends" not in status
    first = {t.number: t.caption for t in session.tracker.tracks}
    assert sorted(first) == list(range(1, len(first) + 1)) and len(first) >= len(shown)
    assert shown <= {w for c in first.values() for w in c.split()}
    previous = expected_drawing(video[0], session)
    for frame in video[1:8]:  # the view pans 1 px a frame
        drawn, listed2, *_, status, _, session = live.frame(frame, 10, 0.5, "", session)
        image, alt = picture(drawn)
        expected = expected_drawing(frame, session)
        # this frame with this frame's boxes, inline as a JPEG: nearer to it than to the previous frame's drawing
        assert psnr(image, expected) > 30 and psnr(image, expected) > psnr(image, previous) + 1
        assert alt == describe([t for t in session.tracks if t.missed == 0], 640, 480)  # the narration
        previous = expected
    assert {t.number: t.caption for t in session.tracker.tracks if t.missed == 0} == first
    assert listed2 == gr.skip()  # unchanged: not sent again (a screen reader stays quiet)
    times = list(session.times)
    recent = [t for t in times if times[-1] - t <= 3.0]  # the answers of the last 3 s (all 8, unless very slow)
    fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
    assert len(times) == 8 and status.startswith(f"**{fps:.1f} frames/s** · "), (times, status)


def test_a_large_frame_is_drawn_at_display_size_and_nothing_is_written(live, frames):
    video, _ = frames
    big = video[0].resize((1280, 960), Image.Resampling.BICUBIC)
    before = sorted(live.app.files.root.rglob("*"))
    drawn, _, _, status, _, session = live.frame(big, 10, 0.5, "", None)
    image, _ = picture(drawn)
    assert image.size == (640, 480) and session.size == (640, 480)
    assert "analysed at 192×144 px" in status and "drawn on a 640×480 frame (your camera sends 1280×960)" in status
    assert all(0 <= t.box[0] < t.box[2] <= 640 and 0 <= t.box[1] < t.box[3] <= 480 for t in session.tracks)
    assert sorted(live.app.files.root.rglob("*")) == before  # the frame went back inline: no file for Gradio to copy
    wide = video[0].resize((1280, 720))
    image, _ = picture(live.frame(wide, 10, 0.5, "", session)[0])
    assert image.size == (640, 360)


def test_the_webcam_asks_for_a_640px_back_camera_not_mirrored_and_the_tab_speaks(live):
    from appui.live import RECORD_NAMES

    with gr.Blocks() as demo:
        live.layout(gr.Slider(1, 30, value=10), gr.Slider(0, 1, value=0.5))
    props = {c["props"].get("elem_id"): c for c in demo.get_config_file()["components"]}
    assert props["live-camera"]["props"]["webcam_options"] == {
        "mirror": False, "constraints": {"video": {"width": {"ideal": 640}, "facingMode": "environment"}}}
    assert props["live-spoken"]["props"]["value"] == '<p aria-live="polite" aria-atomic="true"></p>'
    assert RECORD_NAMES["Record"] in props["live-spoken"]["props"]["js_on_load"]
    assert props["live-describe"]["props"]["value"] == "Describe now"
    texts = [c["props"].get("value") for c in demo.get_config_file()["components"] if c["type"] == "markdown"]
    assert "### Regions in view" in texts


def test_a_phrase_lights_up_matches_with_the_search_tabs_wording(live, frames):
    video, _ = frames
    *_, session = live.frame(video[0], 10, 0.5, "", None)
    _, _, note, _, _, session = live.frame(video[0], 10, 0.5, "a red triangle", session)
    triangle = next(t.number for t in session.tracker.tracks if "triangle" in t.caption)
    assert note.startswith(f"Matches, best first: region {triangle} (")
    _, _, note, *_ = live.frame(video[0], 10, 0.5, "zebra", session)  # no known word: said, not raised
    assert "zebra" in note and note.startswith("*")
    from appui import matching
    with pytest.MonkeyPatch.context() as mp:  # a threshold no region reaches: the Search tab's note
        mp.setattr(matching, "match_threshold", lambda holder: 0.99)
        _, _, note, *_ = live.frame(video[0], 10, 0.5, "a red triangle", session)
    assert note.startswith("*No region matches this phrase well: the best similarity is") and "below 0.99" in note


def test_problems_are_told_in_the_status_line_never_raised(live, frames):
    video, _ = frames
    out = live.frame(None, 10, 0.5, "", None)  # no frame yet
    assert all(o == gr.skip() for o in out[:5])
    *_, status, _, session = live.frame(video[0], "ten", 0.5, "", None)  # a user error
    assert status.startswith("*max regions must be a whole number")
    *_, status, _, session = live.frame("not an image", 10, 0.5, "", session)  # anything else: logged, a plain note
    assert status == "*This frame could not be analysed (see the server log); trying the next one.*"
    _, _, note, *_ = live.frame(video[0], 10, 0.5, "a" * 300, session)
    assert note == gr.skip()  # a too-long phrase: told in the status line
    *_, status, _, _ = live.frame(video[0], 10, 0.5, "a" * 300, session)
    assert "too long for a phrase" in status


def test_a_failing_frame_is_logged_once_a_stream(live, frames, caplog):
    caplog.set_level(logging.DEBUG, logger="regioncap.app")
    session = None
    for _ in range(10):  # a second of a stream whose frames all fail
        *_, status, _, session = live.frame("not an image", 10, 0.5, "", session)
        assert status.startswith("*This frame could not be analysed")
    failed = [r for r in caplog.records if r.name == "regioncap.app" and r.exc_info]
    assert len(failed) == 1 and session.failures == 10
    live.ended(status, session)  # the stream stops; the next one logs its first failure again
    live.frame("not an image", 10, 0.5, "", session)
    assert len([r for r in caplog.records if r.name == "regioncap.app" and r.exc_info]) == 2
    assert session.failures == 1


def test_the_status_line_says_when_a_stream_has_stopped(live):
    from appui.live import LiveApp
    from appui.live_session import LIVE_TIME_LIMIT, LiveSession

    text = LiveApp.stopped("**5.2 frames/s** · 80 ms a frame · analysed at 192×144 px")
    assert text.startswith("**5.2 frames/s** · *The stream has stopped") and f"up to {LIVE_TIME_LIMIT} s" in text
    assert LiveApp.stopped(None).startswith("*The stream has stopped")
    assert LiveApp.stopped("*No model is loaded*").startswith("*The stream has stopped")
    session = LiveSession()
    assert live.ended("**5.2 frames/s** · 80 ms", session) == LiveApp.stopped("**5.2 frames/s** · 80 ms")
    assert session.ended


def test_a_second_visitor_is_told_the_camera_is_busy_and_for_how_long(live, monkeypatch):
    import appui.live as live_module

    clock, analysed = [1000.0], []

    def analyse(image, max_regions, threshold, phrase, session):  # the model's part, not under test here
        analysed.append(image)
        return "drawn", "listed", "", f"**{session.tick(clock[0]):.1f} frames/s**", gr.skip(), session

    monkeypatch.setattr(live_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(live, "_frame", analyse)
    first = None
    for _ in range(13):  # the first visitor streams for 12 s, a frame a second
        first = live.frame("first", 10, 0.5, "", first)[-1]
        clock[0] += 1
    clock[0] -= 0.5
    drawn, listed, note, status, spoken, second = live.frame("second", 10, 0.5, "", None)
    text = "The camera is busy: another visitor's stream ends in about 18 s; your stream starts then."
    assert (drawn, listed, note) == (gr.skip(),) * 3 and status == f"*{text}*"
    assert html.unescape(spoken) == '<p aria-live="polite" aria-atomic="true">' + text + "</p>"  # said once,
    clock[0] += 0.1
    *_, status, spoken, second = live.frame("second", 10, 0.5, "", second)
    assert status == f"*{text.replace('18 s', '17 s')}*" and spoken == gr.skip()  # ... then only shown
    assert "second" not in analysed and not second.times  # no analysis for it
    for _ in range(10):
        first = live.frame("first", 10, 0.5, "", first)[-1]
        *_, status, _, second = live.frame("second", 10, 0.5, "", second)
        clock[0] += 1
    assert status == "*The camera is busy: another visitor's stream ends in about 8 s; your stream starts then.*"
    assert live.ended("", first).startswith("*The stream has stopped")  # the camera is free at once
    drawn, *_, status, _, second = live.frame("second", 10, 0.5, "", second)
    assert (drawn, status) == ("drawn", "**0.0 frames/s**") and analysed[-1] == "second"
    clock[0] += 1
    *_, status, _, first = live.frame("first", 10, 0.5, "", first)  # the first visitor presses Record again
    assert status == "*The camera is busy: another visitor's stream ends in about 19 s; your stream starts then.*"
    *_, status, _, second = live.frame("second", 10, 0.5, "", second)
    assert status == "**1.0 frames/s**"
    clock[0] += 2.5  # the second visitor closed the tab: its frames stopped, the camera is free after STALE s
    *_, status, _, first = live.frame("first", 10, 0.5, "", first)
    assert status == "**0.0 frames/s**" and analysed[-1] == "first"
    start = first.started
    for _ in range(31):  # frames a second apart, past the time limit (the stream's end not seen by the server)
        clock[0] += 1
        first = live.frame("first", 10, 0.5, "", first)[-1]
    assert first.started == start + 31  # no stream lasts longer: a new one began (its own 30 s on the lease)


def test_the_busy_note_says_whether_the_visitors_own_stream_lasts_until_the_camera_is_free():
    from appui.live_session import busy_text

    assert busy_text(17.6, 29.0) == ("The camera is busy: another visitor's stream ends in about 18 s; your stream "
                                     "starts then.")
    assert busy_text(17.6, 18.0) == ("The camera is busy: another visitor's stream ends in about 18 s; press Record "
                                     "again then.")
    assert busy_text(0.2, 29.0).startswith("The camera is busy: another visitor's stream ends in about 1 s;")


def test_announcement_rate_limit_and_new_tracks_only():
    from appui.live_session import announcement, due, newcomers
    from regioncap.track import RegionTracker

    assert due(5.0, None) and due(2.0, 0.0) and not due(1.99, 0.0) and due(10.0, 7.5, every=2.5)
    assert not due(9.9, 7.5, every=2.5)
    tracker = RegionTracker()
    a, b = tracker.update([[0, 40, 20, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])
    assert newcomers([a, b], {}) == []  # seen in one frame only: a flicker is not news
    a, b = tracker.update([[1, 40, 21, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])
    assert newcomers([a, b], {}) == [a, b] and newcomers([a, b], {}, min_seen=1) == [a, b]
    announced = {a.number: a, b.number: b}
    a, b = tracker.update([[5, 40, 25, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])
    assert newcomers([a, b], announced) == []  # the triangle moved: the same track, nothing to say
    for _ in range(7):  # the triangle leaves for good: its number is freed ...
        (b,) = tracker.update([[80, 0, 100, 20]], ["a blue square"])
    c, b = tracker.update([[40, 80, 60, 100], [80, 0, 100, 20]], ["a green star", "a blue square"])
    c, b = tracker.update([[40, 80, 60, 100], [80, 0, 100, 20]], ["a green star", "a blue square"])
    assert c.number == a.number and newcomers([c, b], announced) == [c]  # ... and a new region that takes it is news
    c.missed = 1
    assert newcomers([c, b], announced) == []  # out of view in this frame: not announced
    # 100x100 picture, in reading order: the square's centre (90, 10) is in the top row, right column; the
    # triangle's (15, 50) in the middle row, left column; moved to (40, 50), in the middle
    assert announcement([a, b], 100, 100) == ("A blue square came into view at the top right. "
                                              "A red triangle came into view at the left.")
    a.box = [30, 40, 50, 60]
    assert announcement([a], 100, 100) == "A red triangle came into view in the middle."


def test_the_session_announces_what_came_into_view_at_most_every_two_seconds():
    from appui.live_session import LiveSession

    s, said = LiveSession(), {}

    def frame(t, boxes, captions):
        s.begin(t)
        s.tracks, s.size = s.tracker.update(boxes, captions), (100, 100)
        said[t] = s.announce(t)

    frame(0.0, [[0, 40, 20, 60]], ["a red triangle"])
    frame(0.1, [[1, 40, 21, 60]], ["a red triangle"])
    frame(0.2, [[2, 40, 22, 60]], ["a red triangle"])
    frame(0.5, [[3, 40, 23, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])
    frame(0.6, [[4, 40, 24, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])
    frame(2.0, [[5, 40, 25, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])
    frame(2.1, [[6, 40, 26, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])
    frame(2.2, [[12, 40, 32, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])  # moved: same track
    frame(4.3, [[18, 40, 38, 60], [80, 0, 100, 20]], ["a red triangle", "a blue square"])
    assert said == {0.0: None, 0.1: "A red triangle came into view at the left.", 0.2: None, 0.5: None,
                    0.6: None, 2.0: None, 2.1: "A blue square came into view at the top right.", 2.2: None,
                    4.3: None}
    frame(7.0, [[70, 70, 90, 90]], ["a red triangle"])  # after a pause of over STALE s: a new stream
    frame(7.1, [[70, 70, 90, 90]], ["a red triangle"])
    assert said[7.0] is None and said[7.1] == "A red triangle came into view at the bottom right."


def test_the_narration_reads_the_frame_once_when_another_thread_restarts_the_stream():
    """"Describe now" runs beside the stream's handler: a new stream may begin (size back to None) between two
    reads of the session; the narration is of one consistent view, never a TypeError."""
    from appui.live_session import LiveSession

    class Restarted(LiveSession):
        reads = 0

        @property
        def size(self):  # the frame thread's begin() resets it right after the first read
            self.reads += 1
            return (100, 100) if self.reads == 1 else None

        @size.setter
        def size(self, value):
            pass

    s = Restarted()
    s.tracks = s.tracker.update([[0, 40, 20, 60]], ["a red triangle"])
    assert s.narration() == "One region: a red triangle. A red triangle at the left."


def test_describe_now_reads_the_narration_of_the_regions_in_view(live, frames):
    from appui.live import spoken_html
    from appui.live_session import LiveSession
    from regioncap.narrate import describe

    video, shown = frames
    assert live.describe_now(None) == spoken_html("Nothing has been analysed yet: press Record to start the camera.")
    session = live.frame(video[0], 10, 0.5, "", None)[-1]
    *_, spoken, session = live.frame(video[1], 10, 0.5, "", session)
    said = html.unescape(spoken)  # the second frame: every region seen twice is announced, in reading order
    assert said.count("came into view") == sum(t.seen >= 2 for t in session.tracks) >= len(shown)
    narration = describe([t for t in session.tracks if t.missed == 0], 640, 480)
    assert narration.startswith(("Four regions: ", "Five regions: ")) and shown <= set(re.findall(r"\w+", narration))
    said = live.describe_now(session, None)
    assert said == spoken_html(narration) and session.announced_at is not None
    assert live.describe_now(session, said) == spoken_html(narration + "\u00a0")  # the same again: read again
    *_, spoken, session = live.frame(video[2], 10, 0.5, "", session)
    assert spoken == gr.skip()
    session.ended = True
    assert live.describe_now(session) == spoken_html(f"The stream has stopped. Its last frame: {narration}")
    assert LiveSession().narration().startswith("Nothing has been analysed yet")
    waiting = LiveSession(told_busy=True)  # a visitor whose frames wait for the camera
    assert live.describe_now(waiting) == spoken_html("Nothing has been analysed yet: the camera is busy with "
                                                     "another visitor's stream.")


def test_fps_counts_answered_frames_and_a_pause_starts_afresh():
    from appui.live_session import LiveSession

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


def cache_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_stream_leaves_nothing_in_gradios_cache(tmp_path, monkeypatch):
    """Through the real app, every frame distinct: the answers carry the drawn frame inline, so Gradio's
    cache (GRADIO_TEMP_DIR) gains no file however long the stream lasts (today: one JPEG a frame)."""
    from test_app import make_tiny_model, start_app

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_live

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    demo, url = start_app(make_tiny_model(tmp_path / "model"))
    try:
        camera = bench_live.DriftingCamera(size=(320, 240), pan=40)
        bench_live.stream_answers(url, camera, seconds=1.0, session="tab")  # the model loads
        before = cache_files(cache)
        answers = bench_live.stream_answers(url, lambda i: camera(100 + i), seconds=2.5, session="tab")
    finally:
        demo.close()
    assert len(answers) >= 3 and cache_files(cache) == before, (len(answers), cache_files(cache)[-3:])
    pictures = [d[0] for _, d in answers if isinstance(d[0], str) and d[0].startswith("<img")]
    assert len(pictures) == len(answers) == len(set(pictures)), [str(d)[:200] for _, d in answers[:3]]
    assert all(picture(p)[0].size == (320, 240) for p in pictures)


def test_a_second_visitor_sees_the_camera_is_busy_through_the_app(tmp_path):
    """Two visitors stream at once through the real app: the second is answered at once that the camera is
    busy and for how long (today it waited in the queue, told nothing), the first is analysed throughout."""
    from test_app import make_tiny_model, start_app

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_live

    demo, url = start_app(make_tiny_model(tmp_path / "model"))
    try:
        camera = bench_live.DriftingCamera(size=(320, 240), pan=40)
        bench_live.stream_answers(url, camera, seconds=1.0, session="first")  # the model loads
        first = []
        streaming = threading.Thread(target=lambda: first.extend(
            bench_live.stream_answers(url, camera, 4.0, session="first")))
        streaming.start()
        time.sleep(1.5)
        second = bench_live.stream_answers(url, camera, seconds=1.5)
        streaming.join()
    finally:
        demo.close()
    told = [d[3] for _, d in second if isinstance(d[3], str)]
    busy = re.compile(r"^\*The camera is busy: another visitor's stream ends in about (\d+) s; your stream "
                      r"starts then\.\*$")
    assert told and all(busy.match(t) for t in told), told
    # the first stream began with the warm-up stream (one tab, within STALE s): its 30 s, minus the 2.5-4 s gone
    assert all(24 <= int(busy.match(t).group(1)) <= 28 for t in told), told
    spoken = [d[4] for _, d in second if isinstance(d[4], str)]
    assert len(spoken) == 1 and "The camera is busy" in spoken[0]  # announced once
    assert first and all("frames/s" in d[3] for _, d in first if isinstance(d[3], str))
