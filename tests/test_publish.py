"""train.publish: the model card, the model folder's files uploaded in one commit, the Space deployment, and
the round trip publish -> download by repo id, all against a recorder standing in for HfApi (no network)."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from regioncap import hub
from regioncap.calibrate import RULE, write_calibration
from train import publish

REQUIRED_AND_CARD = ["config.json", "model.safetensors", "vocab.json", "README.md", "calibration.json"]
CALIBRATION = {"match_threshold": 0.3125, "tpr": 0.9, "fpr": 0.1, "positives": 10, "negatives": 20}


class Recorder:
    """Stands in for ``huggingface_hub.HfApi``: records every call; ``variables`` are the Space's."""

    def __init__(self, fail=None, variables=None):
        self.calls, self.fail, self.variables = [], fail, dict(variables or {})

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        if self.fail:
            raise self.fail
        prefix = "spaces/" if kwargs.get("repo_type") == "space" else ""
        return f"https://huggingface.co/{prefix}{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, list(operations), kwargs))

    def add_space_variable(self, repo_id, key, value, **kwargs):
        self.calls.append(("add_space_variable", repo_id, key, value))
        self.variables[key] = value
        return dict(self.variables)

    def get_space_variables(self, repo_id, **kwargs):
        self.calls.append(("get_space_variables", repo_id))
        return dict(self.variables)

    def delete_space_variable(self, repo_id, key, **kwargs):
        self.calls.append(("delete_space_variable", repo_id, key))
        del self.variables[key]
        return dict(self.variables)

    def commits(self):
        return [c for c in self.calls if c[0] == "create_commit"]

    def uploaded(self) -> dict:
        """{path in the repo: local file} of the one commit."""
        (commit,) = self.commits()
        return {op.path_in_repo: op.path_or_fileobj for op in commit[2]}


FakeApi = Recorder


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
    write_calibration(out, CALIBRATION)
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


def space(*argv, api=None):
    return publish.main(publish.get_args_parser().parse_args(["--space", "someone/regioncap-space", *argv]), api=api)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return ModelCard(card).data.to_dict()


def test_uploads_the_model_folders_files_in_one_commit_with_a_card_from_eval_json(model_dir):
    (model_dir / "eval.json").write_text(json.dumps(EVAL))
    (model_dir / "history.json").write_text("{}")  # the Model tab's curves travel with the model
    (model_dir / "checkpoint.safetensors").write_bytes(b"x")  # training state beside the model: never uploaded
    (model_dir / "notes.txt").write_text("mine")
    api = FakeApi()
    assert run(model_dir, "--private", api=api) == 0
    (name, repo, kwargs), commit = api.calls[0], api.calls[1]
    assert (name, repo) == ("create_repo", "someone/regioncap-test")
    assert kwargs["exist_ok"] is True and kwargs["private"] is True
    assert commit[0] == "create_commit" and commit[1] == "someone/regioncap-test" and len(api.calls) == 2
    assert kwargs["repo_type"] == commit[3]["repo_type"] == "model"
    ops = commit[2]
    assert sorted(op.path_in_repo for op in ops) == sorted(REQUIRED_AND_CARD + ["eval.json", "history.json"])
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
    assert "similarity reaches **0.3125** (`calibration.json`" in card  # the threshold that travels with it


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
    out, err = capsys.readouterr()
    assert "would upload" in err and out.splitlines()[0].startswith("wrote ")
    assert out.splitlines()[1:] == REQUIRED_AND_CARD  # one path a line


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


def test_refuses_a_model_without_calibration_and_says_how_to_calibrate(model_dir, capsys):
    (model_dir / "calibration.json").unlink()
    before = (model_dir / "README.md").read_text()
    api = Recorder()
    with pytest.raises(SystemExit) as exc:
        run(model_dir, "--dry-run", api=api)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and api.calls == [] and "\n" not in err
    assert f"python -m regioncap.calibrate --model {model_dir} --data DATA --split val --write" in err
    assert (model_dir / "README.md").read_text() == before  # nothing written either


def test_repo_id_needs_a_model_and_targets_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        publish.main(publish.get_args_parser().parse_args(["--repo-id", "someone/x"]), api=Recorder())
    assert exc.value.code == 2 and "--model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        publish.get_args_parser().parse_args(["--repo-id", "someone/x", "--space", "someone/y"])


# -- the Space ------------------------------------------------------------------------------------------
APP_FILES = {"app.py", "requirements.txt", "packages.txt", "README.md", "LICENSE", "appui/handlers.py",
             "appui/live.py", "regioncap/hub.py", "regioncap/models/model.py", "regioncap/index/edge.py"}


