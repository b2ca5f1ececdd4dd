"""The synthetic data set: the real layout and formats, determinism, and what the captions promise."""

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regioncap.data import synthetic
from regioncap.data.flickr30k import ENTITY_TYPES, read_annotation, read_sentences, read_split


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    splits = synthetic.generate(out, images=20, seed=7)
    return out, splits


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_prefix_property(generated, tmp_path):
    out, _ = generated
    synthetic.generate(tmp_path / "again", images=20, seed=7)
    assert _tree(out) == _tree(tmp_path / "again")
    other = synthetic.generate(tmp_path / "other", images=3, seed=8)
    assert set(other["train"] + other["val"] + other["test"]).isdisjoint(_tree(out))
    small = synthetic.generate(tmp_path / "small", images=5, seed=7, splits=(0, 0, 1))
    big = read_split(out / "train.txt") + read_split(out / "val.txt") + read_split(out / "test.txt")
    assert small["test"] == big[:5]  # image i depends only on (seed, i)
    for i in small["test"]:
        assert (tmp_path / "small" / "Images" / f"{i}.jpg").read_bytes() == (out / "Images" / f"{i}.jpg").read_bytes()


def test_layout_and_splits(generated):
    out, splits = generated
    assert [len(splits[k]) for k in ("train", "val", "test")] == [16, 2, 2]
    ids = splits["train"] + splits["val"] + splits["test"]
    assert len(set(ids)) == 20 and all(re.fullmatch(r"[1-9]\d{9}", i) for i in ids)
    for name in ("train", "val", "test"):
        assert read_split(out / f"{name}.txt") == splits[name]
    for sub, ext in (("Images", "jpg"), ("Annotations", "xml"), ("Sentences", "txt")):
        assert sorted(p.stem for p in (out / sub).glob(f"*.{ext}")) == sorted(ids)


def test_split_counts():
    assert synthetic._split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert synthetic._split_counts(7, (0, 0, 1)) == [0, 0, 7]
    assert synthetic._split_counts(3, (1, 1, 0)) in ([2, 1, 0], [1, 2, 0])
    assert sum(synthetic._split_counts(2001, (0.8, 0.1, 0.1))) == 2001
    for bad in ((1, 1), (-1, 1, 1), (0, 0, 0), (float("nan"), 1, 1)):
        with pytest.raises(ValueError):
            synthetic._split_counts(5, bad)


def test_every_file_parses_and_keeps_the_promises(generated):
    out, splits = generated
    shape_words = {w for s in synthetic.SHAPE_TYPES for w in [s] + synthetic.SHAPE_SYNONYMS.get(s, [])}
    stats = Counter()
    for image_id in splits["train"] + splits["val"] + splits["test"]:
        ann = read_annotation(out / "Annotations" / f"{image_id}.xml")
        sents = read_sentences(out / "Sentences" / f"{image_id}.txt")
        with Image.open(out / "Images" / f"{image_id}.jpg") as im:
            assert im.size == (ann.width, ann.height) and im.mode == "RGB"
            pixels = np.asarray(im).astype(np.float32)
        assert 192 <= ann.width <= 256 and 144 <= ann.height <= 192 and ann.depth == 3
        assert len(ann.scene) == 1 and ann.nobox == []
        assert len(sents) == 5 and all(s.sentence.endswith(" .") for s in sents)
        singles = {c for c, b in ann.boxes.items() if len(b) == 1}
        assert 2 <= len(singles) <= 4
        for boxes in ann.boxes.values():
            for x1, y1, x2, y2 in boxes:
                assert 0 <= x1 < x2 <= ann.width - 1 and 0 <= y1 < y2 <= ann.height - 1
        mentions = Counter()
        for s in sents:
            chains = {p.chain_id for p in s.phrases}
            assert 1 <= len(chains & set(ann.boxes)) <= 3
            mentions.update(chains)
            for p in s.phrases:
                assert p.types and (p.types[0] in ENTITY_TYPES or p.types == ["notvisual"])
                assert p.chain_id == "0" or p.chain_id in ann.boxes or p.chain_id in ann.scene
                stats["phrases"] += 1
                stats["notvisual"] += p.chain_id == "0"
                stats["scene"] += p.chain_id in ann.scene
                if p.chain_id in singles:
                    words = p.text.split()
                    assert words[0] in ("a", "an", "the", "one")
                    assert words[-1] in shape_words | {"stripes", "dots", "checks"}
                    colour = next((w for w in words if w in synthetic.COLOURS), None)
                    if colour:  # the box holds pixels of the named colour: the box is on the object
                        (x1, y1, x2, y2), = ann.boxes[p.chain_id]
                        patch = pixels[y1:y2 + 1, x1:x2 + 1].reshape(-1, 3)
                        close = np.linalg.norm(patch - np.array(synthetic.COLOURS[colour]), axis=1) < 60
                        assert close.mean() > 0.05, (image_id, p.text)
        for c in singles:  # named in >= 3 sentences, alone or in a group ("two circles": a chain with two boxes)
            groups = [g for g, b in ann.boxes.items() if len(b) > 1 and ann.boxes[c][0] in b]
            assert sum(any(p.chain_id in [c] + groups for p in s.phrases) for s in sents) >= 3
    assert stats["notvisual"] > 0 and stats["scene"] > 0


