"""The Flickr30k Entities reader against hand-written expectations, and its errors.

The reference parser (the dataset authors' ``flickr30k_entities_utils.py``) is not run here: it is
not packaged and nothing may be downloaded. Every expected value below is written by hand from the
fixture files (tests/fixtures/flickr30k) or the inline text, by the reference parser's rules as
regioncap/data/flickr30k.py's docstring states them (phrase tags and word indices, every
``<name>`` of an object getting its box minus 1, ``nobox``/``scene`` from the flags, file order);
the comments name the rule each case pins down. Where our reader refuses what the reference would
crash on or accept, the expected value is our error, not the reference's behaviour.
"""

from pathlib import Path

import pytest

from regioncap.data.flickr30k import (ENTITY_TYPES, Annotation, Phrase, parse_annotation, parse_sentences,
                                      read_annotation, read_sentences, read_split)
from regioncap.errors import AnnotationError

FIXTURES = Path(__file__).parent / "fixtures" / "flickr30k"


def test_entity_types_are_the_detector_classes_in_order():
    assert ENTITY_TYPES == ["people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other"]


def test_sentences_fixture():
    sents = read_sentences(FIXTURES / "Sentences" / "1000001.txt")
    assert len(sents) == 5
    s0 = sents[0]
    assert s0.sentence == "Two young men in blue jackets ride the subway past a café sign ."
    assert s0.phrases == [
        Phrase("Two young men", 0, "101", ["people"]),
        Phrase("blue jackets", 4, "102", ["clothing"]),
        Phrase("the subway", 7, "103", ["vehicles", "scene"]),  # several types
        Phrase("a café sign", 10, "104", ["other"]),  # UTF-8
    ]
    words = s0.sentence.split(" ")
    for ph in s0.phrases:  # first_word_index points into the plain sentence
        assert " ".join(words[ph.first_word_index:ph.first_word_index + len(ph.text.split())]) == ph.text
    assert sents[2].phrases[0] == Phrase("Someone", 0, "0", ["notvisual"])
    assert sents[2].phrases[1] == Phrase("two guys", 5, "101", ["people"])
    assert sents[3].sentence == "A woman and two men travel to Zürich together ."
    assert sents[4].phrases == [Phrase("People", 0, "107", ["people"]),  # a one-word phrase
                                Phrase("the metro", 2, "103", ["vehicles", "scene"]),
                                Phrase("each other", 5, "0", ["notvisual"])]


def test_annotation_fixture():
    ann = read_annotation(FIXTURES / "Annotations" / "1000001.xml")
    assert (ann.width, ann.height, ann.depth) == (500, 375, 3)
    assert ann.boxes == {
        "101": [[11, 39, 149, 374], [159, 34, 289, 369]],  # one chain, two boxes; 1 subtracted
        "102": [[19, 119, 139, 259]],
        "105": [[299, 59, 419, 374]],  # one object, two <name>s: both chains get the box
        "107": [[299, 59, 419, 374]],
        "103": [[0, 0, 499, 374]],  # a box *and* a scene flag
    }
    assert list(ann.boxes) == ["101", "102", "105", "107", "103"]  # file order
    assert ann.boxes["105"] is not ann.boxes["107"] and ann.boxes["105"][0] is not ann.boxes["107"][0]
    assert ann.scene == ["103"]
    assert ann.nobox == ["104", "106"]


def test_image_without_boxes():
    ann = read_annotation(FIXTURES / "Annotations" / "1000002.xml")
    assert ann == Annotation(320, 240, 3, {}, ["201", "202"], ["203"])


def test_split_file():
    assert read_split(FIXTURES / "train.txt") == ["1000001", "1000002", "1000003"]


@pytest.mark.parametrize("text, expected", [
    # empty lines are skipped; CRLF and CR end lines as in Python's text mode
    ("a [/EN#1/people man] .\n\n[/EN#2/animals dog] runs .\n",
     [("a man .", [("man", 1)]), ("dog runs .", [("dog", 0)])]),
    ("a [/EN#1/people man] .\r\n\r\nb .\r", [("a man .", [("man", 1)]), ("b .", [])]),
    # a whitespace-only line is not empty: the reference keeps it as an empty sentence
    ("x .\n   \n", [("x .", []), ("", [])]),
    # a phrase still open at the end of the line: its words stay, the phrase is dropped
    ("[/EN#1/people a man] sees [/EN#2/other the sea", [("a man sees the sea", [("a man", 0)])]),
    # a lone "]" closes the phrase with an empty word; "[" inside a phrase is an ordinary word
    ("[/EN#1/other a ] b", [("a  b", [("a ", 0)])]),
    ("[/EN#1/other a [b c] d", [("a [b c d", [("a [b c", 0)])]),
    # runs of spaces and tabs separate words
    ("  [/EN#7/people  the\tman]   .  ", [("the man .", [("the man", 0)])]),
    # a tag ending in "]" is still only the tag: the phrase runs on to the next word ending in "]"
    ("[/EN#3/other] a b] c", [("a b c", [("a b", 0)])]),
])
def test_sentence_edge_cases(text, expected):
    got = parse_sentences(text)
    assert [(s.sentence, [(p.text, p.first_word_index) for p in s.phrases]) for s in got] == expected


