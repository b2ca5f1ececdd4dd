"""The Video tab's handlers (appui/video.py) without a browser: limits, the timeline, moments of a phrase."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("av")
gr = pytest.importorskip("gradio")

from appui import video as video_tab  # noqa: E402
from appui.files import OutputFiles  # noqa: E402
from regioncap.video.synthetic import MovingScene, Mover, write_video  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-model"


class FakeApp:
    def __init__(self, model, threshold=0.5):
        self.holder = type("Holder", (), {"get": lambda _self: model})()
        self.files, self.threshold = OutputFiles(), threshold

    def match_threshold(self):
        return self.threshold


@pytest.fixture(scope="module")
def model():
    if not (DEMO / "model.safetensors").exists():
        pytest.skip("no demo model")
    from regioncap import RegionCaptioner

    return RegionCaptioner.from_pretrained(DEMO)


def test_moments_and_clock():
    assert video_tab.clock(65.5) == "1:05.5" and video_tab.clock(0) == "0:00.0"
    hits = [(3.0, 0.9, 6), (0.5, 0.7, 1), (1.0, 0.8, 2), (1.5, 0.6, 3)]
    assert video_tab.moments(hits) == [[(0.5, 0.7, 1), (1.0, 0.8, 2), (1.5, 0.6, 3)], [(3.0, 0.9, 6)]]
    assert video_tab.timeline_rows([{"track": 2, "caption": "a red circle", "first": 0.5, "last": 61.0}]) == [
        [2, "a red circle", "0:00.5", "1:01.0"]]


def test_the_tab_captions_a_video_and_finds_the_moments_of_a_phrase(model, tmp_path):
    # a red circle all along; a blue square from 1 to 2.5 s at the bottom right, from 4 to 5 s at the top right
    movers = [Mover("circle", "red", "medium", 30, 0.0, 6.0, 50, 50, 60, 55),
              Mover("square", "blue", "medium", 28, 1.0, 2.5, 200, 140, 198, 140),
              Mover("square", "blue", "medium", 28, 4.0, 5.0, 200, 50, 198, 50)]
    path = tmp_path / "clip.mp4"
    write_video(path, MovingScene(movers, seed=5, seconds=6.0), fps=10)
    tab = video_tab.VideoApp(FakeApp(model))
    shown, rows, vtt, status, analysis = tab.caption(str(path), 10, 0.5)
    assert Path(shown["value"]).is_file() and shown["subtitles"] == vtt and Path(vtt).read_text().startswith("WEBVTT")
    assert [(r[0], r[2], r[3]) for r in rows] == [(1, "0:00.0", "0:05.5"), (2, "0:01.0", "0:02.0"),
                                                   (3, "0:04.0", "0:04.5")]
    assert "red circle" in rows[0][1] and "blue square" in rows[1][1] and "12 frames analysed" in status
    gallery, listed = tab.find("a blue square", analysis)
    assert len(gallery) == 2 and listed.startswith("2 moments match")
    assert "0:01.0–0:02.0" in listed and "0:04.0–0:04.5" in listed
    with pytest.raises(gr.Error, match="Caption a video first"):
        tab.find("a blue square", None)


def test_the_tab_states_and_enforces_its_limits(model, tmp_path, monkeypatch):
    path = tmp_path / "long.mp4"
    write_video(path, MovingScene([Mover("circle", "red", "medium", 30, 0.0, 4.0, 50, 50, 60, 55)], seconds=4.0),
                fps=2)
    monkeypatch.setattr(video_tab, "MAX_VIDEO_SECONDS", 2)
    tab = video_tab.VideoApp(FakeApp(model))
    with pytest.raises(gr.Error, match="lasts 4 s; at most 2 s"):
        tab.caption(str(path), 10, 0.5)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(gr.Error, match="not a video"):
        tab.caption(str(text), 10, 0.5)


def test_the_collection_shows_a_video_moment_as_its_frame_with_its_time(model, tmp_path):
    from PIL import Image

    from appui.handlers import RegionApp, hit_picture
    from regioncap.index import RegionIndex

    movers = [Mover("circle", "red", "medium", 30, 0.0, 4.0, 50, 50, 52, 50),
              Mover("square", "blue", "medium", 28, 2.0, 4.0, 200, 140, 200, 140)]
    scene = MovingScene(movers, seed=5, seconds=4.0)
    path = tmp_path / "clip.mp4"
    write_video(path, scene, fps=10)
    with RegionIndex(tmp_path / "idx", model) as index:
        index.add([path], every=1.0)
        hit = index.search("a blue square", top_k=1)[0]
    assert hit.path == str(path) and hit.time in (2.0, 3.0)
    frame = hit_picture(hit)  # the frame at the hit's time, not the video's first
    assert frame.size == (256, 192)
    assert abs(np.asarray(frame, np.float32) - np.asarray(scene.frame(hit.time), np.float32)).mean() < 6
    picture, caption = RegionApp(holder=None).gallery_item(hit)
    assert caption.startswith(f"clip.mp4 at {hit.time:.1f} s · S_kl ") and "blue square" in caption
    assert Image.open(picture).size[0] >= 256
