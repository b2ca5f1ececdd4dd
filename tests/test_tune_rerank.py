"""train.tune_rerank: the grid over candidate reranking settings and writing the choice into config.json."""

import json

import pytest

from regioncap import hub
from train import tune_rerank


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from regioncap.data.dataset import Flickr30kEntities
    from regioncap.data.synthetic import generate
    from regioncap.data.vocab import Vocabulary
    from regioncap.testing import tiny_model

    root = tmp_path_factory.mktemp("synth")
    generate(root, images=4, seed=11, splits=(0.5, 0.5, 0.0))
    vocab = Vocabulary.build(Flickr30kEntities(root, "train").phrase_texts())
    model = tmp_path_factory.mktemp("model")
    tiny_model(vocab).save_pretrained(model)
    return root, model


def test_grid_baseline_choice_and_write(setup, tmp_path, capsys):
    root, model = setup
    out = tmp_path / "grid.json"
    args = tune_rerank.get_args_parser().parse_args(
        ["--model", str(model), "--data", str(root), "--split", "val", "--beam-sizes", "1,3", "--weights", "0,2",
         "--alphas", "0,1", "--json", str(out), "--write", "--no-progress"])
    result = tune_rerank.main(args)
    assert len(result["grid"]) == 2 * 2 * 2 and result["regions"] > 0
    # the baseline is the first row: width 1, no reranking = greedy decoding's captions
    first = result["grid"][0]
    assert (first["beam_size"], first["weight"], first["length_alpha"]) == (1, 0.0, 0.0)
    assert {k: first[k] for k in result["baseline"]} == result["baseline"]
    chosen = result["chosen"]
    assert chosen in result["grid"] and chosen["bleu4"] >= result["baseline"]["bleu4"] - 0.03
    assert json.loads(out.read_text())["chosen"] == chosen
    config = hub.load_config(model / "config.json")
    assert (config.captioner.beam_size, config.captioner.rerank_weight, config.captioner.rerank_length_alpha) == (
        chosen["beam_size"], chosen["weight"], chosen["length_alpha"])
    printed = capsys.readouterr().out
    assert "pattern" in printed and "chosen:" in printed


def test_missing_data_is_a_clean_error(setup, tmp_path, capsys):
    _, model = setup
    with pytest.raises(SystemExit) as exc:
        tune_rerank.main(tune_rerank.get_args_parser().parse_args(["--model", str(model), "--data", str(tmp_path)]))
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("error: ")


def test_group_weight_grid_on_regions_made_up_of_objects(setup, tmp_path, monkeypatch, capsys):
    import torch

    root, model = setup
    # the random model's detections mean nothing: let the first two make up each box
    def first_two(boxes, det_boxes, det_scores):
        member = torch.zeros(len(boxes), len(det_boxes), dtype=torch.bool)
        member[:, :2] = len(det_boxes) >= 2
        return member

    from regioncap.models import rerank

    monkeypatch.setattr(rerank, "find_groups", first_two)
    args = tune_rerank.get_args_parser().parse_args(
        ["--model", str(model), "--data", str(root), "--split", "val", "--beam-sizes", "2", "--weights", "0",
         "--alphas", "0", "--group-weights", "0,5", "--group-beam-size", "3", "--write", "--no-progress"])
    result = tune_rerank.main(args)
    groups = result["groups"]
    assert groups["regions"] == result["regions"] and groups["group_beam_size"] == 3
    assert [g["group_weight"] for g in groups["grid"]] == [0.0, 5.0] and groups["chosen"] in groups["grid"]
    config = hub.load_config(model / "config.json")
    assert (config.captioner.group_weight, config.captioner.group_beam_size) == (groups["chosen"]["group_weight"], 3)
    assert "made up of several objects" in capsys.readouterr().out


def test_no_group_weights_skips_the_group_grid(setup, capsys):
    root, model = setup
    result = tune_rerank.main(tune_rerank.get_args_parser().parse_args(
        ["--model", str(model), "--data", str(root), "--split", "val", "--beam-sizes", "1", "--weights", "0",
         "--alphas", "0", "--group-weights", "", "--no-progress"]))
    assert "groups" not in result and "several objects" not in capsys.readouterr().out
