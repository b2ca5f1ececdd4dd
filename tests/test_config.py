"""Config dataclasses: JSON round trip and strict validation of config.json contents."""

import json

import pytest

from regioncap.errors import ModelFileError
from regioncap.models.config import CaptionerConfig, DetectorConfig, RegionCaptionerConfig


def config():
    return RegionCaptionerConfig(vocab_size=50, entity_types=["people", "animals"],
                                 detector=DetectorConfig(min_size=96), captioner=CaptionerConfig(rnn="lstm"))


def test_round_trip_through_json():
    c = config()
    again = RegionCaptionerConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c


@pytest.mark.parametrize("kind", ["roi", "vgg19", "vgg19-crops"])
def test_every_region_encoder_kind_round_trips(kind):
    d = config().to_dict()
    d["region_encoder"]["kind"] = kind
    assert RegionCaptionerConfig.from_dict(json.loads(json.dumps(d))).region_encoder.kind == kind


def test_integer_accepted_for_float():
    d = config().to_dict()
    d["align_margin"] = 2
    assert RegionCaptionerConfig.from_dict(d).align_margin == 2.0


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(extra=1), "unknown key(s) extra"),
    (lambda d: d.pop("joint_dim"), "missing key(s) joint_dim"),
    (lambda d: d.pop("captioner"), "missing key 'captioner'"),
    (lambda d: d["detector"].pop("min_size"), "detector.missing key(s) min_size"),
    (lambda d: d["detector"].update(speed=3), "detector.unknown key(s) speed"),
    (lambda d: d.update(vocab_size="50"), "vocab_size must be an integer"),
    (lambda d: d.update(vocab_size=True), "vocab_size must be an integer"),
    (lambda d: d["detector"].update(pretrained=1), "pretrained must be a boolean"),
    (lambda d: d["detector"].update(anchor_sizes=[16, "32"]), "anchor_sizes must be a list of integers"),
    (lambda d: d.update(entity_types="people"), "entity_types must be a list of strings"),
    (lambda d: d["detector"].update(arch="huge"), "detector.arch must be one of"),
    (lambda d: d["captioner"].update(rnn="transformer"), "captioner.rnn must be one of"),
    (lambda d: d.update(region_encoder=[]), "region_encoder must be a JSON object"),
    (lambda d: d["region_encoder"].update(kind="vgg16"), "region_encoder.kind must be one of roi, vgg19, vgg19-crops"),
    (lambda d: d.update(vocab_size=2), "vocab_size must be >= 5"),
    (lambda d: d.update(concept_singulars=True, concept_loss_weight=0.0), "needs concept_loss_weight > 0"),
])
def test_bad_config_is_refused_with_the_file_named(change, message):
    d = config().to_dict()
    change(d)
    with pytest.raises(ModelFileError) as err:
        RegionCaptionerConfig.from_dict(d, source="m/config.json")
    assert str(err.value).startswith("m/config.json") and message in str(err.value)


def test_not_an_object():
    with pytest.raises(ModelFileError, match="top level must be a JSON object"):
        RegionCaptionerConfig.from_dict([1, 2])


def test_validate_direct_construction():
    with pytest.raises(ValueError, match="backbone_channels"):
        config = RegionCaptionerConfig(vocab_size=9, entity_types=["a"], detector=DetectorConfig(backbone_channels=[8]))
        config.validate()


def test_absurd_layer_counts_are_refused_before_building(make_config):
    data = make_config().to_dict()
    for section in ("text_encoder", "captioner"):
        forged = {**data, section: {**data[section], "num_layers": 10**6}}
        with pytest.raises(ModelFileError, match="num_layers"):
            RegionCaptionerConfig.from_dict(forged)


def test_config_written_before_reranking_loads_with_plain_beam_search():
    d = config().to_dict()
    del d["captioner"]["rerank_weight"], d["captioner"]["rerank_length_alpha"]
    c = RegionCaptionerConfig.from_dict(d)
    assert (c.captioner.rerank_weight, c.captioner.rerank_length_alpha, c.captioner.rerank) == (0.0, 0.0, False)
    d["captioner"]["rerank_weight"] = 2.5
    assert RegionCaptionerConfig.from_dict(d).captioner.rerank
    for bad in (-1.0, float("nan")):
        d["captioner"]["rerank_weight"] = bad
        with pytest.raises(ModelFileError, match="rerank_weight"):
            RegionCaptionerConfig.from_dict(d)


def test_config_written_before_group_captions_loads_without_them_and_forged_values_are_refused():
    d = config().to_dict()
    del d["captioner"]["group_weight"], d["captioner"]["group_beam_size"]
    c = RegionCaptionerConfig.from_dict(d)
    assert (c.captioner.group_weight, c.captioner.group_beam_size) == (0.0, 8)
    for key, bad in (("group_weight", -1.0), ("group_weight", float("nan")), ("group_beam_size", 0),
                     ("group_beam_size", 10**6)):
        with pytest.raises(ModelFileError, match=key):
            RegionCaptionerConfig.from_dict({**d, "captioner": {**d["captioner"], key: bad}})


def test_vgg19_saved_before_the_shared_convolution_encoder_is_read_as_it_was_or_refused():
    """'vgg19' was the per-crop encoder before e6c7a03 (today's 'vgg19-crops'); both have the same weights."""
    d = config().to_dict()
    assert d["region_encoder"]["version"] == 2  # what this version writes
    d["region_encoder"]["kind"] = "vgg19"
    assert RegionCaptionerConfig.from_dict(d).region_encoder.kind == "vgg19"  # version 2: today's meaning
    del d["region_encoder"]["version"]  # a file written before the field existed: either meaning
    with pytest.raises(ModelFileError, match=r"'vgg19' changed meaning .*e6c7a03.*vgg19-crops.*\"version\": 1"):
        RegionCaptionerConfig.from_dict(d)
    d["region_encoder"]["version"] = 1  # saved before the change: read as what it was
    old = RegionCaptionerConfig.from_dict(d).region_encoder
    assert (old.kind, old.version) == ("vgg19-crops", 2)
    for kind in ("roi", "vgg19-crops"):  # the other kinds kept their meaning: no version needed
        del d["region_encoder"]["version"]
        d["region_encoder"]["kind"] = kind
        assert RegionCaptionerConfig.from_dict(d).region_encoder.kind == kind
        d["region_encoder"]["version"] = 1
        assert RegionCaptionerConfig.from_dict(d).region_encoder.kind == kind
    for bad in (3, 0, True, "2"):
        d["region_encoder"]["version"] = bad
        with pytest.raises(ModelFileError, match="version"):
            RegionCaptionerConfig.from_dict(d)


def test_demo_model_config_loads_unchanged():
    from pathlib import Path

    data = json.loads((Path(__file__).parent.parent / "assets/demo-model/config.json").read_text())
    assert "version" not in data["region_encoder"] and data["region_encoder"]["kind"] == "roi"
    assert RegionCaptionerConfig.from_dict(data).region_encoder.kind == "roi"
