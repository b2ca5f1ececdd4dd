"""Reader for the Flickr30k Entities files (Plummer et al., IJCV 2017).

Layout, exactly as distributed::

    ROOT/Images/<id>.jpg  ROOT/Annotations/<id>.xml  ROOT/Sentences/<id>.txt
    ROOT/train.txt  ROOT/val.txt  ROOT/test.txt

The two parsers give the same results as the dataset authors' reference parser
(``flickr30k_entities_utils.py``: ``get_sentence_data`` / ``get_annotations``,
the version that reads every ``<name>`` of an object) on every well-formed file:

* sentences: one caption per line, empty lines skipped; a phrase is written
  ``[/EN#<chain>/<type 1>/.../<type n> word ... word]`` and ends at the first
  word that ends with ``]``. ``first_word_index`` is the 0-based position of the
  phrase's first word in the plain sentence (words joined by single spaces).
  A phrase still open at the end of a line keeps its words in the sentence but
  is dropped, as the reference parser does.
* annotations: every child of ``<size>`` is an integer (``width`` and ``height``
  required, ``depth`` 3 when absent); every ``<name>`` of an ``<object>`` gets the
  object's first ``<bndbox>`` (1 subtracted from each coordinate, as the official
  tools do); an object without a box must carry integer ``<nobndbox>`` and
  ``<scene>`` flags, and each of its names goes to ``nobox`` / ``scene`` when the
  flag is > 0. Lists keep file order, duplicates included.

Where the reference parser would crash (invalid XML, a missing ``<size>``, a
non-integer coordinate, an object with neither box nor flags, a phrase tag
without a chain id, bytes that are not UTF-8) and where it would accept nonsense
(a tag not of the form ``/EN#<id>``, an empty ``<name>``), these functions raise
:class:`~regioncap.errors.AnnotationError` naming the file and the problem.
Files are read as UTF-8; a leading byte-order mark is ignored.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from regioncap.errors import AnnotationError

logger = logging.getLogger(__name__)

# The coarse entity types of Flickr30k Entities. The detector's classes are 1..8 in this order
# (0 is background). "notvisual" (chain 0) is not a class.
ENTITY_TYPES = ["people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other"]
NOTVISUAL = "notvisual"
NOTVISUAL_CHAIN = "0"


@dataclass
class Phrase:
    """One annotated phrase of a sentence.

    Attributes:
        text: the phrase's words joined by single spaces.
        first_word_index: 0-based position of its first word in ``Sentence.sentence.split(" ")``.
        chain_id: the coreference chain (a string of digits; "0" means not visual).
        types: the coarse types written in the tag, e.g. ``["vehicles", "scene"]``.
    """

    text: str
    first_word_index: int
    chain_id: str
    types: list[str] = field(default_factory=list)


@dataclass
class Sentence:
    """A caption: the plain text and its annotated phrases, in order."""

    sentence: str
    phrases: list[Phrase] = field(default_factory=list)


@dataclass
class Annotation:
    """The boxes of one image.

    Attributes:
        width, height, depth: from ``<size>``.
        boxes: chain id -> list of ``[x1, y1, x2, y2]`` (int, 0-based: 1 already subtracted).
        scene: chain ids marked as the whole scene (file order, duplicates kept).
        nobox: chain ids marked as having no box (file order, duplicates kept).
    """

    width: int
    height: int
    depth: int
    boxes: dict[str, list[list[int]]] = field(default_factory=dict)
    scene: list[str] = field(default_factory=list)
    nobox: list[str] = field(default_factory=list)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {e.start})") from None


def parse_sentences(text: str, source: str = "<string>") -> list[Sentence]:
    """Parse the contents of a ``Sentences/<id>.txt`` file (see the module docstring)."""
    sentences = []
    # The reference reads in text mode: universal newlines, so "\r\n" and "\r" end a line too.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        words: list[str] = []
        phrases: list[Phrase] = []
        current: list[str] = []
        open_tag: tuple[int, str, list[str]] | None = None
        for token in line.split():
            if open_tag is not None:
                if token[-1] == "]":
                    token = token[:-1]
                    current.append(token)
                    start, chain, types = open_tag
                    phrases.append(Phrase(" ".join(current), start, chain, types))
                    current, open_tag = [], None
                else:
                    current.append(token)
                words.append(token)
            elif token[0] == "[":
                parts = token.split("/")
                if len(parts) < 2 or not parts[1].startswith("EN#") or len(parts[1]) == 3:
                    raise AnnotationError(f"{source}: line {line_no}: malformed phrase tag {token!r}")
                open_tag = (len(words), parts[1][3:], parts[2:])
            else:
                words.append(token)
        if open_tag is not None:
            logger.debug("%s: line %d: phrase not closed with ']' (dropped)", source, line_no)
        sentences.append(Sentence(" ".join(words), phrases))
    return sentences


def read_sentences(path) -> list[Sentence]:
    """Read ``Sentences/<id>.txt``: one :class:`Sentence` per non-empty line.

    Raises:
        AnnotationError: the file is missing, not UTF-8, or has a phrase tag without a chain id.
    """
    path = Path(path)
    return parse_sentences(_read_text(path), str(path))


def _int(elem, source: str, what: str) -> int:
    text = elem.text
    try:
        return int(text)
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: {what} is not an integer: {text!r}") from None


def _child(elem, tag: str, source: str, what: str):
    child = elem.find(tag)
    if child is None:
        raise AnnotationError(f"{source}: {what} has no <{tag}>")
    return child


def parse_annotation(data: bytes | str, source: str = "<string>") -> Annotation:
    """Parse the contents of an ``Annotations/<id>.xml`` file (see the module docstring)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise AnnotationError(f"{source}: invalid XML ({e})") from None
    size = _child(root, "size", source, "<annotation>")
    dims = {child.tag: _int(child, source, f"<size><{child.tag}>") for child in size}
    for key in ("width", "height"):
        if key not in dims:
            raise AnnotationError(f"{source}: <size> has no <{key}>")
    ann = Annotation(dims["width"], dims["height"], dims.get("depth", 3))
    for i, obj in enumerate(root.findall("object")):
        names = obj.findall("name")
        ids = []
        for name in names:
            text = (name.text or "").strip()
            if not text:
                raise AnnotationError(f"{source}: object {i}: empty <name>")
            ids.append(name.text)
        if not ids:
            continue
        bndbox = obj.find("bndbox")
        if bndbox is not None:
            box = [_int(_child(bndbox, tag, source, f"object {i} <bndbox>"), source, f"object {i} <{tag}>") - 1
                   for tag in ("xmin", "ymin", "xmax", "ymax")]
            for chain in ids:
                ann.boxes.setdefault(chain, []).append(list(box))
        else:
            nobndbox = _int(_child(obj, "nobndbox", source, f"object {i} (no <bndbox>)"), source,
                            f"object {i} <nobndbox>")
            scene = _int(_child(obj, "scene", source, f"object {i} (no <bndbox>)"), source, f"object {i} <scene>")
            if nobndbox > 0:
                ann.nobox.extend(ids)
            if scene > 0:
                ann.scene.extend(ids)
    return ann


def to_continuous(box) -> list[float]:
    """A box as the files give it -> torchvision's continuous coordinates.

    Flickr30k Entities boxes are inclusive pixel indices (``read_annotation`` returns them 0-based:
    ``[x1, y1, x2, y2]`` covers pixels x1..x2 and y1..y2). torchvision's boxes are continuous
    ``[x1, y1, x2, y2]`` with ``0 <= x1 < x2 <= W``: the same pixels are ``[x1, y1, x2 + 1, y2 + 1]``.
    Every place that reads annotation boxes for training or evaluation converts through here.
    """
    x1, y1, x2, y2 = box
    return [float(x1), float(y1), float(x2) + 1.0, float(y2) + 1.0]


def read_annotation(path) -> Annotation:
    """Read ``Annotations/<id>.xml`` into an :class:`Annotation` (boxes 0-based).

    Raises:
        AnnotationError: the file is missing, not well-formed XML, or lacks a required field.
    """
    path = Path(path)
    return parse_annotation(_read_bytes(path), str(path))


def read_split(path) -> list[str]:
    """Read a split file (``train.txt`` ...): one image id per line, blank lines ignored."""
    path = Path(path)
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]
