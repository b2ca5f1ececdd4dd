"""Tokenizer and vocabulary."""

import json

import pytest

from regioncap.data.vocab import END, PAD, START, UNK, Vocabulary, tokenize
from regioncap.errors import ModelFileError


def test_tokenize_lowercases_and_splits_punctuation_without_nltk_data():
    assert tokenize("A red, striped Box.") == ["a", "red", ",", "striped", "box", "."]
    assert tokenize("two men 's hats .") == ["two", "men", "'s", "hats", "."]
    assert tokenize("Café in Zürich") == ["café", "in", "zürich"]
    assert tokenize("") == []


def test_build_specials_order_and_min_count():
    v = Vocabulary.build(["a red circle", "a blue circle", "a red square", ["a", "tiny", "box"]], min_count=2)
    assert v.id_to_token[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert (PAD, START, END, UNK) == (0, 1, 2, 3) == (v.PAD, v.START, v.END, v.UNK)
    assert v.id_to_token[4:] == ["a", "circle", "red"]  # by count, ties alphabetical; singletons dropped
    assert len(v) == 7 and "red" in v and "blue" not in v
    assert Vocabulary.build(["x y", "y"]).id_to_token[4:] == ["y", "x"]


def test_encode_decode_round_trip():
    v = Vocabulary.build(["a large red circle next to the blue square ."])
    ids = v.encode("A large red circle next to the blue square .")
    assert START not in ids and END not in ids and UNK not in ids
    assert v.decode(ids) == "a large red circle next to the blue square ."
    assert v.encode("a purple circle") == [v.token_to_id["a"], UNK, v.token_to_id["circle"]]
    assert v.encode(["red", "zebra"]) == [v.token_to_id["red"], UNK]
    assert v.encode("a large red circle", max_len=2) == ids[:2]
    assert v.encode("") == []


def test_decode_stops_at_end_and_skips_pad_and_start():
    v = Vocabulary.build(["red circle"])
    r, c = v.token_to_id["red"], v.token_to_id["circle"]
    assert v.decode([START, r, PAD, c, END, r]) == "red circle"
    assert v.decode([UNK, c]) == "<unk> circle"
    assert v.decode([]) == ""
    assert v.decode([END]) == ""


def test_lookups_are_a_dict_and_a_list():
    v = Vocabulary.build(["red"])
    assert v.token_to_id["red"] == 4 and v.id_to_token[4] == "red"
    assert v.encode("red unseen") == [4, UNK]


def test_save_load_round_trip(tmp_path):
    v = Vocabulary.build(["a red circle", "a café"], min_count=1)
    path = v.save(tmp_path / "vocab.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == {"tokens", "min_count"} and data["tokens"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    w = Vocabulary.load(path)
    assert w == v and w.token_to_id == v.token_to_id and w.min_count == 1
    assert Vocabulary.load(tmp_path) == v  # a folder holding vocab.json
    assert Vocabulary.from_dict(v.to_dict()) == v


@pytest.mark.parametrize("content", [
    "not json",
    "[1, 2]",
    '{"tokens": ["<pad>", "<start>", "<end>", "<unk>"]}',
    '{"tokens": ["<pad>", "<start>", "<end>", "<unk>"], "min_count": 1, "extra": 1}',
    '{"tokens": ["<start>", "<pad>", "<end>", "<unk>"], "min_count": 1}',
    '{"tokens": ["<pad>", "<start>", "<end>", "<unk>", "a", "a"], "min_count": 1}',
    '{"tokens": ["<pad>", "<start>", "<end>", "<unk>", 5], "min_count": 1}',
    '{"tokens": ["<pad>", "<start>", "<end>", "<unk>"], "min_count": 0}',
    '{"tokens": ["<pad>", "<start>", "<end>", "<unk>"], "min_count": true}',
    '{"tokens": "abc", "min_count": 1}',
])
def test_malformed_vocab_file(tmp_path, content):
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ModelFileError) as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)


def test_missing_or_binary_vocab_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        Vocabulary.load(tmp_path / "none.json")
    (tmp_path / "vocab.json").write_bytes(b"\x80\x04\x95 pickle")
    with pytest.raises(ModelFileError):
        Vocabulary.load(tmp_path / "vocab.json")


def test_singular_ids_map_plurals_the_vocabulary_knows():
    from regioncap.data.vocab import singular

    v = Vocabulary(["two", "stars", "star", "crosses", "cross", "men", "man", "puppies", "puppy", "glass", "is",
                    "i", "as", "a", "firemen", "fireman", "circles"])
    ids = v.singular_ids()
    mapped = {v.id_to_token[i]: v.id_to_token[j] for i, j in enumerate(ids) if i != j}
    # "circles" has no "circle" here; "is"/"as" would give words under three letters; "glass" is no plural
    assert mapped == {"stars": "star", "crosses": "cross", "men": "man", "puppies": "puppy", "firemen": "fireman"}
    assert ids[:4] == [0, 1, 2, 3]
    assert singular("children", {"child"}) == "child" and singular("children", set()) is None
