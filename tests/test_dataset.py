"""Dataset items, phrase/region bookkeeping, skipping of bad files, and batching."""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from regioncap.data import synthetic
from regioncap.data.dataset import (Flickr30kEntities, chain_boxes, chain_regions, collate_fn, merged_box,
                                    pad_sequences)
from regioncap.data.flickr30k import ENTITY_TYPES
from regioncap.data.transforms import build_transforms
from regioncap.data.vocab import PAD, Vocabulary
from regioncap.errors import AnnotationError

FIXTURES = Path(__file__).parent / "fixtures" / "flickr30k"


@pytest.fixture()
def root(tmp_path):
    """The hand-written fixtures plus plain JPEGs of the annotated sizes."""
    root = tmp_path / "f30k"
    shutil.copytree(FIXTURES, root)
    (root / "Images").mkdir()
    for image_id, size in (("1000001", (500, 375)), ("1000002", (320, 240))):
        Image.new("RGB", size, (90, 120, 150)).save(root / "Images" / f"{image_id}.jpg")
    return root


def test_records_and_skipping(root):
    ds = Flickr30kEntities(root, "train")
    assert ds.ids == ["1000001", "1000002"] and len(ds) == 2
    assert len(ds.skipped) == 1
    path, problem = ds.skipped[0]
    assert path.endswith("1000003.jpg") and problem == "image file not found"
    rec = ds.records[0]
    image_id, image_path, ann, sentences = rec  # a named tuple: unpacks and has attributes
    assert rec.id == image_id == "1000001" and image_path == root / "Images" / "1000001.jpg"
    assert ann.width == 500 and len(rec.sentences) == 5
    with pytest.raises(AnnotationError, match="1000003"):
        Flickr30kEntities(root, "train", strict=True)
    with pytest.raises(AnnotationError, match="split file not found"):
        Flickr30kEntities(root, "nosuchsplit")


def test_malformed_file_skipped_or_raised(root):
    (root / "Annotations" / "1000002.xml").write_text("<annotation><size>", encoding="utf-8")
    ds = Flickr30kEntities(root, "val")
    assert len(ds) == 0 and ds.skipped[0][0].endswith("1000002.xml") and "invalid XML" in ds.skipped[0][1]
    with pytest.raises(AnnotationError, match="invalid XML"):
        Flickr30kEntities(root, "val", strict=True)


def test_chain_regions_chain_boxes_and_merged_box(root):
    ds = Flickr30kEntities(root, "test")
    rec = ds.records[0]
    assert chain_regions(rec) == ["101", "102", "105", "107", "103"]
    assert merged_box([[11, 39, 149, 374], [159, 34, 289, 369]]) == [11, 34, 289, 374]
    boxes = chain_boxes(rec)
    phrases = [ph for sent in rec.sentences for ph in sent.phrases if boxes.get(ph.chain_id)]
    assert len(phrases) == 11  # every phrase of a boxed chain: not 104/106 (no box) nor chain 0
    assert phrases[0].text == "Two young men"
    # continuous coordinates: the files' inclusive pixels x1..x2 are [x1, x2 + 1)
    assert boxes["101"] == [[11, 39, 150, 375], [159, 34, 290, 370]]
    assert merged_box(boxes["101"]) == [11, 34, 290, 375]
    assert rec.annotation.boxes["101"] == [[11, 39, 149, 374], [159, 34, 289, 369]]  # as in the file, 0-based


def test_item_of_the_fixture(root):
    ds = Flickr30kEntities(root, "test")
    image, t = ds[0]
    assert image.shape == (3, 375, 500) and image.dtype == torch.float32 and t["size"] == (375, 500)
    assert t["image_id"] == "1000001"
    # each distinct box once: 101 has two, 105 and 107 share one
    # each box in continuous coordinates: the whole-image box [0, 0, 499, 374] of the file covers 500 x 375
    assert t["boxes"].tolist() == [[11, 39, 150, 375], [159, 34, 290, 370], [19, 119, 140, 260],
                                   [299, 59, 420, 375], [0, 0, 500, 375]]
    people, clothing, vehicles = (ENTITY_TYPES.index(n) + 1 for n in ("people", "clothing", "vehicles"))
    assert t["labels"].tolist() == [people, people, clothing, people, vehicles] and t["labels"].dtype == torch.int64
    assert t["region_boxes"].tolist() == [[0, 0, 500, 375], [11, 34, 290, 375], [19, 119, 140, 260],
                                          [299, 59, 420, 375], [299, 59, 420, 375], [0, 0, 500, 375]]
    texts = [ds.vocab.decode(p.tolist()) for p in t["phrases"]]
    assert texts == ["two young men", "blue jackets", "the subway", "the men", "a woman", "two guys", "a train",
                     "a woman", "two men", "people", "the metro"]
    assert t["phrase_region"].tolist() == [1, 2, 5, 1, 3, 1, 5, 3, 1, 4, 5]
    assert t["phrase_sentence"].tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert t["phrase_boxed"].all() and t["phrase_boxed"].dtype == torch.bool


