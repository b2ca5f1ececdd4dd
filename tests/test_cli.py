"""Command line: JSON on stdout for good input; exit code 2 and one line on stderr for bad input."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from regioncap import hub
from regioncap.cli import main
from regioncap.models.results import Region
from regioncap.narrate import count_word, describe, plural

ROOT = Path(__file__).resolve().parents[1]


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_caption_prints_the_documented_json(saved_model, image_file, capsys, tmp_path):
    _, folder = saved_model
    png = tmp_path / "annotated.png"
    code, out, err = run_main(capsys, "caption", image_file, "--model", folder, "--threshold", "0",
                              "--max-regions", "3", "--output", png)
    assert code == 0, err
    d = json.loads(out)
    assert list(d) == ["image", "width", "height", "model", "description", "regions", "timings_ms"]
    assert (d["image"], d["width"], d["height"], d["model"]) == (str(image_file), 96, 72, str(folder))
    assert 1 <= len(d["regions"]) <= 3
    assert set(d["regions"][0]) == {"box", "caption", "score", "caption_score", "label"}
    # The narration is the regions' own, in words: every caption, no pixel numbers.
    regions = [Region(**r) for r in d["regions"]]
    assert d["description"] == describe(regions, 96, 72) and d["description"].startswith(
        f"{count_word(len(regions)).capitalize()} region")
    assert all(r.caption in d["description"] or plural(r.caption, 2).split(" ", 1)[1] in d["description"]
               for r in regions) and not re.search(r"\d", d["description"])
    assert Image.open(png).size == (96, 72)


def test_query_prints_matches(saved_model, image_file, capsys):
    code, out, err = run_main(capsys, "query", image_file, "a red circle", "--model", saved_model[1],
                              "--threshold", "0", "--top-k", "2")
    assert code == 0, err
    d = json.loads(out)
    assert d["phrase"] == "a red circle" and len(d["matches"]) == 2
    assert set(d["matches"][0]) == {"box", "caption", "similarity"}


@pytest.mark.parametrize("case", ["bad image", "missing image", "missing model", "pickle model", "empty phrase",
                                  "unknown words"])
def test_bad_input_exits_2_with_one_line(case, saved_model, image_file, tmp_path, capsys):
    folder = saved_model[1]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    pickled = tmp_path / "weights.pt"
    pickled.write_bytes(b"\x80\x04junk")
    argv = {
        "bad image": ["caption", bad, "--model", folder],
        "missing image": ["caption", tmp_path / "nope.png", "--model", folder],
        "missing model": ["caption", image_file, "--model", tmp_path / "no-model"],
        "pickle model": ["caption", image_file, "--model", pickled],
        "empty phrase": ["query", image_file, "  ", "--model", folder],
        "unknown words": ["query", image_file, "zebra quokka", "--model", folder],
    }[case]
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("regioncap: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_missing_default_model_says_so(image_file, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(hub.MODEL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "default_model_path", lambda: hub.DEFAULT_MODEL)
    code, out, err = run_main(capsys, "caption", image_file)
    assert code == 2 and "default model folder assets/demo-model does not exist" in err


def test_bad_option_values_are_usage_errors(image_file, capsys):
    for argv in (["caption", image_file, "--threshold", "1.5"], ["caption", image_file, "--max-regions", "-1"],
                 ["query", image_file, "red", "--top-k", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in argv])
        assert exit_.value.code == 2
        err = capsys.readouterr().err  # the CLI's rule for bad input: one line, no usage block
        assert err.count("\n") == 1 and "error: argument" in err and err.rstrip().endswith("--help)")


def test_python_dash_m_entry_point(tmp_path):
    # the error path of the real entry point; it fails on the image before importing torch, so it is quick
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "regioncap", "caption", str(tmp_path / "missing.png"), "--model", str(tmp_path)]
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [f"regioncap: error: {tmp_path / 'missing.png'}: file not found"]


# -- collection search: index / search ----------------------------------------------------------------------
def scene_files(folder: Path, count: int, start: int = 0) -> list[Path]:
    from test_index import scene

    folder.mkdir(parents=True, exist_ok=True)
    return [scene(folder / f"photo-{i:03d}.png", i) for i in range(start, start + count)]


def test_index_and_search_print_the_documented_json(saved_model, tmp_path, capsys):
    folder = saved_model[1]
    photos = scene_files(tmp_path / "photos", 3)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    index = tmp_path / "index"
    code, out, err = run_main(capsys, "index", tmp_path / "photos", "--index", index, "--model", folder,
                              "--threshold", "0", "--max-regions", "4")
    assert code == 0, err
    d = json.loads(out)
    assert list(d) == ["index", "model", "images", "added", "updated", "unchanged", "removed", "failed"]
    assert (d["index"], d["model"], d["images"], d["added"]) == (str(index), str(folder), 3, 3)
    assert [f["path"] for f in d["failed"]] == [str((tmp_path / "photos" / "broken.jpg").resolve())]
    assert "broken.jpg" in d["failed"][0]["error"]
    assert "indexing" in err  # the progress bar is on stderr

    code, out, err = run_main(capsys, "search", "a red circle next to a blue square", "--index", index,
                              "--model", folder, "--top-k", "2")
    assert code == 0, err
    d = json.loads(out)
    assert (list(d), d["query"], d["by"], len(d["results"])) == (["query", "by", "results"],
                                                                  "a red circle next to a blue square", "images", 2)
    assert list(d["results"][0]) == ["path", "score", "matches"]
    assert [m["phrase"] for m in d["results"][0]["matches"]] == ["a red circle", "a blue square"]
    assert list(d["results"][0]["matches"][0]) == ["phrase", "box", "caption", "similarity"]
    assert d["results"][0]["path"] in {str(p.resolve()) for p in photos}
    code, out, err = run_main(capsys, "search", "a red circle", "--index", index, "--model", folder, "--by",
                              "regions", "--top-k", "3")
    d = json.loads(out)
    assert code == 0 and d["by"] == "regions" and len(d["results"]) == 3
    assert list(d["results"][0]) == ["path", "box", "caption", "similarity"]

    photos[0].unlink()
    code, out, _ = run_main(capsys, "index", tmp_path / "photos", "--index", index, "--model", folder,
                            "--threshold", "0", "--max-regions", "4", "--prune")
    d = json.loads(out)
    assert (code, d["images"], d["unchanged"], d["removed"], d["added"]) == (0, 2, 2, 1, 0)


@pytest.mark.parametrize("case", ["empty query", "long query", "unknown words", "missing index", "unreachable server",
                                  "another model", "index is a file"])
def test_collection_bad_input_exits_2_with_one_line(case, saved_model, make_model, tmp_path, capsys):
    folder = saved_model[1]
    index = tmp_path / "index"
    scene_files(tmp_path / "photos", 1)
    assert run_main(capsys, "index", tmp_path / "photos", "--index", index, "--model", folder)[0] == 0
    other = tmp_path / "other-model"
    make_model(seed=3).save_pretrained(other)
    (tmp_path / "file").write_text("x")
    search = ["search", "a red circle", "--model", folder, "--index"]
    argv = {
        "empty query": ["search", " ", "--index", index, "--model", folder],
        "long query": ["search", "red " * 600, "--index", index, "--model", folder],
        "unknown words": ["search", "zebra quokka", "--index", index, "--model", folder],
        "missing index": [*search, tmp_path / "nope"],
        "unreachable server": [*search, "photos", "--qdrant-url", "http://127.0.0.1:9"],
        "another model": ["index", tmp_path / "photos", "--index", index, "--model", other],
        "index is a file": ["index", tmp_path / "photos", "--index", tmp_path / "file", "--model", folder],
    }[case]
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("regioncap: error: ") and err.count("\n") == 1 and "Traceback" not in err
    if case == "another model":
        assert f"built by the model {folder}" in err and str(other) in err


def test_sigkill_during_index_then_rerun_completes(saved_model, tmp_path):
    import re
    import signal
    import threading

    # 40 photos: on a busy machine the watcher below can fall behind the run by many images
    photos = scene_files(tmp_path / "photos", 40)
    index = tmp_path / "index"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "regioncap", "index", str(tmp_path / "photos"), "--index", str(index),
           "--model", str(saved_model[1]), "--threshold", "0", "--max-regions", "3", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    progress, reached = [0], threading.Event()

    def watch():  # the progress bar counts images written (its count moves after each write)
        text = ""
        while chunk := proc.stderr.read1(256).decode(errors="replace"):
            text += chunk
            counts = re.findall(r"(\d+)/40", text)
            if counts and int(counts[-1]) >= 2:
                progress[0] = int(counts[-1])
                reached.set()

    threading.Thread(target=watch, daemon=True).start()
    reached.wait(120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stored = progress[0]
    assert proc.returncode == -signal.SIGKILL and 2 <= stored < len(photos), "killed too late to test anything"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert d["images"] == len(photos) and d["unchanged"] >= stored and d["added"] + d["unchanged"] == len(photos)
    from regioncap import RegionCaptioner
    from regioncap.index import RegionIndex

    with RegionIndex(index, RegionCaptioner.from_pretrained(saved_model[1]), create=False) as ix:
        listed = sorted(p for image in ix.images() for p in image["paths"])
        assert listed == sorted(str(p.resolve()) for p in photos)  # none missing, none twice
        assert ix.store.count_regions() == sum(1 + len(i["regions"]) for i in ix.images())


def test_sentence_search_reaches_the_recall_of_ranking_every_image_by_align(tmp_path, capsys):
    from regioncap import RegionCaptioner
    from regioncap.data.flickr30k import read_sentences, read_split
    from regioncap.data.synthetic import main as synthetic_main
    from regioncap.index import RegionIndex

    data = tmp_path / "data"
    synthetic_main([str(data), "--images", "10", "--seed", "11", "--splits", "0,0,1"])
    capsys.readouterr()
    ids = read_split(data / "test.txt")
    assert len(ids) == 10
    model_dir = ROOT / "assets" / "demo-model"
    code, out, err = run_main(capsys, "index", data / "Images", "--index", tmp_path / "index", "--model", model_dir)
    assert code == 0 and json.loads(out)["added"] == 10, err
    model = RegionCaptioner.from_pretrained(model_dir)
    paths = [str((data / "Images" / f"{i}.jpg").resolve()) for i in ids]
    results = [model.analyze(p, max_regions=10, score_threshold=0.5) for p in paths]
    queries = [(s.sentence, k) for k, i in enumerate(ids) for s in read_sentences(data / "Sentences" / f"{i}.txt")]
    ranks_index, ranks_all = [], []
    with RegionIndex(tmp_path / "index", model, create=False) as index:
        for sentence, k in queries:
            hits = [h.path for h in index.search(sentence, top_k=10)]
            ranks_index.append(hits.index(paths[k]) if paths[k] in hits else 10)
            scores = torch.tensor([r.align(sentence).score for r in results])
            ranks_all.append(int((scores > scores[k]).sum()))
    recall = {n: (sum(r < n for r in ranks_index), sum(r < n for r in ranks_all)) for n in (1, 5, 10)}
    assert all(a == b for a, b in recall.values()), recall
    assert recall[10][0] == len(queries) and recall[1][0] > len(queries) / 10  # better than chance


def test_caption_folders_print_json_lines_and_go_past_bad_files(saved_model, tmp_path, capsys):
    photos = scene_files(tmp_path / "photos", 3)
    (tmp_path / "photos" / "sub").mkdir()
    shutil.copy(photos[0], tmp_path / "photos" / "sub" / "again.png")
    (tmp_path / "photos" / "notes.jpg").write_text("not a picture")
    out_dir = tmp_path / "annotated"
    code, out, err = run_main(capsys, "caption", tmp_path / "photos", tmp_path / "missing.png", "--model",
                              saved_model[1], "--threshold", "0", "--max-regions", "2", "--output-dir", out_dir,
                              "--batch-size", "2", "--workers", "2")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    good = [d for d in lines if "error" not in d]
    bad = {d["path"]: d["error"] for d in lines if "error" in d}
    assert len(good) == 4 and all(list(d) == ["path", "image", "width", "height", "model", "description", "regions",
                                                "timings_ms"]
                                  for d in good)
    assert set(bad) == {str(tmp_path / "missing.png"), str((tmp_path / "photos" / "notes.jpg").resolve())}
    assert "not an image" in bad[str((tmp_path / "photos" / "notes.jpg").resolve())]
    same = [d["regions"] for d in good if d["path"].endswith(("again.png", photos[0].name))]
    assert len(same) == 2 and same[0] == same[1]  # a file's result does not depend on its batch
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.jpg")) == sorted(
        [p.name + ".regions.jpg" for p in photos] + ["sub/again.png.regions.jpg"])
    assert "captioning" in err  # the progress bar


def test_caption_folder_of_nothing_readable_exits_2(saved_model, tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("no")
    code, out, err = run_main(capsys, "caption", tmp_path / "junk", "--model", saved_model[1])
    assert code == 2 and "no image could be read" in err and json.loads(out)["error"]


# -- caption's outputs never replace an input (issue 29, point 2) ----------------------------------------
def caption_folder(capsys, model_dir, *argv):
    """``caption`` on files/folders: (exit code, JSON lines, stderr)."""
    code, out, err = run_main(capsys, "caption", *argv, "--model", model_dir, "--threshold", "0", "--max-regions",
                              "2")
    return code, [json.loads(line) for line in out.splitlines()], err


def tree_bytes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_names_keep_name_and_suffix_so_nothing_collides(saved_model, tmp_path, capsys):
    from test_index import scene

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "a.png", "a.webp", "sub/a.png"]):
        scene(photos / name, i)
    before = tree_bytes(photos)
    code, lines, err = caption_folder(capsys, saved_model[1], photos, "--output-dir", tmp_path / "out")
    assert code == 0 and len(lines) == 4 and not any("error" in d for d in lines), err
    assert tree_bytes(photos) == before
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    assert written == ["a.jpg.regions.jpg", "a.png.regions.jpg", "a.webp.regions.jpg", "sub/a.png.regions.jpg"]


@pytest.mark.parametrize("spelling", ["same", "trailing dot", "link"])
def test_an_output_folder_equal_to_an_input_folder_is_refused(spelling, saved_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    scene_files(photos, 2)
    (tmp_path / "link").symlink_to(photos)
    before = tree_bytes(photos)
    out_dir = {"same": photos, "trailing dot": photos / ".", "link": tmp_path / "link"}[spelling]
    code, out, err = run_main(capsys, "caption", photos, "--output-dir", out_dir, "--model", saved_model[1])
    assert code == 2 and out == "" and err.count("\n") == 1 and "is an input folder" in err
    assert tree_bytes(photos) == before  # nothing written, nothing replaced


def test_an_output_folder_that_is_an_input_folder_under_a_name_realpath_keeps_apart_is_refused(tmp_path,
                                                                                              monkeypatch):
    """``caption Photos --output-dir photos`` on a case-insensitive disk (or a bind mount): realpath gives two
    paths for one folder; the folder itself (its device and inode) decides. Played here by a link with
    realpath unable to follow it."""
    from regioncap.annotate import OutputFolder
    from regioncap.errors import RegionCapError

    photos = tmp_path / "photos"
    scene_files(photos, 1)
    (tmp_path / "Photos").symlink_to(photos)
    monkeypatch.setattr(os.path, "realpath", lambda p, *a, **kw: os.path.abspath(p))
    with pytest.raises(RegionCapError, match="is an input folder"):
        OutputFolder(tmp_path / "Photos", [photos])
    OutputFolder(tmp_path / "elsewhere", [photos])  # a folder not yet made is no input folder


@pytest.mark.parametrize("existing", [False, True])
def test_an_output_folder_inside_the_inputs_is_never_captioned(existing, saved_model, tmp_path, capsys, caplog):
    photos = tmp_path / "photos"
    scene_files(photos, 2)
    out_dir = photos / "annotated"
    if existing:  # the user's own folder: regioncap puts no marker there, the walk leaves it out by name
        out_dir.mkdir()
        (out_dir / "readme.txt").write_text("annotated copies go here")
    for _ in range(2):  # the second run must not caption the first run's pictures
        code, lines, err = caption_folder(capsys, saved_model[1], photos, "--output-dir", out_dir)
        assert code == 0, err
        assert sorted(Path(d["path"]).name for d in lines) == ["photo-000.png", "photo-001.png"]
    assert sorted(p.name for p in out_dir.rglob("*.jpg")) == ["photo-000.png.regions.jpg", "photo-001.png.regions.jpg"]
    assert (out_dir / "regioncap-output.json").exists() is not existing
    if not existing:  # nor is a folder regioncap made, in a run without --output-dir (its marker)
        code, lines, err = caption_folder(capsys, saved_model[1], photos)
        assert code == 0 and len(lines) == 2 and "skipped 1 regioncap index or output folder(s)" in caplog.text, err


def test_output_equal_to_the_input_or_a_strangers_file_is_refused(saved_model, image_file, tmp_path, capsys):
    original = image_file.read_bytes()
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"a file regioncap did not write")
    for target, message in [(image_file, "is an input"), (tmp_path / "." / image_file.name, "is an input"),
                            (mine, "not written by regioncap")]:
        code, out, err = run_main(capsys, "caption", image_file, "--output", target, "--model", saved_model[1])
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err
    assert image_file.read_bytes() == original and mine.read_bytes() == b"a file regioncap did not write"
    out = tmp_path / "annotated.png"
    for _ in range(2):  # its own output, it replaces
        assert run_main(capsys, "caption", image_file, "--output", out, "--model", saved_model[1])[0] == 0
    code, _, err = run_main(capsys, "caption", tmp_path, image_file, "--output", out, "--model", saved_model[1])
    assert code == 2 and "--output is for one image" in err


def test_a_link_to_a_picture_elsewhere_does_not_move_the_outputs(saved_model, tmp_path, capsys):
    photos = tmp_path / "library" / "photos"
    scene_files(photos, 1)
    elsewhere = scene_files(tmp_path / "elsewhere" / "deep", 1, start=5)[0]
    (photos / "linked.png").symlink_to(elsewhere)
    code, lines, err = caption_folder(capsys, saved_model[1], photos, "--output-dir", tmp_path / "out")
    assert code == 0 and len(lines) == 2, err
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    assert written == ["linked.png.regions.jpg", "photo-000.png.regions.jpg"]


def test_an_index_folder_is_never_walked_as_input(saved_model, tmp_path, capsys, caplog):
    from regioncap.index import edge
    from regioncap.index.files import INDEX_MARKERS

    assert edge.META_FILE in INDEX_MARKERS  # the walker knows the index's record by its name
    photos = tmp_path / "photos"
    scene_files(photos, 1)
    for marker in INDEX_MARKERS:  # an index, or one whose creation was interrupted
        index = photos / marker.replace(".", "-")
        scene_files(index / "images", 1)  # were it walked, this picture would be captioned
        (index / marker).write_text("{}")
    code, lines, err = caption_folder(capsys, saved_model[1], photos)
    assert code == 0 and [Path(d["path"]).name for d in lines] == ["photo-000.png"], err
    assert "skipped 2 regioncap index or output folder(s)" in caplog.text  # on stderr, through logging


# -- caption goes on past a failing file, ends quietly on a closed pipe (issue 29, point 7) -----------------
def test_a_model_error_in_one_file_is_its_error_line_and_the_run_goes_on(saved_model, tmp_path, capsys,
                                                                          monkeypatch):
    from test_index import scene

    from regioncap.models.model import RegionCaptioner

    photos = tmp_path / "photos"
    scene_files(photos, 3)
    scene(photos / "photo-001.png", 1, size=(97, 73))  # the one the model chokes on
    analyze_batch = RegionCaptioner.analyze_batch

    def choke(self, images, *args, **kwargs):
        if any(im.size == (97, 73) for im in images):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return analyze_batch(self, images, *args, **kwargs)

    monkeypatch.setattr(RegionCaptioner, "analyze_batch", choke)
    code, lines, err = caption_folder(capsys, saved_model[1], photos, "--batch-size", "2")
    assert code == 0, err
    assert [(Path(d["path"]).name, "error" in d) for d in lines] == [
        ("photo-000.png", False), ("photo-001.png", True), ("photo-002.png", False)]
    assert lines[1]["error"].startswith(f"{photos.resolve() / 'photo-001.png'}: analysis failed (RuntimeError: CUDA")
    assert "Traceback" not in err


def test_a_full_disk_writing_one_picture_is_its_error_line_and_the_run_goes_on(saved_model, tmp_path, capsys,
                                                                                monkeypatch):
    import errno

    from PIL import Image as PILImage

    photos = tmp_path / "photos"
    scene_files(photos, 3)
    save = PILImage.Image.save

    def full_disk(self, fp, *args, **kwargs):
        if "photo-001" in str(fp):
            Path(fp).write_bytes(b"half a pic")  # what a full disk leaves: part of the file
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PILImage.Image, "save", full_disk)
    code, lines, err = caption_folder(capsys, saved_model[1], photos, "--output-dir", tmp_path / "out")
    assert code == 0, err
    assert [("error" in d) for d in lines] == [False, True, False]
    assert lines[1]["path"] == str(photos.resolve() / "photo-001.png")
    assert lines[1]["error"] == (f"{tmp_path / 'out' / 'photo-001.png.regions.jpg'}: cannot write the annotated "
                                 "copy (No space left on device)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "photo-000.png.regions.jpg", "photo-002.png.regions.jpg", "regioncap-output.json"]  # no half picture


def test_a_closed_pipe_ends_the_run_quietly(saved_model, tmp_path):
    scene_files(tmp_path / "photos", 3)
    (tmp_path / "photos" / "photo-000.xmp").write_text("<x:xmpmeta/>")  # a sidecar: counted on stderr
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "regioncap", "caption", str(tmp_path / "photos"), "--model", str(saved_model[1])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # as `| head -0` would: the reader is gone before the first line
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert b"Broken pipe" not in err and b"Traceback" not in err and b"Exception ignored" not in err
    assert b"skipped 1 file(s) whose suffix no reader knows (.xmp 1)" in err


def test_a_closed_pipe_in_the_process(saved_model, image_file, monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["caption", str(image_file), "--model", str(saved_model[1])]) == 0


def test_output_dir_draws_at_display_size_without_decoding_again(saved_model, tmp_path, capsys, monkeypatch):
    import threading

    import regioncap.batch
    import regioncap.data.image
    from test_index import scene

    photos = tmp_path / "photos"
    scene(photos.mkdir() or photos / "big.jpg", 0, size=(2400, 1800))
    decoded_in = []
    for module in (regioncap.data.image, regioncap.batch):
        def recording(src, *args, _load=module.load_image, **kwargs):
            if not hasattr(src, "size"):  # a file or its bytes: a decoding
                decoded_in.append(threading.current_thread().name)
            return _load(src, *args, **kwargs)

        monkeypatch.setattr(module, "load_image", recording)
    code, lines, err = caption_folder(capsys, saved_model[1], photos, "--output-dir", tmp_path / "out")
    assert code == 0 and lines[0]["width"] == 2400, err
    assert len(decoded_in) == 1 and decoded_in[0] != threading.main_thread().name
    with Image.open(tmp_path / "out" / "big.jpg.regions.jpg") as im:
        assert (im.format, im.size) == ("JPEG", (1600, 1200))
    for option, written, kind in [("--output-dir", tmp_path / "one" / "big.jpg.regions.jpg", "JPEG"),
                                  ("--output", tmp_path / "big.png", "PNG")]:  # one image: the same size
        target = written.parent if option == "--output-dir" else written
        assert run_main(capsys, "caption", photos / "big.jpg", option, target, "--model", saved_model[1])[0] == 0
        with Image.open(written) as im:
            assert (im.format, im.size) == (kind, (1600, 1200))


# -- --device auto (issue 30) -------------------------------------------------------------------------------
def test_caption_picks_cuda_when_present(saved_model, image_file, capsys, monkeypatch):
    from regioncap.models.model import RegionCaptioner

    asked = []
    load = RegionCaptioner.from_pretrained.__func__

    def from_pretrained(cls, name, device="cpu", **kwargs):
        asked.append(device)
        return load(cls, name, device="cpu", **kwargs)  # no GPU here: the device asked for is what is tested

    monkeypatch.setattr(RegionCaptioner, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run_main(capsys, "caption", image_file, "--model", saved_model[1])[0] == 0
    assert run_main(capsys, "caption", image_file, "--model", saved_model[1], "--device", "cpu")[0] == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_main(capsys, "caption", image_file, "--model", saved_model[1])[0] == 0
    assert asked == ["cuda", "cpu", "cpu"]
    code, _, err = run_main(capsys, "caption", image_file, "--model", saved_model[1], "--device", "cuda")
    assert code == 2 and "no CUDA device" in err


def test_every_model_command_defaults_to_device_auto():
    from regioncap.cli import get_args_parser

    parser = get_args_parser()
    for argv in (["caption", "x"], ["query", "x", "y"], ["index", "x", "--index", "i"],
                 ["search", "t", "--index", "i"]):
        assert parser.parse_args(argv).device == "auto", argv
        assert "--device {auto,cpu,cuda}" in parser._subparsers._group_actions[0].choices[argv[0]].format_usage()
    for page, commands in [("README.md", ("caption", "query", "index", "search")),
                           ("docs/usage.md", ("caption", "query"))]:
        lines = (ROOT / page).read_text().splitlines()
        for command in commands:  # the first synopsis of each command shows it
            synopsis = next(line for line in lines if line.startswith(f"python -m regioncap {command} "))
            assert "[--device auto|cpu|cuda]" in synopsis, (page, synopsis)