def test_byte_order_mark_ignored(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff[/EN#1/people men] .\n".encode("utf-8"))
    assert [(p.text, p.chain_id) for p in read_sentences(path)[0].phrases] == [("men", "1")]


def test_tag_with_no_types_and_many_types():
    (s,) = parse_sentences("[/EN#5 it] and [/EN#6/vehicles/scene/other the bus] .")
    assert s.phrases == [Phrase("it", 0, "5", []), Phrase("the bus", 2, "6", ["vehicles", "scene", "other"])]


@pytest.mark.parametrize("line, problem", [
    ("a [ b .", "malformed phrase tag"),
    ("[/EN#/people a man] .", "malformed phrase tag"),
    ("[EN#1 man] .", "malformed phrase tag"),
])
def test_malformed_sentences(tmp_path, line, problem):
    path = tmp_path / "bad.txt"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=problem) as info:
        read_sentences(path)
    assert str(path) in str(info.value) and "line 1" in str(info.value)


def test_sentences_not_utf8_or_missing(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("[/EN#1/other a caf\u00e9] .".encode("latin-1"))
    with pytest.raises(AnnotationError, match="not UTF-8") as info:
        read_sentences(path)
    assert str(path) in str(info.value)
    with pytest.raises(AnnotationError, match="file not found"):
        read_sentences(tmp_path / "missing.txt")


XML = "<annotation><size><width>10</width><height>20</height><depth>3</depth></size>{}</annotation>"


def _box(names, box=(1, 2, 3, 4)):
    inner = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return "<object>" + "".join(f"<name>{n}</name>" for n in names) + f"<bndbox>{inner}</bndbox></object>"


def _flags(name, nobndbox, scene):
    return f"<object><name>{name}</name><nobndbox>{nobndbox}</nobndbox><scene>{scene}</scene></object>"


def test_annotation_edge_cases():
    body = (_box(["1"], (1, 1, 1, 1)) + _flags("2", 1, 1) + _flags("3", 0, 0) + _flags("2", 0, 1)
            + "<object><bndbox><xmin>1</xmin></bndbox></object>"  # no <name>: ignored, as in the reference
            + _box(["4"], (" 5 ", "6", "7", "8")))
    ann = parse_annotation(XML.format(body))
    assert ann.boxes == {"1": [[0, 0, 0, 0]], "4": [[4, 5, 6, 7]]}
    assert ann.scene == ["2", "2"]  # duplicates kept, file order
    assert ann.nobox == ["2"]  # flags are independent; chain 3 is in neither list


def test_annotation_size_variants():
    assert parse_annotation("<annotation><size><width>7</width><height>5</height></size></annotation>").depth == 3
    ann = parse_annotation("<?xml version='1.0' encoding='utf-8'?>" + XML.format(_box(["\u00e9"])).replace(
        "<depth>3</depth>", "<depth>1</depth>"))
    assert ann.depth == 1 and ann.boxes == {"\u00e9": [[0, 1, 2, 3]]}


@pytest.mark.parametrize("xml, problem", [
    ("<annotation><size><width>1</width>", "invalid XML"),
    ("", "invalid XML"),
    ("<annotation></annotation>", "no <size>"),
    ("<annotation><size><width>10</width></size></annotation>", "no <height>"),
    (XML.replace("<width>10</width>", "<width>ten</width>"), "not an integer"),
    (XML.format(_box(["1"], ("1.5", 2, 3, 4))), "not an integer"),
    (XML.format(_box(["1"], ("", 2, 3, 4))), "not an integer"),
    (XML.format("<object><name>1</name><bndbox><xmin>1</xmin></bndbox></object>"), "no <ymin>"),
    (XML.format("<object><name>1</name><scene>1</scene></object>"), "no <nobndbox>"),
    (XML.format("<object><name>1</name><nobndbox>1</nobndbox></object>"), "no <scene>"),
    (XML.format("<object><name> </name><nobndbox>1</nobndbox><scene>0</scene></object>"), "empty <name>"),
])
def test_malformed_annotations(tmp_path, xml, problem):
    path = tmp_path / "bad.xml"
    path.write_text(xml.replace("{}", ""), encoding="utf-8")
    with pytest.raises(AnnotationError, match=problem) as info:
        read_annotation(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_annotation(tmp_path):
    with pytest.raises(AnnotationError, match="file not found"):
        read_annotation(tmp_path / "nope.xml")
