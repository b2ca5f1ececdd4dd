"""Model files: save/load round trip, strict loading, pickle refusal, forged files, Hub resolution."""

import copy
import json
import pickle
import shutil
import struct

import pytest
import torch
from safetensors.torch import save_file

from regioncap import hub
from regioncap.errors import ModelFileError
from regioncap.models.model import RegionCaptioner


def test_save_load_gives_identical_outputs(saved_model, image_file):
    model, folder = saved_model
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.json"]
    loaded = RegionCaptioner.from_pretrained(folder)
    assert not loaded.training and loaded.name_or_path == str(folder)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    a = model.analyze(image_file, max_regions=5, score_threshold=0.0)
    b = loaded.analyze(image_file, max_regions=5, score_threshold=0.0)
    assert [r.to_dict() for r in a.regions] == [r.to_dict() for r in b.regions]
    assert torch.equal(a.vectors, b.vectors) and torch.equal(a.image_vector, b.image_vector)
    assert torch.equal(model.encode_text(["a red circle"]), loaded.encode_text(["a red circle"]))


def test_model_card(saved_model, tmp_path):
    model, folder = saved_model
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: regioncap\n") and "Not measured." in card
    hub.write_model_card(tmp_path, model.config, metrics={"bleu4": 0.12345, "images": 10},
                         training={"data": "synthetic scenes, seed 0"})
    card = (tmp_path / "README.md").read_text()
    assert "| bleu4 | 0.1235 |" in card and "| images | 10 |" in card and "synthetic scenes, seed 0" in card
    assert "reranked" not in card  # plain beam search
    config = copy.deepcopy(model.config)
    config.captioner.rerank_weight, config.captioner.rerank_length_alpha = 2.5, 1.0
    card = hub.write_model_card(tmp_path, config).read_text()
    assert "reranked: log-prob / (words + 1)^1 + 2.5 x region-phrase similarity" in card


def test_pickle_payload_is_refused_without_unpickling(saved_model, monkeypatch):
    model, folder = saved_model
    torch.save(model.state_dict(), folder / "model.safetensors")  # a zip+pickle payload under the right name

    def no_unpickling(*a, **k):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ModelFileError, match="model.safetensors: is a pickle/zip payload"):
        RegionCaptioner.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(ModelFileError, match="pickle"):
        RegionCaptioner.from_pretrained(folder)


def test_pickle_weight_files_are_refused(saved_model, tmp_path):
    model, folder = saved_model
    bin_only = tmp_path / "bin-only"
    shutil.copytree(folder, bin_only)
    (bin_only / "model.safetensors").rename(bin_only / "pytorch_model.bin")
    with pytest.raises(ModelFileError, match=r"pickle-format weights \(pytorch_model.bin\)"):
        RegionCaptioner.from_pretrained(bin_only)
    with pytest.raises(ModelFileError, match="pickle-format weights are refused"):
        RegionCaptioner.from_pretrained(bin_only / "pytorch_model.bin")


def test_truncated_and_forged_safetensors(saved_model):
    _, folder = saved_model
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated, corrupt or forged: .*not fully covered"):
        RegionCaptioner.from_pretrained(folder)
    path.write_bytes(struct.pack("<Q", 10**12) + data[8:])  # header length beyond the file
    with pytest.raises(ModelFileError, match="does not fit"):
        RegionCaptioner.from_pretrained(folder)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)  # offsets past the data
    with pytest.raises(ModelFileError, match="forged: .*not fully covered"):
        RegionCaptioner.from_pretrained(folder)
    path.write_bytes(data + b"\0" * 8)  # trailing bytes after the last tensor
    with pytest.raises(ModelFileError, match="forged: .*not fully covered"):
        RegionCaptioner.from_pretrained(folder)
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(ModelFileError, match="forged: invalid JSON in header"):
        RegionCaptioner.from_pretrained(folder)
    path.write_bytes(b"abc")
    with pytest.raises(ModelFileError, match="truncated"):
        RegionCaptioner.from_pretrained(folder)


def _rewrite(folder, edit):
    path = folder / "model.safetensors"
    state = hub.load_weights(path)
    edit(state)
    save_file(state, str(path))


