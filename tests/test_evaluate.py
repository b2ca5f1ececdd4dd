"""train.evaluate: metric wiring on hand-made images with a fake model, dataset plumbing, and the CLI."""

import json
import math

import pytest
import torch

from regioncap.errors import TextError
from train import evaluate as ev
from train.evaluate import ImageTruth

E = torch.eye(6)  # region and phrase vectors are one-hot, so every similarity is 0 or 1


class _Region:
    def __init__(self, box, score=1.0, label="user", caption=""):
        self.box, self.score, self.label, self.caption = box, score, label, caption


class _Result:
    def __init__(self, regions, vectors, image_vector):
        self.regions, self.vectors, self.image_vector = regions, vectors, image_vector


class FakeModel:
    """analyze() returns fixed detections per image key; analyze(boxes=...) fixed captions."""

    TEXTS = {"a man": E[0], "a shirt": E[1], "two shirts": E[2], "the street": E[3], "a dog": E[4]}

    def __init__(self):
        self.calls = []
        self.dets = {
            "A": ([([0, 0, 50, 50], 0.9, "people"), ([60, 60, 100, 100], 0.8, "clothing"),
                   ([70, 0, 80, 10], 0.7, "clothing")], [E[0], E[1], E[2]], E[3]),
            "B": ([([10, 10, 90, 90], 0.95, "animals")], [E[4]], E[5]),
        }
        self.captions = {"A": ["a man", "a red shirt"], "B": ["a dog"]}

    def analyze(self, image, max_regions=10, score_threshold=0.5, boxes=None, captions=True, objects=None):
        self.calls.append((image, max_regions, score_threshold, boxes, captions))
        if boxes is not None:
            # the boxes come with the detections of the same image as the objects they may be made up of
            assert objects is not None and [r.box for r in objects.regions] == [
                d[0] for d in self.dets[image][0] if d[1] >= 0.05][:100]
            return _Result([_Region(b, caption=c) for b, c in zip(boxes, self.captions[image])], None, None)
        dets, vecs, whole = self.dets[image]
        keep = [i for i, d in enumerate(dets) if d[1] >= score_threshold][:max_regions]
        regions = [_Region(dets[i][0], dets[i][1], dets[i][2]) for i in keep]
        return _Result(regions, torch.stack([vecs[i] for i in keep]) if keep else torch.zeros(0, 6), whole)

    def encode_text(self, texts):
        if any(t not in self.TEXTS for t in texts):
            raise TextError("no known word")
        return torch.stack([self.TEXTS[t] for t in texts])


def _truths():
    t = lambda rows: torch.tensor(rows, dtype=torch.float32)  # noqa: E731
    a = ImageTruth(
        image="A", det_boxes=t([[0, 0, 50, 50], [60, 60, 100, 100], [0, 0, 30, 100]]),
        det_labels=torch.tensor([1, 2, 2]),
        merged=t([[0, 0, 50, 50], [0, 0, 100, 100]]),
        chain_boxes=[t([[0, 0, 50, 50]]), t([[60, 60, 100, 100], [0, 0, 30, 100]])],
        chain_refs=[[["a", "man"]], [["a", "shirt"], ["two", "shirts"]]],
        phrases=[("a man", 0), ("a shirt", 1), ("two shirts", 1)],
        sentences=[["a man", "a shirt"], ["two shirts", "the street"]])
    b = ImageTruth(
        image="B", det_boxes=t([[10, 10, 90, 90]]), det_labels=torch.tensor([4]),
        merged=t([[10, 10, 90, 90]]), chain_boxes=[t([[10, 10, 90, 90]])],
        chain_refs=[[["a", "dog"], ["a", "xyzzy"]]],
        phrases=[("a dog", 0), ("a xyzzy", 0)],
        sentences=[["a dog", "a man", "a xyzzy"]])
    return [a, b]


TYPES = ["people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other"]


@pytest.fixture
def no_decode(monkeypatch):
    monkeypatch.setattr(ev, "load_image", lambda image: image)  # the fake model takes the image keys


