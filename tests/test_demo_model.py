"""The bundled demo model measurably works: metrics on a held-out synthetic set (a seed never trained on).

The full measurement (600 images, seed 2) is in assets/demo-model/README.md; this test repeats it on
100 images of another unseen seed so that a regression in any stage (detector, alignment, captioner,
evaluation) fails the suite.
"""

import json
from pathlib import Path

import pytest

from regioncap.data.synthetic import generate
from train.evaluate import get_args_parser, main

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-model"
# The targets for the demo model.
TARGETS = {"det_ap50": 0.90, "grounding_acc": 0.85, "bleu1": 0.80, "bleu4": 0.50, "i2t_r1": 0.60, "t2i_r1": 0.50}
# How often captions name what the chain's phrases name (train.evaluate's attr_*). Issue 14's targets on the
# 600 held-out scenes (README) were pattern >= 0.80, colour >= 0.97, shape >= 0.99; measured there: pattern
# 0.878, colour 0.980, shape 0.992 (the 60 chains of two objects 0.900, captioned with the help of the
# objects detected inside their box). On this smaller set (seed 7777, 100 images): pattern 0.827, colour
# 0.993, shape 0.987 (4 misses in 313: the 11 chains of two objects 0.818), size 0.893. Pattern and colour
# keep the targets; shape, size and the two-object chains are regression floors a few points under
# the measurement.
ATTRIBUTE_FLOORS = {"attr_pattern": 0.80, "attr_colour": 0.97, "attr_shape": 0.97, "attr_size": 0.85}
GROUP_FLOORS = {"group_attr_shape": 0.70}


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    root = tmp_path_factory.mktemp("held-out")
    generate(root, images=100, seed=7777, splits=(0.0, 0.0, 1.0))
    out = root / "eval.json"
    main(get_args_parser().parse_args(["--model", str(DEMO), "--data", str(root), "--split", "test",
                                       "--json", str(out), "--no-progress"]))
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_demo_model_meets_its_targets_on_unseen_scenes(metrics, name):
    assert metrics["num_images"] == 100
    assert metrics[name] >= TARGETS[name], f"{name} = {metrics[name]:.3f} < {TARGETS[name]}"


def test_demo_model_card_reports_the_measured_metrics():
    card = (DEMO / "README.md").read_text()
    measured = json.loads((DEMO / "eval.json").read_text())
    for name in TARGETS:
        assert f"| {name} | {measured[name]:.4f} |" in card


@pytest.mark.parametrize("name", sorted(ATTRIBUTE_FLOORS))
def test_demo_captions_name_the_attributes_the_phrases_name(metrics, name):
    assert metrics[f"num_{name}"] >= 100  # enough regions for the rate to mean something
    assert metrics[name] >= ATTRIBUTE_FLOORS[name], f"{name} = {metrics[name]:.3f} < {ATTRIBUTE_FLOORS[name]}"


@pytest.mark.parametrize("name", sorted(GROUP_FLOORS))
def test_demo_captions_of_two_objects_name_their_shape(metrics, name):
    assert metrics[f"group_num_{name[6:]}"] >= 10  # chains of two objects ("two stars") in the set
    assert metrics[name] >= GROUP_FLOORS[name], f"{name} = {metrics[name]:.3f} < {GROUP_FLOORS[name]}"
