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
    report = bench.main(["--model", str(saved_model[1]), "--baseline-model", str(saved_model[1]), *QUICK,
                         "--no-memory", "--app-memory", "0", "--json", str(out)])
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["results"].keys() == report["results"].keys() == {
        "a@2", "a@3", "b@2", "b@3", "c@2", "c@3", "c0@2", "c0@3", "g@2", "g@3", "c+det", "d", "e"}
    for label in bench.LABELS.values():
        assert label in printed
    for r in data["results"].values():
        assert r["median_ms"] > 0 and r["samples"] == 1
    # the same boxes reach every variant: ours caption exactly the boxes asked for
    assert data["results"]["b@3"]["median_regions"] == data["results"]["c@3"]["median_regions"] == 3
    assert set(data["ratios"]) == {f"{r}@{n}" for r in ("a/b", "a/c", "c/d", "c/c0", "g/c0") for n in (2, 3)}
    assert data["results"]["g@3"]["median_regions"] == 3
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


def test_photo_rows_vgg_encoders(bench, tmp_path, capsys):
    """--photo: the VGG-19 rows (the detector rows need 800-px COCO models: benchmark runs only) on one
    photo-preset picture, with their ratios and targets."""
    out = tmp_path / "photo.json"
    report = bench.main(["--photo", "--photo-archs", "", "--regions", "2", "--photo-images", "1", "--repeats", "1",
                         "--warmup", "0", "--json", str(out)])
    data = json.loads(out.read_text())["photo"]
    assert set(data["results"]) == {"vgg19@2", "vgg19-crops@2", "literal@2"} == set(report["photo"]["results"])
    assert all(r["median_ms"] > 0 and r["median_regions"] == 2 for r in data["results"].values())
    assert set(data["ratios"]) == {"literal/vgg19@2", "literal/vgg19-crops@2"}
    assert max(data["images"][0]) == 500  # the photo preset's size, not a scaled-up small scene
    printed = capsys.readouterr().out
    assert "literal/vgg19@2 = " in printed and "target literal/vgg19@36 >= 4.0" in printed


def test_photo_detector_agreement_is_measured(monkeypatch):
    """The detector rows compare ours with torchvision's eager forward on the same image (tiny input)."""
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    import bench_photo
    from regioncap.models.config import DetectorConfig

    real = DetectorConfig.for_arch
    monkeypatch.setattr(DetectorConfig, "for_arch",
                        staticmethod(lambda arch, **kw: real(arch, **{**kw, "min_size": 96, "max_size": 128})))
    images = [im.resize((120, 90)) for im in bench_photo.photos(1)]
    model = bench_photo.detector_model("mobilenet_v3_large_fpn")
    runs, agreement = bench_photo.detector_runs("mobilenet_v3_large_fpn", model, images, max_regions=5)
    assert agreement["regions"] == agreement["matched"] == 5 and agreement["same_order"]
    assert agreement["unmatched_ours"] == agreement["unmatched_eager"] == 0
    # float rounding only (the order of additions): 0.074 px here, 0.084 px with the TorchScript exporter, one thread
    assert agreement["box_max_diff_px"] < 0.15
    assert set(runs) == {f"mobilenet_v3_large_fpn: {k}" for k in (
        "torchvision eager detector", "ours, analyze()", "ours, analyze() without the fast path")}
    assert runs["mobilenet_v3_large_fpn: ours, analyze()"]()["regions"] == 5


