"""Command line: JSON on stdout for good input; exit code 2 and one line on stderr for bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from regioncap import hub
from regioncap.cli import main

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
    assert list(d) == ["image", "width", "height", "model", "regions", "timings_ms"]
    assert (d["image"], d["width"], d["height"], d["model"]) == (str(image_file), 96, 72, str(folder))
    assert 1 <= len(d["regions"]) <= 3
    assert set(d["regions"][0]) == {"box", "caption", "score", "caption_score", "label"}
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
    capsys.readouterr()


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

    photos = scene_files(tmp_path / "photos", 16)
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
            counts = re.findall(r"(\d+)/16", text)
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
    assert len(good) == 4 and all(list(d) == ["path", "image", "width", "height", "model", "regions", "timings_ms"]
                                  for d in good)
    assert set(bad) == {str(tmp_path / "missing.png"), str((tmp_path / "photos" / "notes.jpg").resolve())}
    assert "not an image" in bad[str((tmp_path / "photos" / "notes.jpg").resolve())]
    same = [d["regions"] for d in good if d["path"].endswith(("again.png", photos[0].name))]
    assert len(same) == 2 and same[0] == same[1]  # a file's result does not depend on its batch
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.png")) == sorted(
        [p.with_suffix(".png").name for p in photos] + ["sub/again.png"])
    assert "captioning" in err  # the progress bar


def test_caption_folder_of_nothing_readable_exits_2(saved_model, tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("no")
    code, out, err = run_main(capsys, "caption", tmp_path / "junk", "--model", saved_model[1])
    assert code == 2 and "no image could be read" in err and json.loads(out)["error"]
