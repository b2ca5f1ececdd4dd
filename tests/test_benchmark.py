"""benchmarks/bench_inference.py runs end to end on one tiny image (no timed assertions)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_inference.py"
QUICK = ["--images", "1", "--repeats", "1", "--warmup", "0", "--regions", "2,3", "--image-size", "64"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_variant_and_ratio_is_reported(bench, saved_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    report = bench.main(["--model", str(saved_model[1]), *QUICK, "--no-memory", "--app-memory", "0",
                         "--json", str(out)])
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["results"].keys() == report["results"].keys() == {
        "a@2", "a@3", "b@2", "b@3", "c@2", "c@3", "c+det", "d", "e"}
    for label in bench.LABELS.values():
        assert label in printed
    for r in data["results"].values():
        assert r["median_ms"] > 0 and r["samples"] == 1
    # the same boxes reach every variant: ours caption exactly the boxes asked for
    assert data["results"]["b@3"]["median_regions"] == data["results"]["c@3"]["median_regions"] == 3
    assert set(data["ratios"]) == {f"{r}@{n}" for r in ("a/b", "a/c", "c/d") for n in (2, 3)}
    assert all(v > 0 for v in data["ratios"].values())
    for name in data["ratios"]:
        assert f"{name} = " in printed
    assert [t["target"] for t in data["targets"]][-1] == "(e) query median <= 20 ms"
    assert data["setup"]["model"] == str(saved_model[1])


def test_memory_is_measured_in_fresh_processes(bench, saved_model, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--model", str(saved_model[1]), *QUICK, "--variants", "e", "--app-memory", "2", "--json", str(out)])
    data = json.loads(out.read_text())
    memory = data["results"]["e"]["memory"]
    assert memory["peak_mb"] > 0 and memory["run_mb"] >= 0, memory
    rss = data["app_memory"]["rss_mb"]
    assert list(rss) == ["start", "model loaded", "after 1 images", "after 2 images"]
    assert data["targets"][-1]["target"].startswith("app RSS")


def test_boxes_are_deterministic_and_inside_the_image(bench):
    image = bench.make_images(1, 80)[0]
    boxes = bench.make_boxes(image, 36, 5)
    assert boxes == bench.make_boxes(image, 36, 5) and len(boxes) == 36
    w, h = image.size
    assert all(0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h for x1, y1, x2, y2 in boxes)
