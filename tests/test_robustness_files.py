"""Hostile and malformed input (issue 7), part 2: model files and training data.

Forged safetensors headers, bad configs and vocabularies, pickle-only folders and a pinned Hub
revision, through ``RegionCaptioner.from_pretrained`` and the command line; malformed data files
through ``train.train.main``. Images and text are in test_robustness.py.
"""

import json
import re
import struct
import time
from pathlib import Path

import pytest
import torch

from regioncap import hub
from regioncap.cli import main as cli_main
from regioncap.errors import ModelFileError
from regioncap.models.model import RegionCaptioner



# -- 3. model files -------------------------------------------------------------------------------
def _forge_header(path: Path, edit) -> None:
    """Rewrite model.safetensors' JSON header with ``edit(header)``, keeping the tensor bytes."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def _two_same_size(header) -> tuple[str, str]:
    by_size = {}
    for name, e in header.items():
        if name != "__metadata__":
            by_size.setdefault(e["data_offsets"][1] - e["data_offsets"][0], []).append(name)
    return next(tuple(sorted(names)[:2]) for names in by_size.values() if len(names) > 1)


def _first_f32(header) -> str:
    return next(n for n, e in sorted(header.items()) if n != "__metadata__" and e["dtype"] == "F32")


def _overlap(h):
    a, b = sorted(_two_same_size(h), key=lambda name: h[name]["data_offsets"])
    h[b]["data_offsets"] = list(h[a]["data_offsets"])  # the later tensor aliases the earlier one's bytes


def _set(key, value):
    def edit(h):
        h[_first_f32(h)][key] = value
    return edit


FORGED_HEADERS = {
    "overlapping offsets": (_overlap, "invalid offset for tensor"),
    "F64 over F32 bytes": (_set("dtype", "F64"), "invalid shape, data type, or offset"),
    "I32 for a float weight": (_set("dtype", "I32"), "has dtype torch.int32, expected torch.float32"),
    "unknown dtype": (_set("dtype", "F33"), "invalid JSON in header: unknown variant `F33`"),
    "negative dimension": (_set("shape", [-4, 2]), "invalid JSON in header: invalid value: integer `-4`"),
    "string offsets": (_set("data_offsets", ["0", "8"]), "invalid JSON in header: invalid type: string"),
    "a tensor dropped (gap)": (lambda h: h.pop(_first_f32(h)), "invalid offset|not fully covered"),
    "header is a list": (lambda h: h.clear(), None),
}


@pytest.mark.parametrize("case", sorted(FORGED_HEADERS))
def test_forged_safetensors_headers_are_refused(case, saved_model):
    _, folder = saved_model
    path = folder / "model.safetensors"
    edit, message = FORGED_HEADERS[case]
    if message is None:  # a JSON array instead of an object
        data = path.read_bytes()
        path.write_bytes(struct.pack("<Q", 2) + b"[]" + data[8 + struct.unpack("<Q", data[:8])[0]:])
        message = "invalid JSON in header"
    else:
        _forge_header(path, edit)
    with pytest.raises(ModelFileError, match=message) as info:  # safetensors' own checks, in its words
        RegionCaptioner.from_pretrained(folder)
    assert str(info.value).startswith(f"{path}: ")


def _edit_config(folder: Path, edit) -> Path:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return path


CONFIG_EDITS = {
    "missing section": (lambda c: c.pop("captioner"), "missing key 'captioner'"),
    "missing nested key": (lambda c: c["detector"].pop("min_size"), r"detector\.missing key\(s\) min_size"),
    "unknown key": (lambda c: c.update(evil="x"), r"unknown key\(s\) evil"),
    "list of strings": (lambda c: c["detector"].update(backbone_channels=["8", "8", "16", "16"]),
                        "backbone_channels must be a list of integers"),
    "bool for an int": (lambda c: c["text_encoder"].update(max_len=True), "max_len must be an integer"),
    "section not an object": (lambda c: c.update(text_encoder=[1, 2]), "text_encoder must be a JSON object"),
    "bad choice": (lambda c: c["captioner"].update(rnn="transformer"), "captioner.rnn must be one of"),
    "NaN": (lambda c: c.update(align_margin=float("nan")), "NaN is not a valid number"),
    "dropout 5": (lambda c: c["captioner"].update(dropout=5.0), "describes no buildable model"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_EDITS))
def test_bad_configs_name_the_file_and_the_problem(case, saved_model):
    edit, message = CONFIG_EDITS[case]
    path = _edit_config(saved_model[1], edit)
    with pytest.raises(ModelFileError, match=message) as info:
        RegionCaptioner.from_pretrained(saved_model[1])
    assert str(info.value).startswith(f"{path}: ")


def test_config_json_that_is_not_an_object(saved_model):
    (saved_model[1] / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelFileError, match="config.json: top level must be a JSON object"):
        RegionCaptioner.from_pretrained(saved_model[1])


def test_a_forged_config_cannot_make_loading_allocate(saved_model):
    # 3 x 100,000^2 floats would be 120 GB: the shapes are checked on the meta device, nothing is allocated.
    _edit_config(saved_model[1], lambda c: c["text_encoder"].update(hidden_dim=100_000))
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"model.safetensors: weight text_encoder\..* needs \[300000"):
        RegionCaptioner.from_pretrained(saved_model[1])
    assert time.perf_counter() - start < 10


def test_vocab_that_does_not_match_the_embedding(saved_model):
    _, folder = saved_model
    vocab = json.loads((folder / "vocab.json").read_text())
    n = len(vocab["tokens"])
    (folder / "vocab.json").write_text(json.dumps({**vocab, "tokens": vocab["tokens"] + ["zebra"]}))
    _edit_config(folder, lambda c: c.update(vocab_size=n + 1))  # vocab and config agree; the weights do not
    with pytest.raises(ModelFileError, match=rf"vocab.json: has {n + 1} tokens but weight .*embed.weight in "
                                             rf"model.safetensors has {n} rows"):
        RegionCaptioner.from_pretrained(folder)


@pytest.mark.parametrize("tokens, message", [
    (["<pad>", "<start>", "<end>", "<unk>", "red", "red"], "duplicates"),
    (["red", "circle"], "must start with"),
    ("red circle", "list of non-empty strings"),
])
def test_malformed_vocab_is_refused(saved_model, tokens, message):
    path = saved_model[1] / "vocab.json"
    path.write_text(json.dumps({"tokens": tokens, "min_count": 1}))
    with pytest.raises(ModelFileError, match=message) as info:
        RegionCaptioner.from_pretrained(saved_model[1])
    assert str(info.value).startswith(f"{path}: ")


def test_a_pickle_only_model_folder_through_the_cli(saved_model, image_file, tmp_path, capsys):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    for name in ("config.json", "vocab.json"):
        (folder / name).write_bytes((saved_model[1] / name).read_bytes())
    assert cli_main(["caption", str(image_file), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pytorch_model.bin" in err and "pickle" in err
    _edit_config(saved_model[1], lambda c: c["detector"].update(min_size="big"))
    assert cli_main(["caption", str(image_file), "--model", str(saved_model[1])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json: detector.min_size must be an integer" in err


def test_cli_revision_reaches_the_hub_client(saved_model, image_file, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs.get("revision")))
        return str(saved_model[1])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code = cli_main(["caption", str(image_file), "--model", "someone/regioncap-tiny", "--revision", "0123abc"])
    assert code == 0, capsys.readouterr().err
    assert calls == [("someone/regioncap-tiny", "0123abc")]
    assert json.loads(capsys.readouterr().out)["model"] == "someone/regioncap-tiny"
    assert hub.resolve_model_dir("someone/regioncap-tiny", revision="v1.0") == saved_model[1]
    assert calls[-1] == ("someone/regioncap-tiny", "v1.0")


# -- 4. training data -----------------------------------------------------------------------------
TINY_TRAIN = ["--min-size", "96", "--max-size", "128", "--detector-batch-size", "2", "--workers", "0",
              "--vocab-min-count", "1", "--log-every", "1", "--no-augment", "--stages", "alignment",
              "--epochs", "1", "--max-steps", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def corrupted_data(tmp_path_factory):
    """A synthetic set whose train split has a malformed annotation, a malformed sentence file, a
    non-image .jpg (found from the header) and a truncated JPEG (found only when decoded)."""
    from regioncap.data.synthetic import generate

    root = tmp_path_factory.mktemp("corrupted")
    generate(root, images=10, seed=3)
    ids = (root / "train.txt").read_text().split()
    (root / "Annotations" / f"{ids[0]}.xml").write_text("<annotation><size><width>10</width>")
    (root / "Sentences" / f"{ids[1]}.txt").write_text("A [/EN#/people man] walks .\n")
    (root / "Images" / f"{ids[2]}.jpg").write_text("not a jpeg at all")
    image = root / "Images" / f"{ids[3]}.jpg"
    image.write_bytes(image.read_bytes()[:len(image.read_bytes()) // 2])
    return root, ids


def _train(data, out, *extra):
    from train.train import get_args_parser, main

    return main(get_args_parser().parse_args(["--data", str(data), "--out", str(out), *TINY_TRAIN, *extra]))


def test_training_skips_malformed_files_and_says_how_many(corrupted_data, tmp_path, capsys, caplog):
    root, ids = corrupted_data
    assert _train(root, tmp_path / "m") == 0
    err = capsys.readouterr().err
    assert "skipped 3 malformed file(s); first: " in err and f"Annotations/{ids[0]}.xml: invalid XML" in err
    assert f"{ids[3]}.jpg: corrupt or truncated" in caplog.text and "using the next image" in caplog.text
    assert (tmp_path / "m" / "model.safetensors").is_file()

    from regioncap.data.dataset import Flickr30kEntities

    dataset = Flickr30kEntities(root, "train")
    items = list(dataset)  # the truncated image is replaced by the next one; iteration still ends
    assert len(items) == len(dataset) == 5 and all(image.shape[0] == 3 for image, _ in items)
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    skipped = dict(dataset.skipped)
    assert sorted(skipped) == sorted([str(root / "Annotations" / f"{ids[0]}.xml"),
                                      str(root / "Sentences" / f"{ids[1]}.txt"),
                                      str(root / "Images" / f"{ids[2]}.jpg")])
    assert "malformed phrase tag" in skipped[str(root / "Sentences" / f"{ids[1]}.txt")]
    assert "not an image" in skipped[str(root / "Images" / f"{ids[2]}.jpg")]


def test_strict_training_stops_before_it_starts(corrupted_data, tmp_path, capsys):
    root, ids = corrupted_data
    with pytest.raises(SystemExit) as exc:
        _train(root, tmp_path / "strict", "--strict")
    assert exc.value.code == 2
    assert re.search(f"^error: .*Annotations/{ids[0]}.xml: invalid XML", capsys.readouterr().err)
    assert not (tmp_path / "strict").exists()  # nothing trained, nothing written


# -- 5. folders: what the walker takes (issue 29, point 7) ------------------------------------------------
def test_the_walked_suffixes_are_those_the_image_loader_and_the_video_reader_open():
    from regioncap.data.image import image_suffixes
    from regioncap.index.files import suffix_kinds
    from regioncap.video.reader import VIDEO_SUFFIXES

    suffixes = image_suffixes()
    assert {".jpg", ".jpeg", ".JPG".lower(), ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"} <= suffixes
    assert not suffixes & {".mp4", ".mpg", ".xmp", ".txt", ".json", ".psd", ".eps", ".pdf", ".ico", ".jp2"}
    assert {".mp4", ".mov", ".mkv", ".webm", ".avi"} <= VIDEO_SUFFIXES and not VIDEO_SUFFIXES & suffixes
    assert suffix_kinds() == {**dict.fromkeys(suffixes, "image"), **dict.fromkeys(VIDEO_SUFFIXES, "video")}


@pytest.fixture
def library(tmp_path):
    """A photo folder with what photo folders hold: sidecars, an archive (150 MB, sparse), an upper-case suffix."""
    from PIL import Image

    folder = tmp_path / "library"
    (folder / "2024").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "2024/b.PNG", "2024/c.webp"]):
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(folder / name, format=Path(name).suffix[1:].upper()
                                                           .replace("JPG", "JPEG"))
    (folder / "a.jpg.xmp").write_text("<x:xmpmeta/>")
    (folder / "2024" / "b.xmp").write_text("<x:xmpmeta/>")
    (folder / "notes.txt").write_text("holiday")
    with open(folder / "2024" / "backup.zip", "wb") as f:
        f.truncate(150 * 2**20)
    return folder


@pytest.fixture
def reads(monkeypatch):
    """The files the batch loader reads (and hashes)."""
    import regioncap.batch
    from regioncap.index import files

    seen = []

    def read_file(path):
        seen.append(Path(path).name)
        return files.read_file(path)

    monkeypatch.setattr(regioncap.batch, "read_file", read_file)
    return seen


def test_caption_skips_what_no_reader_knows_without_reading_it(library, reads, saved_model, capsys, caplog):
    code = cli_main(["caption", str(library), "--model", str(saved_model[1]), "--threshold", "0"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and not [d for d in lines if "error" in d]
    assert sorted(Path(d["path"]).name for d in lines) == ["a.jpg", "b.PNG", "c.webp"]
    assert sorted(reads) == ["a.jpg", "b.PNG", "c.webp"]  # the video and the sidecars were never opened
    assert "skipped 4 file(s) whose suffix no reader knows (.xmp 2, .txt 1, .zip 1)" in caplog.text
    # named explicitly, a file is tried whatever its suffix: the reader decides
    code = cli_main(["caption", str(library / "notes.txt"), str(library / "a.jpg"), "--model", str(saved_model[1])])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and "not an image" in lines[0]["error"] and "error" not in lines[1]


def test_index_walks_folders_the_same_way(library, reads, tiny_model, tmp_path):
    from regioncap.index import RegionIndex

    with RegionIndex(tmp_path / "index", tiny_model, score_threshold=0.0) as index:
        counts = index.add([library])
        assert (counts["added"], counts["failed"]) == (3, [])
    assert sorted(reads) == ["a.jpg", "b.PNG", "c.webp"]
    with RegionIndex(tmp_path / "index", tiny_model, score_threshold=0.0) as index:
        assert index.add([tmp_path])["added"] == 0  # the index folder itself is never walked as input
        assert len(index) == 3