def test_image_without_boxes(root):
    vocab = Vocabulary.build(["a snowy mountain"])
    ds = Flickr30kEntities(root, "val", vocab=vocab)
    image, t = ds[0]
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    assert t["region_boxes"].tolist() == [[0, 0, 320, 240]]
    assert t["phrase_region"].tolist() == [0] * 7  # scene phrases -> the whole image
    assert not t["phrase_boxed"].any()
    assert ds.vocab is vocab and vocab.decode(t["phrases"][0].tolist()) == "a snowy mountain"
    assert vocab.decode(t["phrases"][1].tolist()) == "a <unk> <unk>"  # "a clear sky": unknown words


def test_collate(root):
    ds = Flickr30kEntities(root, "train")
    images, targets, text = collate_fn([ds[0], ds[1]])
    assert len(images) == len(targets) == 2
    n0, n1 = len(targets[0]["phrases"]), len(targets[1]["phrases"])
    assert text["tokens"].shape == (n0 + n1, 3) and text["tokens"].dtype == torch.long
    assert text["lengths"].tolist()[:3] == [3, 2, 2]
    assert (text["tokens"][1, 2:] == PAD).all()
    r0 = len(targets[0]["region_boxes"])
    assert text["region"].tolist() == targets[0]["phrase_region"].tolist() + [r0] * n1
    expected = targets[0]["phrase_sentence"].tolist() + (targets[1]["phrase_sentence"] + 5).tolist()
    assert text["sentence"].tolist() == expected
    assert text["sentence_image"].tolist() == [0] * 5 + [1] * 5
    assert text["boxed"].tolist() == [True] * n0 + [False] * n1
    # an image without usable phrases still has its sentences; and an empty batch works
    empty = dict(targets[1], phrases=[], phrase_region=torch.zeros(0, dtype=torch.long),
                 phrase_sentence=torch.zeros(0, dtype=torch.long), phrase_boxed=torch.zeros(0, dtype=torch.bool))
    _, _, text = collate_fn([(images[1], empty)])
    assert text["tokens"].shape == (0, 1) and text["sentence_image"].tolist() == [0] * 5
    _, _, text = collate_fn([])
    assert text["tokens"].shape == (0, 1) and text["region"].shape == (0,)


def test_pad_sequences():
    tokens, lengths = pad_sequences([torch.tensor([5, 6, 7]), torch.tensor([8]), torch.tensor([], dtype=torch.long)])
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]] and lengths.tolist() == [3, 1, 0]
    tokens, lengths = pad_sequences([torch.tensor([], dtype=torch.long)] * 2, pad=9)
    assert tokens.tolist() == [[9], [9]] and lengths.tolist() == [0, 0]  # all padding: width 1, never 0


def test_synthetic_set_end_to_end(tmp_path):
    synthetic.generate(tmp_path, images=6, seed=3, splits=(1, 0, 0))
    ds = Flickr30kEntities(tmp_path, "train", transforms=build_transforms(train=True), strict=True)
    assert len(ds) == 6 and len(ds.vocab or []) == 0
    torch.manual_seed(0)
    for images, targets, text in DataLoader(ds, batch_size=3, collate_fn=collate_fn):
        for image, t in zip(images, targets):
            h, w = t["size"]
            assert image.shape == (3, h, w)
            assert 2 <= len(t["boxes"]) <= 4 and (t["labels"] >= 1).all() and (t["labels"] <= 6).all()
            boxes = t["region_boxes"]
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
            assert len(t["phrase_region"]) == len(t["phrases"]) and t["phrase_region"].max() < len(boxes)
        assert text["region"].max() < sum(len(t["region_boxes"]) for t in targets)
        assert len(text["sentence_image"]) == 15 and (text["lengths"] > 0).all()
    assert len(ds.vocab) > 20  # built from the split on first use


@pytest.fixture()
def truncated(tmp_path):
    """A 6-image synthetic train split whose image 2 is a truncated JPEG (the header is fine)."""
    synthetic.generate(tmp_path, images=6, seed=3, splits=(1, 0, 0))
    ids = (tmp_path / "train.txt").read_text().split()
    image = tmp_path / "Images" / f"{ids[2]}.jpg"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    return tmp_path, ids


