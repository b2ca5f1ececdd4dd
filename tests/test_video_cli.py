"""Videos through the command line and the index: caption (mixed with images, folders, --vtt,
--output-dir), index (frames with their time, content hash: an unchanged video is not decoded again)
and search (the moment a phrase names, with its time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("av")

from regioncap.cli import main  # noqa: E402
from regioncap.index.files import walk  # noqa: E402
from regioncap.video.synthetic import MovingScene, Mover, write_video  # noqa: E402
from regioncap.video.vtt import read_cues  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-model"
pytestmark = pytest.mark.skipif(not (DEMO / "model.safetensors").exists(), reason="no demo model")

# 6 s: a red circle all along, a blue square from 2 to 4 s
MOVERS = [Mover("circle", "red", "medium", 30, 0.0, 6.0, 50, 50, 60, 55),
          Mover("square", "blue", "medium", 28, 2.0, 4.0, 200, 140, 196, 140)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder holding a video, a photo (a frame of it) and a text file; and the scene."""
    folder = tmp_path_factory.mktemp("clips")
    scene = MovingScene(MOVERS, seed=5, seconds=6.0)
    write_video(folder / "walk.mp4", scene, fps=10)
    scene.frame(0.5).save(folder / "still.png")  # no square in it
    (folder / "notes.txt").write_text("not read\n")
    return folder, scene


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    if out.startswith("{\n"):  # one indented object (index, search)
        return code, [json.loads(out)], err
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_the_walker_takes_videos_beside_images(clips):
    folder, _ = clips
    found = walk([folder])
    assert [(f.path.name, f.kind) for f in found.found] == [("still.png", "image"), ("walk.mp4", "video")]
    assert dict(found.skipped) == {".txt": 1}