def test_objects_stay_visible_and_distinct():
    import random

    for index in range(40):
        rng = random.Random(index)
        w, h = rng.randint(192, 256), rng.randint(144, 192)
        objs = synthetic._place(rng, synthetic._sample_objects(rng, 4, (128, 128, 128)), w, h)
        assert len({(o.shape, o.colour, o.size, o.pattern) for o in objs}) == len(objs)
        masks = [synthetic._mask(o, w, h)[0] for o in objs]
        for j, o in enumerate(objs):
            covered = np.zeros((h, w), bool)
            for m in masks[j + 1:]:
                covered |= m
            assert (masks[j] & ~covered).sum() >= synthetic.MIN_VISIBLE * o.area


def test_cli(tmp_path, capsys):
    assert synthetic.main([str(tmp_path / "cli"), "--images", "3", "--seed", "1", "--splits", "0,0,1"]) == 0
    assert len(read_split(tmp_path / "cli" / "test.txt")) == 3 and read_split(tmp_path / "cli" / "train.txt") == []
    assert "wrote 3 images" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        synthetic.main([str(tmp_path / "bad"), "--images", "3", "--splits", "0.5,0.5"])


# -- the photo preset -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("photo")
    splits = synthetic.generate(out, images=12, seed=5, preset="photo")
    return out, splits


def _words(root: Path, ids) -> set[str]:
    return {w for i in ids for s in read_sentences(root / "Sentences" / f"{i}.txt") for w in s.sentence.split()}