def test_metrics_hand_computed_with_a_fake_model(no_decode):
    model = FakeModel()
    out = ev.evaluate(model, _truths(), num_classes=8, entity_types=TYPES, progress=False)
    # AP: people 1 (one hit), animals 1, clothing: hit at 0.8 then a false positive, 1 of 2 GT found
    # -> precision 1 up to recall 0.5 -> 51 of 101 recall points.
    assert out["det_ap50"] == pytest.approx((1 + 51 / 101 + 1) / 3)
    # grounding picks: "a man" -> [0,0,50,50] (hit, hit); "a shirt" -> [60,60,100,100]: IoU 0.16 with
    # the union box (miss) but equal to one of the chain's boxes (hit); "two shirts" -> the false
    # positive (miss, miss); "a dog" -> hit, hit; "a xyzzy" cannot be encoded (miss, miss).
    assert out["grounding_acc"] == pytest.approx(2 / 5)
    assert out["grounding_acc_any"] == pytest.approx(3 / 5)
    # captions "a man" | "a red shirt" | "a dog": p1 = 6/7, p2 = 2/4, c = 7 >= r = 2 + 2 + 2
    assert out["bleu1"] == pytest.approx(6 / 7, rel=1e-8)
    assert out["bleu2"] == pytest.approx(math.sqrt(6 / 7 * 2 / 4), rel=1e-8)
    # no reference names a shape, colour, size or pattern word of the synthetic world ("red" is only in a caption)
    assert out["num_attr_colour"] == 0 and out["attr_colour"] == 0.0
    # S = [[2, 2, 1], [0, 0, 1]]: sentence 2 (image B) ties with image A -> a t2i miss at 1
    assert out["i2t_r1"] == 1.0 and out["t2i_r1"] == pytest.approx(2 / 3) and out["t2i_r5"] == 1.0
    assert (out["num_images"], out["num_sentences"], out["num_phrases"], out["num_regions_captioned"]) == (2, 3, 5, 3)
    # two analyze calls per image: detections without captions, then the GT boxes with captions
    assert [(c[0], c[3] is None, c[4]) for c in model.calls] == [("A", True, False), ("A", False, True),
                                                                 ("B", True, False), ("B", False, True)]
    assert model.calls[0][1:3] == (100, 0.05)
    assert model.calls[1][3] == [[0, 0, 50, 50], [0, 0, 100, 100]]


def test_regions_limits_the_grounding_candidates(no_decode):
    out = ev.evaluate(FakeModel(), _truths(), num_classes=8, entity_types=TYPES, regions=1, progress=False)
    assert out["grounding_acc_any"] == pytest.approx(2 / 5)  # "a shirt" can only pick the person box now
    assert out["det_ap50"] == pytest.approx((1 + 51 / 101 + 1) / 3)  # AP still sees every detection


def test_images_without_detections_or_chains(no_decode):
    model = FakeModel()
    model.dets["A"] = ([], [], E[3])
    truths = _truths()
    truths[1].chain_refs = [[]]  # a chain nobody names: nothing to caption
    out = ev.evaluate(model, truths, num_classes=8, entity_types=TYPES, progress=False)
    assert out["grounding_acc"] == pytest.approx(1 / 5)
    assert out["num_regions_captioned"] == 2
    assert [c[0] for c in model.calls] == ["A", "A", "B"]


def test_encode_texts_isolates_refused_phrases():
    model = FakeModel()
    calls = []
    encode = model.encode_text
    model.encode_text = lambda texts: calls.append(len(texts)) or encode(texts)
    texts = ["a man", "a xyzzy", "a dog", "the street", "zzz"]
    vectors, ok = ev.encode_texts(model, texts, batch_size=4)
    assert ok.tolist() == [True, False, True, True, False]
    assert torch.equal(vectors[0], E[0]) and torch.equal(vectors[2], E[4]) and not vectors[1].any()
    assert len(calls) < 10
    vectors, ok = ev.encode_texts(model, [])
    assert vectors.shape[0] == 0 and ok.numel() == 0


# ----------------------------------------------------------------------------- on a data set, with a real model

@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from regioncap.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, images=6, seed=5, splits=(0.5, 0.0, 0.5))
    return root