def test_space_dry_run_lists_the_app_and_the_demo_model_and_touches_nothing(capsys, monkeypatch):
    import huggingface_hub
    from app import example_images
    from appui.settings import EXAMPLES_DIR

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: pytest.fail("dry run made a Hub client"))
    api = Recorder()
    assert space("--dry-run", api=api) == 0
    out, err = capsys.readouterr()
    assert api.calls == [] and "someone/regioncap-space" in err
    lines = out.splitlines()
    assert APP_FILES <= set(lines) and len(lines) == len(set(lines))
    assert {f"assets/demo-model/{name}" for name in hub.MODEL_FILES} <= set(lines)  # the demo has every file
    examples = {str(p.relative_to(publish.ROOT)) for p in map(Path, example_images())}
    assert examples and examples <= set(lines) and EXAMPLES_DIR == publish.ROOT / publish.EXAMPLES_DIR
    assert not any("__pycache__" in line or line.endswith(".pyc") or line.startswith(("tests/", "train/"))
                   for line in lines)
    # The README is the Space's page: every picture it shows goes up with it, and nothing else of docs/.
    shown = set(re.findall(r"\]\((docs/images/[^)]+)\)", (publish.ROOT / "README.md").read_text()))
    assert shown and {line for line in lines if line.startswith("docs/")} == shown
    assert not any("=" in line for line in lines)  # no variable without --model


def test_space_dry_run_with_a_model_repo_sets_the_variable_and_leaves_the_demo_out(capsys):
    assert space("--model", "someone/regioncap-f30k", "--dry-run", api=Recorder()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "REGIONCAP_MODEL=someone/regioncap-f30k"
    assert APP_FILES <= set(lines) and not any(line.startswith("assets/demo-model/") for line in lines)


def test_space_deploys_in_one_commit_with_the_variable(capsys):
    api = Recorder()
    assert space("--model", "someone/regioncap-f30k", api=api) == 0
    (name, repo, kwargs) = api.calls[0]
    assert (name, repo) == ("create_repo", "someone/regioncap-space")
    assert kwargs["repo_type"] == "space" and kwargs["space_sdk"] == "gradio" and kwargs["exist_ok"] is True
    assert ("add_space_variable", "someone/regioncap-space", "REGIONCAP_MODEL", "someone/regioncap-f30k") in api.calls
    (commit,) = api.commits()
    assert commit[1] == "someone/regioncap-space" and commit[3]["repo_type"] == "space"
    uploaded = api.uploaded()
    assert all(publish.ROOT / path == Path(local) for path, local in uploaded.items())
    capsys.readouterr()
    space("--model", "someone/regioncap-f30k", "--dry-run", api=Recorder())
    assert list(uploaded) + ["REGIONCAP_MODEL=someone/regioncap-f30k"] == capsys.readouterr().out.splitlines()


def test_space_without_a_model_clears_an_earlier_deployments_variable():
    api = Recorder(variables={"REGIONCAP_MODEL": "someone/old", "OTHER": "kept"})
    space(api=api)
    assert api.variables == {"OTHER": "kept"} and len(api.commits()) == 1
    assert "assets/demo-model/model.safetensors" in api.uploaded()
    api = Recorder()
    space(api=api)
    assert not any(c[0] == "delete_space_variable" for c in api.calls)


def test_space_with_a_local_model_folder_uploads_it_beside_the_app(model_dir, capsys):
    api = Recorder()
    space("--model", str(model_dir), api=api)
    uploaded = api.uploaded()
    assert {f"model/{name}" for name in REQUIRED_AND_CARD} <= set(uploaded)
    assert uploaded["model/model.safetensors"] == str(model_dir / "model.safetensors")
    assert api.variables == {"REGIONCAP_MODEL": "model"}
    assert not any(path.startswith("assets/demo-model/") for path in uploaded)
    (model_dir / "calibration.json").unlink()  # a folder is checked as for publishing
    api = Recorder()
    with pytest.raises(SystemExit):
        space("--model", str(model_dir), api=api)
    assert api.calls == [] and "regioncap.calibrate" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "no such thing/at all"], "not a Hub repo id"),
    (["--space", "not a repo"], "--space"),
])
def test_space_refusals_are_one_line_and_touch_nothing(capsys, argv, message):
    api = Recorder()
    with pytest.raises(SystemExit) as exc:
        publish.main(publish.get_args_parser().parse_args(["--space", "someone/s", *argv]), api=api)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and api.calls == [] and message in err and "\n" not in err


def test_space_upload_failure_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        space(api=Recorder(fail=OSError("network is unreachable\nmore")))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "network is unreachable" in err and "\n" not in err


# -- the round trip: train, publish, download by repo id ------------------------------------------------
TINY_TRAINING = ["--min-size", "96", "--max-size", "128", "--batch-size", "4", "--detector-batch-size", "2",
                 "--workers", "0", "--no-augment", "--vocab-min-count", "1", "--epochs", "1", "--max-steps", "2",
                 "--log-every", "100"]


