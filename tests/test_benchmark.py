"""benchmarks/bench_inference.py runs end to end on one tiny image (no timed assertions)."""

import importlib.util
import json
import subprocess
import sys
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


@pytest.fixture(scope="module")
def bench_index():
    spec = importlib.util.spec_from_file_location("bench_index", SCRIPT.parent / "bench_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench_index(tmp_path, *args):
    """bench_index.py in a subprocess (as it is run); its stdout and --json report."""
    out = tmp_path / "report.json"
    run = subprocess.run([sys.executable, str(SCRIPT.parent / "bench_index.py"), *args, "--work", str(tmp_path),
                          "--json", str(out)], capture_output=True, text=True, timeout=300, check=True)
    return run.stdout, json.loads(out.read_text())


def test_bench_index_reports_held_out_defaults_and_tunes_on_other_queries(tmp_path):
    """bench_index.py end to end on a small collection: the indexing comparison; the defaults twice on the
    held-out queries, then the tuning queries with the defaults and each --sweep setting; the two query
    sets share no text; MaxSim over the float32 vectors (the default below 20,000 images) is exact."""
    stdout, report = run_bench_index(tmp_path, "--images", "2", "--repeats", "1", "--sizes", "300", "--base", "20",
                                     "--queries", "4", "--tune-queries", "4", "--sweep", "0:64,4:64")
    assert any(line.startswith("index overhead: ") for line in stdout.splitlines())
    (held_s, held_p), (tune_s, tune_p) = report["queries"]["held-out"], report["queries"]["tuning"]
    assert len(held_s) == len(tune_s) == 4 and held_p and tune_p
    assert not set(held_s) & set(tune_s) and not set(held_p) & set(tune_p)
    (size,) = report["sizes"]
    (run,) = size["runs"]
    from regioncap.index.edge import HNSW_EF
    assert (size["size"], run["images"], run["defaults"]) == (300, 300, [0, HNSW_EF])
    rows = run["settings"]
    assert [(r["queries"], r["setting"]) for r in rows] == [
        ("held-out", None), ("held-out", None), ("tuning", None), ("tuning", [0, 64]), ("tuning", [4, 64])]
    for r in rows:
        texts = report["queries"][r["queries"]]
        assert (len(r["images"]["found"]), len(r["regions"]["found"])) == (len(texts[0]), len(texts[1]))
        assert r["images"]["p50"] <= r["images"]["p95"]
    for r in rows[:4]:
        assert r["recall_images"] == 1.0, r
        assert r["recall_regions"] > 0.9, r
    assert run["rss_mb"] > 0 and size["size_mb"] > 0 and run["segments"][0] >= 1
    table = [line for line in stdout.splitlines() if "| held-out |" in line or "| tuning |" in line]
    assert len(table) == 5 and f"defaults: float32 MaxSim; phrases ef {HNSW_EF}; first pass" in table[0], stdout


def test_bench_index_held_out_queries_share_no_text_with_the_tuning_ones(bench_index, tmp_path):
    """The synthetic scenes' wording repeats: a sentence or phrase of a test scene that is also a tuning
    query (validation scenes) is left out of the held-out ones, which then take the next texts."""
    def scene(split, image_id, lines):
        (tmp_path / "Sentences" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
        with open(tmp_path / f"{split}.txt", "a") as f:
            f.write(f"{image_id}\n")

    (tmp_path / "Sentences").mkdir()
    scene("val", "1", ["[/EN#1/other a red circle] near [/EN#2/other a blue square] .",
                       "[/EN#1/other the red circle] on [/EN#0/notvisual the page] ."])
    scene("test", "2", ["[/EN#1/other a red circle] near [/EN#2/other a blue square] .",  # the tuning sentence
                        "[/EN#3/other a green star] above [/EN#4/other a red circle] .",
                        "[/EN#3/other a green star] alone ."])
    sets = bench_index.query_sets(tmp_path, held_out=2, tuning=2)
    assert sets["tuning"] == (["a red circle near a blue square .", "the red circle on the page ."],
                              ["a red circle", "a blue square"])
    assert sets["held-out"] == (["a green star above a red circle .", "a green star alone ."], ["a green star"])


def test_bench_index_spreads_each_scenes_copies_over_shuffled_places(bench_index):
    """Image k is a copy of a scene drawn without replacement: each scene's copies (ceil(size / base) at
    most) lie in random places, not one per block of len(base) images (one per segment), and the
    collection is the same on the second pass (the exact answers are computed from it)."""
    import numpy as np

    base = [(np.eye(8, dtype=np.float32)[[i]], []) for i in range(8)]  # scene i: one row, e_i
    size = 64
    chunks = list(bench_index.collection(base, size, noise=0.0, random_vectors=False, chunk=10))
    scenes = [int(np.argmax(v[0])) for items in chunks for _, v, _ in items]
    assert len(scenes) == size and np.bincount(scenes).tolist() == [8] * 8
    blocks = [scenes[i:i + 8] for i in range(0, size, 8)]
    assert any(len(set(block)) < 8 for block in blocks)  # some block holds two copies of a scene
    again = [v for items in bench_index.collection(base, size, 0.0, False, chunk=10) for _, v, _ in items]
    assert all((a == b).all() for a, b in zip(again, (v for items in chunks for _, v, _ in items)))


QUICK_INDEX = ["--images", "0", "--sizes", "300", "--base", "20", "--queries", "4", "--tune-queries", "0",
               "--sentences-only", "--keep"]


def test_bench_index_sentences_only_builds_and_searches_the_images_shard_alone(tmp_path):
    """--sentences-only (the million-image run): no regions written or searched, sentences exact; --reuse
    searches the kept index again."""
    stdout, report = run_bench_index(tmp_path, *QUICK_INDEX)
    rows = report["sizes"][0]["runs"][0]["settings"]
    assert [r["queries"] for r in rows] == ["held-out", "held-out"], stdout
    for r in rows:
        assert ("regions" not in r, r["recall_images"], r["recall_regions"]) == (True, 1.0, None), stdout
    from regioncap.index.edge import EdgeStore

    store = EdgeStore(tmp_path / "search-300", create=False)
    assert (store.count_images(), store.count_regions()) == (300, 0)
    store.close()
    assert report["sizes"][0]["rows"] > 300  # every image's [whole image, regions...]
    # --reuse searches the kept index (no build), and refuses one of another collection
    again = run_bench_index(tmp_path, *QUICK_INDEX, "--reuse")[1]["sizes"][0]
    assert (again["build_s"], again["rows"]) == (None, report["sizes"][0]["rows"])
    assert [r["recall_images"] for r in again["runs"][0]["settings"]] == [1.0, 1.0]
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_bench_index(tmp_path, *QUICK_INDEX, "--reuse", "--noise", "0.03")
    assert "not an index of this collection" in refused.value.stderr