def test_a_corrupt_image_never_gets_another_images_annotations(truncated):
    from train.evaluate import truth_from_dataset

    root, ids = truncated
    ds = Flickr30kEntities(root, "train")
    assert ds.ids == ids  # the header is fine: the record is kept until the body is decoded
    for i in range(len(ds)):
        image, target = ds[i]
        assert target["index"] == (3 if i == 2 else i)  # the sample says whose pixels it holds
        assert target["image_id"] == ds.records[target["index"]].id
        assert tuple(image.shape[-2:]) == (ds.records[target["index"]].annotation.height,
                                           ds.records[target["index"]].annotation.width)
    # evaluation takes the ground truth from the sample's own record: image 3's boxes, not image 2's
    truth = truth_from_dataset(ds, 2)
    rec3 = ds.records[3]
    assert truth.merged.tolist() == [merged_box(chain_boxes(rec3)[c]) for c in chain_regions(rec3)]
    assert len(truth.sentences) == len(rec3.sentences)


def test_skip_mode_returns_none_and_collate_drops_it(truncated, caplog):
    from train.evaluate import truth_from_dataset

    root, ids = truncated
    ds = Flickr30kEntities(root, "train", on_unreadable="skip")
    assert ds[2] is None and truth_from_dataset(ds, 2) is None
    assert "skipped" in caplog.text and f"{ids[2]}.jpg" in caplog.text
    images, targets, text = collate_fn([ds[1], ds[2], ds[3]])
    assert len(images) == 2 and [t["index"] for t in targets] == [1, 3]
    assert int(text["sentence_image"].max()) == 1  # sentences point at the two kept images
    images, targets, text = next(iter(DataLoader(ds, batch_size=6, collate_fn=collate_fn)))
    assert [t["image_id"] for t in targets] == ids[:2] + ids[3:]
    with pytest.raises(ValueError, match="on_unreadable"):
        Flickr30kEntities(root, "train", on_unreadable="drop")


def _halves(size, exif_orientation=None):
    """A picture whose left half is red and right half blue, with an optional EXIF orientation tag."""
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    return im, exif


def test_to_continuous():
    from regioncap.data.flickr30k import to_continuous

    assert to_continuous([0, 0, 499, 374]) == [0.0, 0.0, 500.0, 375.0]  # a whole 500 x 375 image
    assert to_continuous([5, 7, 5, 7]) == [5.0, 7.0, 6.0, 8.0]  # one pixel is 1 x 1


def test_exif_rotation_that_the_annotation_ignores_keeps_the_stored_pixels(root, caplog):
    # 1000001 is annotated 500 x 375: a stored 500 x 375 JPEG tagged "rotate 90" would load as 375 x 500
    im, exif = _halves((500, 375), exif_orientation=6)
    im.save(root / "Images" / "1000001.jpg", exif=exif)
    caplog.set_level("INFO")
    ds = Flickr30kEntities(root, "test")
    assert ds.ids == ["1000001"] and ds.skipped == []
    image, t = ds[0]
    assert image.shape == (3, 375, 500)  # the frame the boxes were drawn in
    assert image[0, :, :240].mean() > 0.9 and image[2, :, 260:].mean() > 0.9  # red left, blue right: not rotated
    assert t["boxes"].tolist()[-1] == [0, 0, 500, 375]
    assert "EXIF orientation 6 ignored" in caplog.text


def test_exif_rotation_that_the_annotation_follows_is_applied(root):
    im, exif = _halves((375, 500), exif_orientation=8)  # stored portrait, upright 500 x 375 as annotated
    im.save(root / "Images" / "1000001.jpg", exif=exif)
    ds = Flickr30kEntities(root, "test")
    image, _ = ds[0]
    assert image.shape == (3, 375, 500) and ds.skipped == []
    # orientation 8 turns the stored picture 90 degrees counter-clockwise: red (left) ends at the bottom
    assert image[0, 200:, :].mean() > 0.9 and image[2, :170, :].mean() > 0.9


def test_an_image_whose_size_fits_neither_frame_is_skipped_with_both_sizes(root, caplog):
    Image.new("RGB", (640, 480)).save(root / "Images" / "1000001.jpg")
    ds = Flickr30kEntities(root, "test")
    assert ds.ids == [] and len(ds.skipped) == 1
    path, problem = ds.skipped[0]
    assert path.endswith("1000001.jpg") and "image is 640x480" in problem and "<size> is 500x375" in problem
    with pytest.raises(AnnotationError, match="640x480"):
        Flickr30kEntities(root, "test", strict=True)
