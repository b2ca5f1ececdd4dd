"""benchmarks/bench_narration.py's scoring, on hand-made boxes (the benchmark itself is not a test)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

from regioncap.narrate import describe

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_narration.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_narration", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def region(box, caption):
    return SimpleNamespace(box=box, caption=caption)


def test_position_agreement_counts_matched_regions_in_their_boxs_grid_cell():
    bench = load()
    # a 300 x 300 picture: grid cells are 100 px wide
    regions = [region([10, 10, 90, 90], "a red circle"),  # top left, its ground truth too
               region([70, 10, 150, 90], "a blue square"),  # centre x 110: top; its ground truth's x 90: top left
               region([200, 200, 290, 290], "a green star")]  # no ground truth near it
    truth = [[12, 10, 92, 92], [50, 10, 130, 90], [0, 150, 40, 190]]  # IoU 0.91, 0.6, 0
    assert bench.iou(regions[1].box, truth[1]) >= 0.5
    counts = bench.score(regions, truth, describe(regions, 300, 300), 300, 300)
    offsets = counts.pop("misplaced_offsets")
    assert counts == {"matched": 2, "agree": 1, "regions": 3, "mentioned": 3}
    assert offsets == [100 * (1 / 3 - 90 / 300)]  # the square's true centre, 10 px left of the first line


def test_every_region_mentioned_alone_word_for_word_or_once_with_its_count():
    bench = load()
    circles = [region([10, 10, 40, 40], "a red circle"), region([200, 10, 240, 40], "a red circle")]
    star = region([100, 200, 140, 240], "a green star")
    regions = [*circles, star]
    good = describe(regions, 300, 300)
    assert "two red circles" in good
    assert bench.score(regions, [], good, 300, 300)["mentioned"] == 3
    one_by_one = "A red circle at the top left. A red circle at the top right. A green star at the bottom."
    assert bench.score(regions, [], one_by_one, 300, 300)["mentioned"] == 1  # the pair not counted
    twice = "Two red circles and a green star. A red circle at the top left. A green star at the bottom."
    assert bench.score(regions, [], twice, 300, 300)["mentioned"] == 1  # the pair also said one by one
    missing = "Two red circles, at the top left and at the top right."
    assert bench.score(regions, [], missing, 300, 300)["mentioned"] == 2
