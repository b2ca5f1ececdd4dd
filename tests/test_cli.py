"""Command line: JSON on stdout for good input; exit code 2 and one line on stderr for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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