def test_truth_from_dataset_matches_the_dataset(synth):
    from regioncap.data.dataset import Flickr30kEntities, chain_boxes, merged_box
    from regioncap.data.vocab import tokenize

    ds = Flickr30kEntities(synth, "test")
    for i in range(len(ds)):
        truth = ev.truth_from_dataset(ds, i)
        _, target = ds[i]
        assert torch.equal(truth.det_boxes, target["boxes"]) and torch.equal(truth.det_labels, target["labels"])
        boxes = chain_boxes(ds.records[i])  # every phrase of a chain with boxes, in file order
        mine = [ph for sent in ds.records[i].sentences for ph in sent.phrases if boxes.get(ph.chain_id)]
        assert [text for text, _ in truth.phrases] == [ph.text for ph in mine]
        for (text, c), ph in zip(truth.phrases, mine):
            assert truth.merged[c].tolist() == merged_box(boxes[ph.chain_id])
            assert truth.chain_boxes[c].tolist() == boxes[ph.chain_id]
            assert tokenize(text) in truth.chain_refs[c]
        assert len(truth.sentences) == len(ds.records[i].sentences)
        assert all("this picture" not in s for sent in truth.sentences for s in sent)  # notvisual left out
        assert len(truth.caption_boxes) == len(truth.merged)


@pytest.fixture(scope="module")
def tiny_model(synth, tmp_path_factory):
    from regioncap.data.dataset import Flickr30kEntities
    from regioncap.data.vocab import Vocabulary
    from regioncap import testing

    vocab = Vocabulary.build(Flickr30kEntities(synth, "train").phrase_texts())
    out = tmp_path_factory.mktemp("model")
    testing.tiny_model(vocab).save_pretrained(out)
    return out


KEYS = {"bleu1", "bleu2", "bleu3", "bleu4", "grounding_acc", "grounding_acc_any", "det_ap50",
        "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
        "attr_shape", "attr_colour", "attr_size", "attr_pattern"}


def test_cli_on_a_tiny_model(synth, tiny_model, tmp_path, capsys):
    out_json = tmp_path / "sub" / "eval.json"
    args = ev.get_args_parser().parse_args(["--model", str(tiny_model), "--data", str(synth), "--split", "test",
                                            "--json", str(out_json), "--device", "cpu", "--max-images", "2",
                                            "--no-progress"])
    result = ev.main(args)
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed == result == json.loads(out_json.read_text())
    assert "pattern named" in captured.err and f"{result['bleu4']:.4f}" in captured.err  # the table
    assert result["num_attr_shape"] > 0  # the synthetic phrases always name the shape
    assert KEYS <= set(result)
    assert all(0.0 <= result[k] <= 1.0 for k in KEYS)
    assert result["num_images"] == 2 and result["num_phrases"] > 0 and result["seconds"] > 0
    assert [p.name for p in out_json.parent.iterdir()] == ["eval.json"]  # no temporary file left


@pytest.mark.parametrize("what", ["model", "data", "split"])
def test_cli_errors_exit_2_with_one_line(synth, tiny_model, tmp_path, capsys, what):
    argv = {"model": str(tiny_model), "data": str(synth), "split": "test"}
    argv[what] = {"model": str(tmp_path / "missing"), "data": str(tmp_path / "missing"), "split": "nope"}[what]
    args = ev.get_args_parser().parse_args([f"--{k}={v}" for k, v in argv.items()] + ["--no-progress"])
    with pytest.raises(SystemExit) as exc:
        ev.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_attribute_rates_over_regions_of_several_boxes(no_decode):
    """attr_* count every captioned chain, group_attr_* only the chains of several boxes."""
    truths = _truths()
    truths[0].chain_refs[0] = [["a", "blue", "man"]]  # one box; its caption "a man" names no colour
    truths[0].chain_refs[1] = [["a", "red", "shirt"], ["two", "shirts"]]  # two boxes; caption "a red shirt"
    out = ev.evaluate(FakeModel(), truths, num_classes=8, entity_types=TYPES, progress=False)
    assert (out["attr_colour"], out["num_attr_colour"]) == (pytest.approx(1 / 2), 2)
    assert (out["group_attr_colour"], out["group_num_attr_colour"]) == (1.0, 1)
    assert out["group_num_attr_shape"] == 0
    table = ev.caption_table(out).splitlines()
    assert len(table) == 3 and table[2].lstrip().startswith("several boxes") and "1.0000 (n=1)" in table[2]
