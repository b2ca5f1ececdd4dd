"""Videos: reading (rotation, variable frame rate, damage, empty and non-video files), the JSON records,
the audio-description track and the annotated copy, on real videos these tests encode with PyAV."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from regioncap.narrate import came_into_view, describe  # noqa: E402
from regioncap.track import iou  # noqa: E402
from regioncap.video.annotate import COMMENT, AnnotatedVideo, check_target, is_ours  # noqa: E402
from regioncap.video.reader import (VideoDamagedError, VideoError, VideoReader, sampling_rate,  # noqa: E402
                                    video_time, work_size)
from regioncap.video.run import TrackLog, VideoTracker, caption_video, distinct  # noqa: E402
from regioncap.video.synthetic import MovingScene, Mover, write_video  # noqa: E402
from regioncap.video.vtt import HEADER, VttWriter, read_cues, timestamp  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-model"

# 8 s at 256 x 192: a red circle all along, a blue square from 2 to 6 s, a yellow triangle from 4 s on
MOVERS = [Mover("circle", "red", "medium", 30, 0.0, 8.0, 50, 50, 70, 60),
          Mover("square", "blue", "medium", 28, 2.0, 6.0, 200, 140, 190, 140),
          Mover("triangle", "yellow", "medium", 30, 4.0, 8.0, 228, 60, 190, 60)]


@pytest.fixture(scope="module")
def scene():
    return MovingScene(MOVERS, background=0, seed=5, seconds=8.0)


@pytest.fixture(scope="module")
def scene_video(scene, tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "scene.mp4"
    write_video(path, scene, fps=10)
    return path


@pytest.fixture(scope="module")
def demo_model():
    if not (DEMO / "model.safetensors").exists():
        pytest.skip("no demo model")
    from regioncap import RegionCaptioner

    return RegionCaptioner.from_pretrained(DEMO)


def _difference(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


# -- reading ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_phone_video_is_turned_upright_by_its_display_matrix(scene, tmp_path, rotation):
    path = tmp_path / "phone.mp4"
    write_video(path, scene, fps=4, seconds=1.0, rotation=rotation)  # stored turned, as phones store it
    with av.open(str(path)) as c:  # the file really is stored sideways (or upside down)
        stored = c.streams.video[0].codec_context
        assert (stored.width, stored.height) == ((192, 256) if rotation % 180 else (256, 192))
    with VideoReader(path, every=0.5) as video:
        assert (video.info.width, video.info.height, video.info.rotation % 360) == (256, 192, rotation % 360)
        frames = list(video)
    assert [f.time for f in frames] == [0.0, 0.5]
    for f in frames:
        assert f.image.size == (256, 192)
        # upright: the picture is the scene's (only the codec's loss), not a turned one
        assert _difference(f.image, scene.frame(f.time)) < 6
        assert _difference(f.image, scene.frame(f.time).transpose(3)) > 20  # ROTATE_180 for contrast


def test_a_variable_frame_rate_video_is_sampled_by_its_timestamps(scene, tmp_path):
    path = tmp_path / "vfr.mp4"
    times = [0.0, 0.1, 0.2, 1.5, 1.55, 1.6, 3.0, 3.3, 4.0]  # a gap, a burst, another gap
    write_video(path, scene, fps=10, times=times)
    with VideoReader(path, every=0.5) as video:
        frames = list(video)
    # the first frame at or after each half second (none between 0.2 and 1.5, so 0.5 and 1.0 fall on 1.5)
    assert [f.time for f in frames] == [0.0, 1.5, 3.0, 4.0]
    for f in frames:  # each is the picture of its own time (the square appears at 2 s)
        assert _difference(f.image, scene.frame(f.time)) < 6
    assert _difference(frames[2].image, scene.frame(1.5)) > _difference(frames[2].image, scene.frame(3.0)) + 1
    with VideoReader(path, every=0) as video:  # 0: every frame
        assert [round(f.time, 3) for f in video] == times


def test_frames_are_reduced_to_the_work_size_right_after_decoding(tmp_path):
    path = tmp_path / "8k.mp4"
    yy, xx = np.mgrid[0:432, 0:768]
    small = np.full((432, 768, 3), 128, np.uint8)
    small[(xx - 384) ** 2 + (yy - 216) ** 2 < 150 ** 2] = (220, 40, 40)  # a red circle in the middle
    arr = small.repeat(10, axis=0).repeat(10, axis=1)  # 7680 x 4320
    with av.open(str(path), "w") as out:  # two 8K frames, encoded directly (the scene's own encoder is slower)
        stream = out.add_stream("mpeg4", rate=2)
        stream.width, stream.height, stream.pix_fmt = 7680, 4320, "yuv420p"
        for _ in range(2):
            for p in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    with VideoReader(path, every=0.5, work_side=(144, 192), view_side=640) as video:
        assert (video.info.width, video.info.height) == (7680, 4320)
        frames = list(video)
    assert len(frames) == 2
    assert [f.image.size for f in frames] == [(192, 108)] * 2  # long side 192: the demo detector's size
    assert [f.view.size for f in frames] == [(640, 360)] * 2
    centre = np.asarray(frames[0].image)[54, 96]
    assert centre[0] > 150 and centre[2] < 100  # still the red circle
    assert work_size(7680, 4320, 800, 1333) == (1333, 750) and work_size(100, 50, 800, 1333) == (100, 50)


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_a_truncated_video_keeps_the_frames_before_the_damage(scene, tmp_path, container):
    whole = tmp_path / f"whole.{container}"
    write_video(whole, scene, fps=10, container_format="matroska" if container == "mkv" else None, gop=5)
    if container == "mp4":  # moov at the front, as phones and web encoders write it: a cut file still opens
        fixed = tmp_path / "faststart.mp4"
        with av.open(str(whole)) as src, av.open(str(fixed), "w", options={"movflags": "faststart"}) as dst:
            s = dst.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = s
                    dst.mux(packet)
        whole = fixed
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{container}"
    cut.write_bytes(data[: len(data) // 2])
    kept = []
    with VideoReader(cut, every=0.5) as video, pytest.raises(VideoDamagedError) as caught:
        for frame in video:
            kept.append(frame.time)
    err = caught.value
    assert 2 <= len(kept) < 16 and err.frames == len(kept)
    assert kept == [i / 2 for i in range(len(kept))]
    assert err.time is not None and kept[-1] <= err.time < 8.0
    assert "truncated" in str(err) and f"the {len(kept)} sampled frames before it kept" in str(err)
    assert "\n" not in str(err)


def test_unreadable_videos_get_one_clear_line(scene, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    no_frames = tmp_path / "no-frames.mkv"
    with av.open(str(no_frames), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height = 64, 48
        out.start_encoding()
    audio = tmp_path / "sound.m4a"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for p in [*stream.encode(frame), *stream.encode()]:
            out.mux(p)
    unknown = tmp_path / "unknown-codec.mp4"
    good = tmp_path / "good.mp4"
    write_video(good, scene, fps=5, seconds=1.0)
    unknown.write_bytes(good.read_bytes().replace(b"avc1", b"zzzz"))  # a codec tag no decoder knows
    cases = {empty: "file is empty (0 bytes)", text: "not a video", no_frames: "zero-length video",
             audio: "audio only, no video stream", unknown: "unsupported video codec"}
    for path, words in cases.items():
        with pytest.raises(VideoError) as caught:
            with VideoReader(path) as video:
                list(video)
        message = str(caught.value)
        assert words in message and message.startswith(str(path)) and "\n" not in message, message
    with pytest.raises(VideoError, match="every must be"):
        VideoReader(good, every=-1)


# -- outputs ---------------------------------------------------------------------------------------------
def test_the_audio_description_track_format_and_its_owner_check(tmp_path):
    assert timestamp(3723.5) == "01:02:03.500" and timestamp(0) == "00:00:00.000"
    path = tmp_path / "a.vtt"
    with VttWriter(path, "clip.mp4") as vtt:
        vtt.add(2.0, ["a red circle comes into view at the left", "a blue square comes into view at the top"])
        vtt.add(1.0, ["a star --> somewhere"])  # an earlier start is moved up: cues stay in order
    text = path.read_text()
    assert text.startswith(HEADER + "\n\nNOTE kind: descriptions")
    assert read_cues(path) == [(2.0, 5.0, ["a red circle comes into view at the left",
                                           "a blue square comes into view at the top"]),
                               (2.0, 5.0, ["a star -> somewhere"])]
    VttWriter(path).close()  # ours: may be replaced
    theirs = tmp_path / "theirs.vtt"
    theirs.write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nsubtitles someone made\n")
    with pytest.raises(Exception, match="not overwriting"):
        VttWriter(theirs)
    assert "someone made" in theirs.read_text()


def test_the_annotated_copy_never_replaces_an_input_or_a_strangers_file(tmp_path):
    from PIL import Image

    from regioncap.errors import RegionCapError

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"input")
    target = tmp_path / "clip.mp4.regions.mp4"
    check_target(target, [video])  # free: fine
    with pytest.raises(RegionCapError, match="is an input"):
        check_target(video, [video])
    target.write_bytes(b"someone's video")
    with pytest.raises(RegionCapError, match="not written by regioncap"):
        check_target(target, [video])
    target.unlink()
    with AnnotatedVideo(target, (64, 48), Fraction(2), "clip.mp4") as out:
        out.add(Image.new("RGB", (64, 48)), 0.0, [])
    assert is_ours(target) and not is_ours(video)
    check_target(target, [video])  # ours: may be replaced on a re-run
    assert video.read_bytes() == b"input"


def test_numbers_progress_and_rates():
    tracker = VideoTracker()
    tracker.update([[0, 0, 10, 10]], ["a"])
    for _ in range(tracker.max_missed + 1):  # track 1 leaves view and is dropped
        tracker.update([], [])
    (t,) = tracker.update([[50, 50, 60, 60]], ["b"])
    assert t.number == 2  # never reused within a video (the Live tab's tracker would give 1 again)
    assert video_time(750) == "12:30" and video_time(3482) == "58:02" and video_time(3723) == "1:02:03"
    assert sampling_rate(0.5, 30) == 2 and sampling_rate(0, 25.0) == 25 and sampling_rate(0.3, 10) == Fraction(10, 3)


def test_finished_tracks_are_spooled_and_come_back_in_order():
    log = TrackLog("v.mp4")

    class T:
        def __init__(self, n):
            self.number, self.caption, self.box, self.extra = n, f"c{n}", [n, n, n + 1, n + 1], {"score": 0.5}

    for time, numbers in [(0.0, [1, 2]), (0.5, [2, 3]), (1.0, [3])]:
        for n in numbers:
            log.see(T(n), time)
        log.finish([n for n in log.open if n not in numbers])
    assert list(log.open) == [3]  # only the track in view is held
    records = list(log.records())
    assert [(r["track"], r["first"], r["last"], len(r["boxes"])) for r in records] == [
        (1, 0.0, 0.0, 1), (2, 0.0, 0.5, 2), (3, 0.5, 1.0, 2)]


def test_a_shape_detected_under_two_entity_types_is_one_region():
    import torch

    from regioncap.models.results import AnalysisResult, Region

    regions = [Region([14, 2, 36, 24], "a small blue circle", 0.95, -1.0, "people"),
               Region([150, 117, 173, 140], "a black square", 0.9, -1.0, "vehicles"),
               # the same circle again under another type: IoU 22*22 / (22*22 + 23*24 - 22*22) = 0.88
               Region([14, 1, 37, 25], "a small blue circle", 0.59, -1.0, "clothing"),
               # overlapping the square less than 0.7 (IoU 0.53): another region, kept
               Region([158, 117, 181, 140], "a red square", 0.5, -1.0, "vehicles")]
    result = AnalysisResult(regions, torch.arange(8.0).reshape(4, 2), torch.zeros(2), 192, 144, {}, None)
    out = distinct(result)
    assert [r.caption for r in out.regions] == ["a small blue circle", "a black square", "a red square"]
    assert out.vectors.tolist() == [[0.0, 1.0], [2.0, 3.0], [6.0, 7.0]] and len(out.candidates) == 3


# -- the whole run against the scene's ground truth ------------------------------------------------------
def _what(caption: str) -> tuple[str, str] | None:
    words = caption.split()
    colour = next((w for w in words if w in {"red", "blue", "yellow"}), None)
    shape = next((w for w in words if w in {"circle", "square", "triangle"}), None)
    return (colour, shape) if colour and shape else None


def test_records_and_audio_description_match_the_scene(demo_model, scene, scene_video, tmp_path):
    vtt, out = tmp_path / "scene.vtt", tmp_path / "out" / "scene.regions.mp4"
    records = list(caption_video(demo_model, scene_video, every=0.5, vtt=vtt, annotated=out))
    frames = [r for r in records if "time" in r]
    tracks = [r for r in records if "track" in r]
    assert records == frames + tracks  # frames first, then tracks
    assert [f["time"] for f in frames] == [i / 2 for i in range(16)]
    assert all(set(f) == {"path", "time", "width", "height", "regions", "description"} for f in frames)
    assert all((f["width"], f["height"], f["path"]) == (256, 192, str(scene_video)) for f in frames)
    # each frame shows what the scene holds then, each region where it is
    wrong = 0
    for f in frames:
        truth = {(MOVERS[i].colour, MOVERS[i].shape): box for i, box in scene.in_view(f["time"])}
        seen = {_what(r["caption"]): r["box"] for r in f["regions"]}
        wrong += set(truth) != set(seen) - {None} or any(iou(truth[k], seen[k]) < 0.5 for k in truth if k in seen)
        assert f["description"] == describe(_regions(f["regions"]), 256, 192)
    assert wrong <= 1, wrong  # the triangle slides in from the edge: one frame may catch it early
    # one track per shape, from its appearance to its last sampled frame, numbered in order of appearance
    assert [(_what(t["caption"]), t["track"]) for t in tracks] == [
        (("red", "circle"), 1), (("blue", "square"), 2), (("yellow", "triangle"), 3)]
    assert [(t["first"], t["last"]) for t in tracks] == [(0.0, 7.5), (2.0, 5.5), (4.0, 7.5)]
    assert all(set(t) == {"path", "track", "caption", "first", "last", "boxes"} for t in tracks)
    assert [b["time"] for b in tracks[1]["boxes"]] == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5]
    numbers = {r["track"] for f in frames for r in f["regions"]}
    assert numbers == {1, 2, 3}  # the frames' regions carry the same numbers
    # the audio description: a cue when each shape comes into view, in the narration's words
    cues = read_cues(vtt)
    assert [c[0] for c in cues] == [0.0, 2.0, 4.0]
    places = ["at the top left", "at the bottom right", "at the top right"]
    for (start, end, lines), track, where in zip(cues, tracks, places):
        # announced on its second sighting (announce_after=2), dated from its first, with a caption the
        # track had by then (a moving region may take a newer one later)
        said = {r["caption"] for f in frames for r in f["regions"]
                if r["track"] == track["track"] and f["time"] <= track["boxes"][1]["time"]}
        assert any(lines == [came_into_view(c, track["boxes"][1]["box"], 256, 192, present=True)] for c in said)
        assert lines[0].endswith(f"comes into view {where}") and end > start
    # the annotated copy: one frame per sample at the sampling rate, readable, ours
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.average_rate == 2 and sum(1 for _ in c.decode(s)) == 16
        assert c.metadata["comment"].startswith(COMMENT)


def test_a_phone_video_gives_boxes_in_its_upright_pixels(demo_model, scene, tmp_path):
    path = tmp_path / "phone.mp4"
    write_video(path, scene, fps=4, seconds=3.0, rotation=90)
    frames = [r for r in caption_video(demo_model, path, every=1.0) if "time" in r]
    assert [(f["time"], f["width"], f["height"]) for f in frames] == [(0.0, 256, 192), (1.0, 256, 192),
                                                                        (2.0, 256, 192)]
    circle = next(r for r in frames[0]["regions"] if _what(r["caption"]) == ("red", "circle"))
    assert iou(circle["box"], scene.in_view(0.0)[0][1]) > 0.6


def test_a_damaged_video_yields_what_came_before_then_says_so(demo_model, scene_video, tmp_path):
    data = scene_video.read_bytes()
    cut = tmp_path / "cut.mkv"
    with av.open(str(scene_video)) as src, av.open(str(cut), "w") as dst:  # mkv: a cut file still opens
        s = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = s
                dst.mux(packet)
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    assert data  # the original is untouched
    records = []
    with pytest.raises(VideoDamagedError):
        for record in caption_video(demo_model, cut, every=0.5):
            records.append(record)
    frames = [r for r in records if "time" in r]
    assert 2 <= len(frames) < 16
    assert any("track" in r for r in records) and records[-1].get("track")  # tracks of the frames kept
    json.dumps(records)


def _regions(dicts):
    from regioncap.models.results import Region

    return [Region(d["box"], d["caption"], d["score"], d["caption_score"], d["label"]) for d in dicts]


def test_two_workers_give_the_records_of_one(demo_model, scene_video):
    def summary(records):
        return [(r.get("time"), r.get("track"), r.get("caption"),
                 [(x["caption"], x["track"], [round(c) for c in x["box"]]) for x in r.get("regions", [])])
                for r in records]

    one = list(caption_video(demo_model, scene_video, every=1.0))
    two = list(caption_video(demo_model, scene_video, every=1.0, workers=2))
    assert summary(two) == summary(one) and len(one) == 8 + 3


def test_an_interrupted_run_leaves_a_playable_copy_and_a_valid_track(demo_model, scene_video, tmp_path):
    vtt, out = tmp_path / "cut.vtt", tmp_path / "cut.regions.mp4"
    seen = []

    def stop_after_six(frame, result, tracks):
        seen.append(frame.time)
        if len(seen) == 7:
            raise KeyboardInterrupt  # Ctrl-C while the seventh frame (3.0 s) is handled

    records = caption_video(demo_model, scene_video, every=0.5, vtt=vtt, annotated=out, on_frame=stop_after_six)
    with pytest.raises(KeyboardInterrupt):
        for _ in records:
            pass
    with av.open(str(out)) as c:  # finished properly: it opens and its six frames (0 to 2.5 s) play
        assert sum(1 for _ in c.decode(video=0)) == 6
    assert [c[0] for c in read_cues(vtt)] == [0.0, 2.0]  # the circle, then the square (seen at 2.0 and 2.5 s)