def test_photo_preset_sizes_objects_and_format(photo_set, generated):
    from regioncap.data.synthetic import photo

    out, splits = photo_set
    ids = splits["train"] + splits["val"] + splits["test"]
    sizes, overlapping = set(), 0
    for image_id in ids:
        ann = read_annotation(out / "Annotations" / f"{image_id}.xml")
        sents = read_sentences(out / "Sentences" / f"{image_id}.txt")
        with Image.open(out / "Images" / f"{image_id}.jpg") as im:
            assert im.size == (ann.width, ann.height) and im.mode == "RGB"
            pixels = np.asarray(im).astype(np.float32)
        sizes.add((ann.width, ann.height))
        assert max(ann.width, ann.height) == 500 and (ann.width, ann.height) in {a for a, _ in photo.ASPECTS}
        assert len(ann.scene) == 1 and ann.nobox == [] and len(sents) == 5
        singles = {c: b[0] for c, b in ann.boxes.items() if len(b) == 1}
        assert 3 <= len(singles) <= 8
        boxes = list(singles.values())
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= ann.width - 1 and 0 <= y1 < y2 <= ann.height - 1
        overlapping += any(a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]
                           for k, a in enumerate(boxes) for b in boxes[k + 1:])
        mentioned = Counter()
        for s in sents:
            assert s.sentence.endswith(" .")
            for p in s.phrases:
                assert p.types and (p.types[0] in ENTITY_TYPES or p.types == ["notvisual"])
                assert p.chain_id == "0" or p.chain_id in ann.boxes or p.chain_id in ann.scene
                if p.chain_id in singles:
                    colour = next((w for w in p.text.split() if w in photo.PHOTO_COLOURS), None)
                    if colour:  # the box holds pixels close to the named colour (shaded, noisy)
                        x1, y1, x2, y2 = singles[p.chain_id]
                        patch = pixels[y1:y2 + 1, x1:x2 + 1].reshape(-1, 3)
                        close = np.linalg.norm(patch - np.array(photo.PHOTO_COLOURS[colour]), axis=1) < 70
                        assert close.mean() > 0.05, (image_id, p.text)
            mentioned.update({p.chain_id for p in s.phrases})
        for c, box in singles.items():  # every object named in >= 2 sentences, alone or in a group
            groups = [g for g, b in ann.boxes.items() if len(b) > 1 and box in b]
            assert sum(any(p.chain_id in [c] + groups for p in s.phrases) for s in sents) >= 2
    assert len(sizes) >= 3 and overlapping >= 3  # varied aspect ratios; occlusion happens
    gen_out, gen_splits = generated  # richer wording than the shapes preset on as many images
    shapes_words = _words(gen_out, (gen_splits["train"] + gen_splits["val"] + gen_splits["test"])[:12])
    assert len(_words(out, ids)) > 1.5 * len(shapes_words)


def test_photo_preset_is_deterministic_with_workers(photo_set, tmp_path):
    out, _ = photo_set
    synthetic.generate(tmp_path / "again", images=12, seed=5, preset="photo", workers=2)
    assert _tree(out) == _tree(tmp_path / "again")
    other = synthetic.generate(tmp_path / "other", images=2, seed=6, preset="photo", splits=(0, 0, 1))
    assert all((tmp_path / "other" / "Images" / f"{i}.jpg").read_bytes() != b""
               and f"Images/{i}.jpg" not in _tree(out) for i in other["test"])


def test_split_counts_accepts_flickr30k_counts():
    assert synthetic._split_counts(31783, (29783, 1000, 1000)) == [29783, 1000, 1000]


def test_cli_photo_preset(tmp_path, capsys):
    assert synthetic.main([str(tmp_path / "p"), "--images", "2", "--preset", "photo", "--splits", "1,0,0"]) == 0
    assert "photo preset" in capsys.readouterr().out
    assert len(read_split(tmp_path / "p" / "train.txt")) == 2
    for bad in (["--preset", "nope"], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            synthetic.main([str(tmp_path / "bad"), "--images", "1"] + bad)
    with pytest.raises(ValueError, match="unknown preset"):
        synthetic.generate(tmp_path / "bad2", images=1, seed=0, preset="nope")


def test_attribute_words_cover_every_object_word_the_sentences_use():
    words = synthetic.ATTRIBUTE_WORDS
    assert set(words) == {"shape", "colour", "size", "pattern"}
    rng = __import__("random").Random(0)
    for _ in range(300):
        o = synthetic.Obj(rng.choice(list(synthetic.SHAPE_TYPES)), rng.choice(list(synthetic.COLOURS)),
                          rng.choice(list(synthetic.SIZES)), rng.choice(synthetic.PATTERNS))
        phrase = synthetic._object_words(rng, o)
        named = {}
        for w in phrase[1:]:  # after the article
            hits = [a for a, names in words.items() if w in names]
            assert len(hits) <= 1, w
            if hits:
                named[hits[0]] = words[hits[0]][w]
            else:
                assert w == "with", (w, phrase)
        assert named["shape"] == o.shape
        assert all(named[a] == getattr(o, a) for a in ("colour", "size", "pattern") if a in named)