def lay_out_hub_cache(cache: Path, repo_id: str, files: dict, revision: str = "main") -> Path:
    """Put ``files`` ({path in the repo: local file}) into ``cache`` as ``snapshot_download`` leaves a model
    repo there: ``models--USER--NAME/blobs/<sha256>`` (the contents), ``snapshots/<commit>/<path>`` (relative
    symlinks to the blobs) and ``refs/<revision>`` (the commit). Returns the snapshot folder."""
    import hashlib
    import os

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    for path_in_repo, local in files.items():
        data = Path(local).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / path_in_repo
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return repo / "snapshots" / commit


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty huggingface_hub cache, offline: HF_HUB_CACHE (read at import, so also patched) and HF_HUB_OFFLINE."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data root, model folder) of a tiny run of train.train, evaluated with train.evaluate --json."""
    from regioncap.data.synthetic import generate
    from train import evaluate, train

    root = tmp_path_factory.mktemp("roundtrip")
    generate(root / "data", images=10, seed=11)  # 8 train, 1 val, 1 test
    out = root / "model"
    train.main(train.get_args_parser().parse_args(["--data", str(root / "data"), "--out", str(out), *TINY_TRAINING]))
    evaluate.main(evaluate.get_args_parser().parse_args(["--model", str(out), "--data", str(root / "data"),
                                                         "--json", str(out / "eval.json"), "--no-progress"]))
    return root / "data", out


def test_training_ends_with_the_threshold_calibrated_on_val(trained):
    from regioncap.calibrate import calibrate
    from regioncap.models.model import RegionCaptioner

    data, out = trained
    recorded = json.loads((out / "calibration.json").read_text())
    assert recorded["split"] == "val" and recorded["positives"] > 0 and recorded["negatives"] > 0
    model = RegionCaptioner.from_pretrained(out)
    assert model.match_threshold == recorded["match_threshold"] == calibrate(model, data, "val")["match_threshold"]


def test_training_without_val_phrases_says_how_to_calibrate_and_drops_a_stale_threshold(tmp_path, capsys):
    from regioncap.data.synthetic import generate
    from train import train

    generate(tmp_path / "data", images=4, seed=5, splits=(1.0, 0.0, 0.0))
    out = tmp_path / "model"
    out.mkdir()
    write_calibration(out, {**CALIBRATION, "rule": RULE})  # an earlier run's, for other weights
    train.main(train.get_args_parser().parse_args(["--data", str(tmp_path / "data"), "--out", str(out),
                                                   *TINY_TRAINING, "--stages", "alignment"]))
    err = capsys.readouterr().err
    assert "not calibrated" in err and f"python -m regioncap.calibrate --model {out}" in err
    assert not (out / "calibration.json").exists() and (out / "model.safetensors").is_file()


def test_round_trip_publish_then_load_by_repo_id_gives_the_same_threshold_results_and_model_tab(
        trained, offline_cache, tmp_path, image_file):
    from regioncap.models.model import RegionCaptioner
    from regioncap.models.text_model import TextModel

    _, folder = trained
    model_dir = tmp_path / "published"
    shutil.copytree(folder, model_dir)
    api = Recorder()
    assert run(model_dir, api=api) == 0
    uploaded = api.uploaded()
    assert set(uploaded) == set(hub.MODEL_FILES)  # a trained, evaluated folder has every file; one commit
    snapshot = lay_out_hub_cache(offline_cache, "someone/regioncap-test", uploaded)

    local = RegionCaptioner.from_pretrained(model_dir)
    remote = RegionCaptioner.from_pretrained("someone/regioncap-test")
    assert remote.directory == snapshot and remote.name_or_path == "someone/regioncap-test"
    assert local.match_threshold is not None and remote.match_threshold == local.match_threshold
    a = local.analyze(image_file, max_regions=5, score_threshold=0.0)
    b = remote.analyze(image_file, max_regions=5, score_threshold=0.0)
    assert [r.to_dict() for r in a.regions] == [r.to_dict() for r in b.regions] and torch.equal(a.vectors, b.vectors)
    phrase = local.vocab.id_to_token[-1]
    assert [s for _, s in a.query(phrase, top_k=3)] == [s for _, s in b.query(phrase, top_k=3)]
    text_local, text_remote = TextModel.from_pretrained(model_dir), TextModel.from_pretrained("someone/regioncap-test")
    assert text_remote.identity == text_local.identity and text_remote.match_threshold == local.match_threshold

    # The app, given the repo id as REGIONCAP_MODEL would give it: the same threshold and Model tab.
    from appui.model import ModelHolder, describe_model
    from appui.handlers import RegionApp

    tabs = []
    for name in (str(model_dir), "someone/regioncap-test"):
        holder = ModelHolder(name)
        holder.load()
        assert holder.error is None, holder.error
        assert RegionApp(holder).match_threshold() == local.match_threshold
        assert (holder.directory / hub.PLOT_FILE).is_file() and (holder.directory / hub.HISTORY_FILE).is_file()
        tabs.append(describe_model(holder)[0].replace(name, "NAME"))
    assert tabs[0] == tabs[1] and "| bleu4 |" in tabs[1]  # the metrics of eval.json, via the card


def test_a_repo_with_only_the_required_files_loads_without_a_threshold(saved_model, offline_cache):
    from regioncap.models.model import RegionCaptioner

    files = {name: saved_model / name for name in hub.REQUIRED_FILES}
    lay_out_hub_cache(offline_cache, "someone/older-model", files)
    model = RegionCaptioner.from_pretrained("someone/older-model")
    assert model.match_threshold is None and not (model.directory / hub.CARD_FILE).exists()