def test_missing_unexpected_and_misshapen_weights(saved_model):
    _, folder = saved_model
    name = "captioner.out.weight"
    _rewrite(folder, lambda s: s.pop(name))
    with pytest.raises(ModelFileError, match=f"model.safetensors: missing 1 weight\\(s\\): {name}"):
        RegionCaptioner.from_pretrained(folder)
    _rewrite(folder, lambda s: s.update({name: torch.zeros(3, 3), "extra.weight": torch.zeros(1)}))
    with pytest.raises(ModelFileError, match="1 unexpected weight\\(s\\): extra.weight"):
        RegionCaptioner.from_pretrained(folder)
    _rewrite(folder, lambda s: s.pop("extra.weight"))
    with pytest.raises(ModelFileError, match=f"weight {name} has shape \\[3, 3\\]"):
        RegionCaptioner.from_pretrained(folder)


def test_bad_config_and_vocab(saved_model):
    _, folder = saved_model
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "joint_dim": "16"}))
    with pytest.raises(ModelFileError, match="config.json: joint_dim must be an integer"):
        RegionCaptioner.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="config.json: not a readable JSON config"):
        RegionCaptioner.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 1}))
    with pytest.raises(ModelFileError, match="vocab.json: has .* tokens but config.json says vocab_size"):
        RegionCaptioner.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.json").unlink()
    with pytest.raises(ModelFileError, match="vocab.json: missing"):
        RegionCaptioner.from_pretrained(folder)


def test_missing_folder_and_file_given(tmp_path, saved_model):
    with pytest.raises(ModelFileError, match="no such model folder"):
        RegionCaptioner.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelFileError, match="is a file"):
        RegionCaptioner.from_pretrained(saved_model[1] / "config.json")


def test_hub_repo_download_pins_revision(saved_model, monkeypatch):
    import huggingface_hub

    _, folder = saved_model
    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = RegionCaptioner.from_pretrained("someone/regioncap-tiny", revision="abc123")
    assert model.name_or_path == "someone/regioncap-tiny"
    assert seen["repo_id"] == "someone/regioncap-tiny" and seen["revision"] == "abc123"
    assert set(seen["allow_patterns"]) == set(hub.MODEL_FILES) and seen["local_files_only"] is False


def test_hub_offline_cache_miss_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelFileError, match="offline .* not in the cache"):
        RegionCaptioner.from_pretrained("nobody/no-such-regioncap-model")


def test_default_model_path(monkeypatch, tmp_path):
    monkeypatch.setenv(hub.MODEL_ENV, "user/model")
    assert hub.default_model_path() == "user/model"
    monkeypatch.delenv(hub.MODEL_ENV)
    monkeypatch.chdir(tmp_path)
    (tmp_path / hub.DEFAULT_MODEL).mkdir(parents=True)
    assert hub.default_model_path() == hub.DEFAULT_MODEL


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    state = {"a": base, "b": base, "c": base.T, "d": base[1:]}  # shared storage, a transposed view
    hub.save_weights(state, tmp_path / "w.safetensors")
    loaded = hub.load_weights(tmp_path / "w.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize("damage", ["vocab size", "pickle only", "config"])
def test_both_model_classes_read_a_folder_through_the_one_reader(saved_model, damage, monkeypatch):
    from regioncap.models.text_model import TextModel

    _, folder = saved_model
    if damage == "vocab size":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 1}))
    elif damage == "pickle only":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    else:
        (folder / "config.json").write_text("{not json")
    messages = []
    for cls in (RegionCaptioner, TextModel):
        with pytest.raises(ModelFileError) as exc:
            cls.from_pretrained(folder)
        messages.append(str(exc.value))
    assert messages[0] == messages[1]  # the same check, the same words
    calls = []
    real = hub.read_model_folder
    monkeypatch.setattr(hub, "read_model_folder", lambda *a, **k: calls.append(a) or real(*a, **k))
    for cls in (RegionCaptioner, TextModel):
        with pytest.raises(ModelFileError):
            cls.from_pretrained(folder)
    assert len(calls) == 2


def test_the_threshold_travels_with_the_folder(saved_model):
    from regioncap.models.text_model import TextModel

    _, folder = saved_model
    assert RegionCaptioner.from_pretrained(folder).match_threshold is None
    (folder / hub.CALIBRATION_FILE).write_text(json.dumps({"match_threshold": 0.375}))
    model = RegionCaptioner.from_pretrained(folder)
    assert model.match_threshold == 0.375 == TextModel.from_pretrained(folder).match_threshold
    assert model.directory == folder
    for bad in ('{"match_threshold": true}', '{"match_threshold": "0.3"}', "[]", "{not json"):
        (folder / hub.CALIBRATION_FILE).write_text(bad)
        assert hub.read_threshold(folder) is None
    assert hub.model_files(folder) == ["config.json", "model.safetensors", "vocab.json", "README.md",
                                       "calibration.json"]
