"""train.publish: the model card it writes, exactly four files uploaded, refusals (with a fake Hub client)."""

import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard

from train import publish

FOUR = ["config.json", "model.safetensors", "vocab.json", "README.md"]


class FakeApi:
    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        if self.fail:
            raise self.fail
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        operations = list(operations)
        self.calls.append(("create_commit", repo_id, operations, kwargs))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from regioncap.data.flickr30k import ENTITY_TYPES
    from regioncap.data.vocab import Vocabulary
    from regioncap.models.config import (CaptionerConfig, DetectorConfig, RegionCaptionerConfig,
                                         RegionEncoderConfig, TextEncoderConfig)
    from regioncap.models.model import RegionCaptioner

    torch.manual_seed(0)
    vocab = Vocabulary.build(["a red circle", "a blue square"])
    cfg = RegionCaptionerConfig(
        vocab_size=len(vocab), entity_types=list(ENTITY_TYPES), joint_dim=16,
        detector=DetectorConfig(min_size=64, max_size=64, backbone_channels=[8, 8, 8, 8], fpn_channels=8),
        region_encoder=RegionEncoderConfig(hidden_dim=8, geometry_dim=8),
        text_encoder=TextEncoderConfig(embed_dim=8, hidden_dim=8), captioner=CaptionerConfig(embed_dim=8, hidden_dim=8))
    out = tmp_path_factory.mktemp("saved")
    RegionCaptioner(cfg, vocab).save_pretrained(out, training={"data": "synthetic scenes, seed 3", "epochs": "2"})
    return out


@pytest.fixture
def model_dir(saved_model, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(saved_model, d)
    return d


EVAL = {"model": "m", "data": "data/synth", "split": "test", "det_ap50": 0.5, "grounding_acc": 0.25,
        "grounding_acc_any": 0.375, "bleu1": 0.6, "bleu2": 0.4, "bleu3": 0.3, "bleu4": 0.2, "i2t_r1": 0.1,
        "i2t_r5": 0.5, "i2t_r10": 0.9, "t2i_r1": 0.125, "t2i_r5": 0.5, "t2i_r10": 0.875, "num_images": 8,
        "num_sentences": 40, "num_phrases": 70, "num_regions_captioned": 20, "seconds": 3.5}


def run(model_dir, *extra, api=None):
    args = publish.get_args_parser().parse_args(["--model", str(model_dir), "--repo-id", "someone/regioncap-test",
                                                 *extra])
    return publish.main(args, api=api)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return ModelCard(card).data.to_dict()


def test_uploads_exactly_the_four_files_with_a_card_from_eval_json(model_dir):
    (model_dir / "eval.json").write_text(json.dumps(EVAL))
    (model_dir / "history.json").write_text("{}")  # beside the model, never uploaded
    api = FakeApi()
    assert run(model_dir, "--private", api=api) == 0
    (name, repo, kwargs), commit = api.calls[0], api.calls[1]
    assert (name, repo) == ("create_repo", "someone/regioncap-test")
    assert kwargs["exist_ok"] is True and kwargs["private"] is True
    assert commit[0] == "create_commit" and commit[1] == "someone/regioncap-test"
    ops = commit[2]
    assert sorted(op.path_in_repo for op in ops) == sorted(FOUR)
    assert all(op.path_or_fileobj == str(model_dir / op.path_in_repo) for op in ops)

    card = (model_dir / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "regioncap" and "region-captioning" in meta["tags"]
    assert meta["datasets"] == ["synthetic-scenes"]  # the recorded training data says synthetic
    assert set(meta["metrics"]) >= {"bleu", "recall"}
    assert "| bleu4 | 0.2000 |" in card and "| grounding_acc_any | 0.3750 |" in card and "| num_images | 8 |" in card
    assert "data/synth, split test" in card
    assert "**data**: synthetic scenes, seed 3" in card  # training facts of the previous card survive
    assert "## Intended use" in card and "## Limitations" in card
    assert "seconds" not in card


def test_metrics_option_dataset_option_and_rewrite_is_stable(model_dir, tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({**EVAL, "bleu4": 0.0123}))
    run(model_dir, "--metrics", str(metrics), "--dataset", "nlphuji/flickr30k", api=FakeApi())
    first = (model_dir / "README.md").read_text()
    assert "| bleu4 | 0.0123 |" in first and front_matter(first)["datasets"] == ["nlphuji/flickr30k"]
    run(model_dir, "--metrics", str(metrics), "--dataset", "nlphuji/flickr30k", api=FakeApi())
    assert (model_dir / "README.md").read_text() == first  # no section added twice, training kept


def test_without_metrics_the_card_says_not_measured(model_dir, capsys):
    api = FakeApi()
    run(model_dir, "--dry-run", api=api)
    assert api.calls == []
    card = (model_dir / "README.md").read_text()
    assert "Not measured." in card and "metrics" not in front_matter(card)
    assert "would upload" in capsys.readouterr().out


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "vocab.json"])
def test_refuses_a_missing_file(model_dir, capsys, missing):
    (model_dir / missing).unlink()
    api = FakeApi()
    with pytest.raises(SystemExit) as exc:
        run(model_dir, api=api)
    assert exc.value.code == 2 and api.calls == []
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and missing in err and "\n" not in err


@pytest.mark.parametrize("pickled", ["pytorch_model.bin", "old/checkpoint.pt"])
def test_refuses_a_folder_with_pickle_files(model_dir, capsys, pickled):
    path = model_dir / pickled
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1)
    before = (model_dir / "README.md").read_text()
    api = FakeApi()
    with pytest.raises(SystemExit) as exc:
        run(model_dir, api=api)
    assert exc.value.code == 2 and api.calls == []
    assert "pickle" in capsys.readouterr().err and (model_dir / "README.md").read_text() == before


def test_refuses_pickled_weights_renamed_to_safetensors(model_dir, capsys):
    (model_dir / "model.safetensors").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(SystemExit) as exc:
        run(model_dir, api=FakeApi())
    assert exc.value.code == 2 and "pickle" in capsys.readouterr().err


def test_bad_metrics_bad_repo_id_and_upload_failure_exit_2(model_dir, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    for extra, api in ((["--metrics", str(tmp_path / "bad.json")], FakeApi()),
                       (["--metrics", str(tmp_path / "none.json")], FakeApi()),
                       ([], FakeApi(fail=OSError("network is unreachable\nmore")))):
        with pytest.raises(SystemExit) as exc:
            run(model_dir, *extra, api=api)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
    with pytest.raises(SystemExit):
        publish.main(publish.get_args_parser().parse_args(["--model", str(model_dir), "--repo-id", "no slash"]),
                     api=FakeApi())