def test_detections_are_matched_box_to_box():
    """A swap of two near-tied detections of one label reads as equal labels position by position while
    the boxes at each position differ: matched box to box, both match (0 px) and the order is reported."""
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    import bench_photo

    a, b, c = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [50.0, 0.0, 60.0, 30.0]
    swapped = bench_photo.match_detections([(a, "people"), (b, "people")], [(b, "people"), (a, "people")])
    assert swapped == {"matched": 2, "unmatched_ours": [], "unmatched_ref": [], "box_max_diff_px": 0.0,
                       "same_order": False}
    moved = [0.0, 0.0, 10.0, 12.5]  # IoU 0.8 with a
    m = bench_photo.match_detections([(moved, "people"), (c, "animals"), (b, "people")],
                                     [(a, "people"), (c, "people"), (a, "people")])
    assert (m["matched"], m["unmatched_ours"], m["unmatched_ref"]) == (1, [1, 2], [1, 2])  # label, then IoU 0
    assert m["box_max_diff_px"] == 2.5 and not m["same_order"]
    assert bench_photo.match_detections([(a, "people")], [(a, "people")])["same_order"]
    assert bench_photo.match_detections([], [])["matched"] == 0


def test_box_head_precision_rows(monkeypatch, capsys):
    """bench_box_head_precision: bf16 and int8 box heads against fp32, matched box to box (tiny input)."""
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    import bench_box_head_precision
    from regioncap.models.config import DetectorConfig

    real = DetectorConfig.for_arch
    monkeypatch.setattr(DetectorConfig, "for_arch",
                        staticmethod(lambda arch, **kw: real(arch, **{**kw, "min_size": 96, "max_size": 128})))
    monkeypatch.setattr(bench_box_head_precision, "photos",
                        lambda n: [im.resize((120, 90)) for im in bench_photo_module().photos(n)])
    report = bench_box_head_precision.main(["--images", "1", "--top", "5"])
    (row,) = report["rows"]
    assert row["reference_detections"] == 5 and len(row["pairs_over_threshold_per_photo"]) == 1
    for kind in ("bf16", "int8"):
        v = row["variants"][kind]
        assert v["detections"] == 5 and v["matched"] + v["unmatched"] == 5 and v["box_max_diff_px"] >= 0
    assert "bf16: " in capsys.readouterr().out


def bench_photo_module():
    import bench_photo

    return bench_photo


def test_bench_index_reports_every_row_and_exact_recall_where_the_search_is_exact(tmp_path):
    """bench_index.py end to end on a small collection: the indexing comparison, both default passes and
    the sweep rows; MaxSim over the float32 vectors (the default below 20,000 images) finds the exact top 10."""
    import subprocess
    import sys

    script = SCRIPT.parent / "bench_index.py"
    run = subprocess.run([sys.executable, str(script), "--images", "2", "--repeats", "1", "--sizes", "300",
                          "--base", "20", "--queries", "4", "--sweep", "0:64,4:64", "--work", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=True)
    lines = run.stdout.splitlines()
    assert any(line.startswith("index overhead: ") for line in lines)
    rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in lines if line.startswith("| 300")}
    assert list(rows) == ["300 (defaults, first pass after opening)", "300 (defaults, again)",
                          "300 (float32 MaxSim; phrases ef 64)", "300 (int8, 4x re-scored; phrases ef 64)"]
    for name in list(rows)[:3]:
        recall_images, recall_regions = (float(rows[name][i]) for i in (6, 7))
        assert recall_images == 1.0, (name, run.stdout)
        assert recall_regions > 0.9, (name, run.stdout)


def test_bench_index_sentences_only_builds_and_searches_the_images_shard_alone(tmp_path):
    """--sentences-only (the million-image run): no regions written or searched, sentences exact."""
    import subprocess
    import sys

    script = SCRIPT.parent / "bench_index.py"
    run = subprocess.run([sys.executable, str(script), "--images", "0", "--sizes", "300", "--base", "20",
                          "--queries", "4", "--sentences-only", "--keep", "--work", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=True)
    rows = [line.split("|")[2:] for line in run.stdout.splitlines() if line.startswith("| 300")]
    assert len(rows) == 2, run.stdout
    for row in rows:
        assert (row[5].strip(), float(row[6]), row[7].strip()) == ("-", 1.0, "-"), run.stdout
    from regioncap.index.edge import EdgeStore

    store = EdgeStore(tmp_path / "search-300", create=False)
    assert (store.count_images(), store.count_regions()) == (300, 0)
    store.close()