def test_caption_a_folder_of_images_and_videos(clips, tmp_path, capsys):
    folder, scene = clips
    out = tmp_path / "out"
    code, lines, err = run_main(capsys, "caption", folder, "--output-dir", out, "--every", "1")
    assert code == 0
    image, *video = lines
    assert image["path"].endswith("still.png") and "regions" in image
    frames = [r for r in video if "time" in r]
    tracks = [r for r in video if "track" in r]
    assert video == frames + tracks and [f["time"] for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(set(f) == {"path", "time", "width", "height", "regions", "description"} for f in frames)
    assert [(t["first"], t["last"]) for t in tracks] == [(0.0, 5.0), (2.0, 3.0)]
    assert "blue square" in tracks[1]["caption"] and "red circle" in tracks[0]["caption"]
    # the annotated copy and its description track, where a picture's copy goes
    assert (out / "walk.mp4.regions.mp4").is_file() and (out / "still.png.regions.jpg").is_file()
    cues = read_cues(out / "walk.mp4.regions.vtt")
    assert [c[0] for c in cues] == [0.0, 2.0] and "comes into view" in cues[1][2][0]
    assert "walk.mp4 0:06 / 0:06 100%" in err  # the progress bar counts the video's own time
    # a second run replaces its own outputs; a stranger's file in the way stops that video alone
    (out / "walk.mp4.regions.mp4").unlink()
    (out / "walk.mp4.regions.mp4").write_bytes(b"someone's")
    code, lines, _ = run_main(capsys, "caption", folder, "--output-dir", out, "--every", "1")
    assert code == 0 and lines[0]["path"].endswith("still.png")
    assert lines[1:] == [{"path": str(folder / "walk.mp4"), "error": lines[1]["error"]}]
    assert "not written by regioncap" in lines[1]["error"]
    assert (out / "walk.mp4.regions.mp4").read_bytes() == b"someone's"


def test_caption_one_video_with_its_track(clips, tmp_path, capsys):
    folder, _ = clips
    vtt = tmp_path / "walk.vtt"
    code, lines, _ = run_main(capsys, "caption", folder / "walk.mp4", "--vtt", vtt, "--every", "2")
    assert code == 0 and [r.get("time") for r in lines if "time" in r] == [0.0, 2.0, 4.0]
    assert read_cues(vtt)[0][2] == [f"{lines[0]['regions'][0]['caption']} comes into view at the top left"]


@pytest.mark.parametrize("case", ["vtt-for-two", "vtt-for-image", "bad-every"])
def test_video_options_refused_with_one_line(case, clips, tmp_path, capsys):
    folder, _ = clips
    other = tmp_path / "other.mp4"
    shutil.copy(folder / "walk.mp4", other)
    argv = {"vtt-for-two": ["caption", folder / "walk.mp4", other, "--vtt", tmp_path / "x.vtt"],
            "vtt-for-image": ["caption", folder / "still.png", "--vtt", tmp_path / "x.vtt"],
            "bad-every": ["caption", folder / "walk.mp4", "--every", "-1"]}[case]
    if case == "bad-every":
        with pytest.raises(SystemExit) as caught:
            main([str(a) for a in argv])
        assert caught.value.code == 2
        return
    code, lines, err = run_main(capsys, *argv)
    assert code == 2 and lines == [] and len(err.strip().splitlines()) == 1 and "--vtt" in err
    assert not (tmp_path / "x.vtt").exists()


def test_an_unreadable_video_is_one_error_line_and_the_run_goes_on(clips, tmp_path, capsys):
    folder, _ = clips
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(folder / "still.png", mixed / "still.png")
    (mixed / "broken.mp4").write_text("not a video\n" * 40)
    code, lines, _ = run_main(capsys, "caption", mixed)
    assert code == 0 and len(lines) == 2
    assert lines[1] == {"path": str(mixed / "broken.mp4"), "error": lines[1]["error"]}
    assert "not a video" in lines[1]["error"]
    (mixed / "still.png").unlink()
    code, lines, err = run_main(capsys, "caption", mixed)
    assert code == 2 and "no image or video could be read" in err


def test_index_and_search_find_the_moment(clips, tmp_path, capsys, monkeypatch):
    folder, scene = clips
    index = tmp_path / "idx"
    code, (report,), _ = run_main(capsys, "index", folder, "--index", index, "--every", "1")
    assert code == 0 and (report["added"], report["images"], report["failed"]) == (2, 7, [])  # photo + 6 frames
    # the moment: the blue square is in view from 2 to 4 s
    code, (found,), _ = run_main(capsys, "search", "a blue square", "--index", index, "--top-k", "2")
    assert {(r["path"], r["time"]) for r in found["results"]} == {(str(folder / "walk.mp4"), 2.0),
                                                                  (str(folder / "walk.mp4"), 3.0)}
    assert all("blue square" in r["matches"][0]["caption"] for r in found["results"])
    code, (found,), _ = run_main(capsys, "search", "a blue square", "--index", index, "--by", "regions",
                                 "--top-k", "1")
    assert found["results"][0]["time"] in (2.0, 3.0) and "blue square" in found["results"][0]["caption"]
    # the photo's hit has no time
    code, (found,), _ = run_main(capsys, "search", "a red circle", "--index", index, "--top-k", "7")
    assert sum("time" not in r for r in found["results"]) == 1
    # an unchanged video is free: not decoded again
    import regioncap.video.indexing as indexing

    def refuse(*a, **k):
        raise AssertionError("an unchanged video was decoded")

    monkeypatch.setattr(indexing, "caption_video", refuse)
    code, (report,), _ = run_main(capsys, "index", folder, "--index", index, "--every", "1")
    assert (report["unchanged"], report["added"], report["images"]) == (2, 0, 7)
    monkeypatch.undo()
    # other settings: analysed again, its frames replaced (no frame of the old sampling left)
    code, (report,), _ = run_main(capsys, "index", folder / "walk.mp4", "--index", index, "--every", "2")
    assert (report["updated"], report["images"]) == (1, 4)  # photo + frames at 0, 2, 4 s
