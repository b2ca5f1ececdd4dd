"""Flickr30k Entities (or the synthetic set, same layout) as a torch Dataset, plus batching.

One item is one image with everything the three training objectives need:

* detector targets: every distinct box once, labelled with its chain's entity type;
* regions: row 0 is the whole image, then one merged (union) box per chain that has boxes;
* phrases: the token ids of every phrase that points at a region (a boxed chain, or a scene
  chain -> the whole image), with its region and sentence index. Not-visual phrases (chain 0)
  and chains with neither boxes nor a scene flag are left out.

Chains are ordered as in the annotation file (``chain_regions``), so region indices are stable.
Boxes leave the data set in torchvision's continuous coordinates (``chain_boxes``, through
``flickr30k.to_continuous``), never as the files' inclusive pixel indices.

Orientation: an image's ``<size>`` is compared with its header when the data set is read. The
boxes are taken to be drawn on the stored pixels when the stored size matches (Flickr30k Entities
was annotated in 2015 browsers, which ignored EXIF orientation), so such an image is loaded
without EXIF rotation; when only the EXIF-rotated size matches, it is loaded upright; when neither
matches, the image is skipped (listed in ``.skipped``) with both sizes in the message.

A sample always carries its own identity: ``target["index"]`` and ``target["image_id"]`` name the
record whose pixels *and* annotations it holds, so a consumer takes ground truth from
``dataset.records[target["index"]]``, never from the index it asked for. The two differ only when
an image turns out corrupt on decoding: ``on_unreadable="next"`` (default, training: every batch
stays full and every DDP rank takes the same number of steps) returns the next readable image,
``on_unreadable="skip"`` (evaluation: no image counted twice) returns ``None``, which
``collate_fn`` drops.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from regioncap.data.flickr30k import (ENTITY_TYPES, NOTVISUAL, NOTVISUAL_CHAIN, Annotation, Phrase, Sentence,
                                      read_annotation, read_sentences, read_split, to_continuous)
from regioncap.data.image import load_image, probe_image_frame
from regioncap.data.transforms import build_transforms
from regioncap.data.vocab import PAD, Vocabulary
from regioncap.errors import AnnotationError, ImageError

logger = logging.getLogger(__name__)


class Record(NamedTuple):
    """One image of the data set: ``id, image_path, annotation, sentences``."""

    id: str
    image_path: Path
    annotation: Annotation
    sentences: list[Sentence]


def chain_boxes(record: Record) -> dict[str, list[list[float]]]:
    """Chain id -> its boxes in torchvision's continuous ``[x1, y1, x2, y2]`` (``to_continuous``), in file order."""
    return {chain: [to_continuous(b) for b in boxes] for chain, boxes in record.annotation.boxes.items()}


def chain_regions(record: Record) -> list[str]:
    """The chain ids that have boxes, in annotation-file order (region i + 1 of the image is chain i)."""
    return [chain for chain, boxes in record.annotation.boxes.items() if boxes]


def merged_box(boxes: list[list[float]]) -> list[float]:
    """The union [x1, y1, x2, y2] of a chain's boxes (the "merged" grounding protocol)."""
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def chain_labels(record: Record) -> dict[str, str]:
    """Chain id -> entity type: the first known type of the chain's first typed phrase ("other" if none)."""
    labels: dict[str, str] = {}
    for sent in record.sentences:
        for ph in sent.phrases:
            if ph.chain_id not in labels and ph.types and ph.types[0] in ENTITY_TYPES:
                labels[ph.chain_id] = ph.types[0]
    return labels


def is_notvisual(phrase: Phrase) -> bool:
    return phrase.chain_id == NOTVISUAL_CHAIN or NOTVISUAL in phrase.types


class Flickr30kEntities(Dataset):
    """Images, boxes and phrases of one split of a Flickr30k-Entities-layout folder.

    Args:
        root: folder with Images/, Annotations/, Sentences/ and <split>.txt.
        split: "train", "val" or "test" (any name with a <split>.txt).
        vocab: encodes phrases; None builds one from this split's phrases on first use (set
            ``.vocab`` to the training vocabulary for val/test).
        transforms: ``(PIL image, FloatTensor[N, 4]) -> (FloatTensor[3, H, W], FloatTensor[N, 4])``;
            None means ``build_transforms(train=False)``.
        strict: raise AnnotationError on the first malformed or missing file instead of logging
            and skipping the image (skipped files are listed in ``.skipped`` as (path, problem)).
        on_unreadable: what ``__getitem__`` does (not strict) with an image whose body turns out
            corrupt: "next" returns the next readable image, "skip" returns None.
    """

    def __init__(self, root, split: str, vocab: Vocabulary | None = None, transforms=None, strict: bool = False,
                 on_unreadable: str = "next"):
        if on_unreadable not in ("next", "skip"):
            raise ValueError(f"on_unreadable must be 'next' or 'skip', got {on_unreadable!r}")
        self.root, self.split, self.on_unreadable = Path(root), split, on_unreadable
        self.vocab, self.transforms, self.strict = vocab, transforms, strict
        self._default_transforms = build_transforms(train=False)
        split_file = self.root / f"{split}.txt"
        if not split_file.is_file():
            raise AnnotationError(f"{split_file}: split file not found")
        self.records: list[Record] = []
        self.skipped: list[tuple[str, str]] = []
        self._unreadable: set[Path] = set()
        self._stored_frame: set[str] = set()  # ids whose boxes fit the stored (not EXIF-rotated) pixels
        for image_id in read_split(split_file):
            record = self._read(image_id)
            if record is not None:
                self.records.append(record)
        self.ids = [r.id for r in self.records]
        if self.skipped:
            logger.warning("%s: skipped %d of %d images with malformed or missing files (first: %s: %s)",
                           split_file, len(self.skipped), len(self.skipped) + len(self.records), *self.skipped[0])

    def _read(self, image_id: str) -> Record | None:
        image_path = self.root / "Images" / f"{image_id}.jpg"
        ann_path = self.root / "Annotations" / f"{image_id}.xml"
        sent_path = self.root / "Sentences" / f"{image_id}.txt"
        try:
            if not image_path.is_file():
                raise AnnotationError(f"{image_path}: image file not found")
            try:  # the header only: an empty, non-image or oversized file is found now, not mid-training
                (w, h), orientation = probe_image_frame(image_path)
            except ImageError as e:
                raise AnnotationError(str(e)) from None
            record = Record(image_id, image_path, read_annotation(ann_path), read_sentences(sent_path))
            self._check_frame(record, (w, h), orientation)
            return record
        except AnnotationError as e:
            if self.strict:
                raise
            message = str(e)
            path = next((str(p) for p in (image_path, ann_path, sent_path) if message.startswith(f"{p}: ")), "")
            self.skipped.append((path, message[len(path) + 2:] if path else message))
            logger.debug("skipping %s", message)
            return None

    def _check_frame(self, rec: Record, stored: tuple[int, int], orientation: int) -> None:
        """Pick the pixel frame the annotation's ``<size>`` (and so its boxes) fits; AnnotationError if none."""
        size = (rec.annotation.width, rec.annotation.height)
        upright = stored[::-1] if orientation >= 5 else stored  # EXIF orientations 5-8 swap the axes
        if orientation != 1 and size == stored:
            self._stored_frame.add(rec.id)
            logger.info("%s: EXIF orientation %d ignored: the annotation's size %dx%d is the stored one",
                        rec.image_path, orientation, *size)
        elif size != upright:
            raise AnnotationError(f"{rec.image_path}: image is {upright[0]}x{upright[1]} (EXIF orientation "
                                  f"{orientation}, stored {stored[0]}x{stored[1]}) but its annotation's <size> "
                                  f"is {size[0]}x{size[1]}: the boxes would be wrong")

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Flickr30kEntities(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"

    def phrase_texts(self):
        """Every phrase text of every sentence of this split (the corpus a vocabulary is built from)."""
        return (ph.text for r in self.records for s in r.sentences for ph in s.phrases)

    def _vocab(self) -> Vocabulary:
        if self.vocab is None:
            self.vocab = Vocabulary.build(self.phrase_texts())
            logger.info("built a vocabulary of %d tokens from the %s split", len(self.vocab), self.split)
        return self.vocab

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict] | None:
        """(image FloatTensor[3, H, W] in [0, 1], target); see collate_fn for the target's keys.

        ``target["index"]`` is the index of the record the sample was made from. An image whose
        body turns out corrupt (its header was fine) raises AnnotationError with ``strict``;
        otherwise it is logged once and, by ``on_unreadable``, the next readable image is returned
        (its own index and annotations) or None.
        """
        self.records[index]  # IndexError past the end, as a sequence must (iteration stops on it)
        index %= len(self.records)
        for step in range(len(self.records)):
            i = (index + step) % len(self.records)
            rec = self.records[i]
            try:
                image = load_image(rec.image_path, exif=rec.id not in self._stored_frame)
                if image.size != (rec.annotation.width, rec.annotation.height):  # the header said otherwise
                    raise ImageError(f"{rec.image_path}: decoded as {image.width}x{image.height}, but its "
                                     f"annotation's <size> is {rec.annotation.width}x{rec.annotation.height}")
                return self._item(rec, image, i)
            except ImageError as e:
                if self.strict:
                    raise AnnotationError(str(e)) from None
                if rec.image_path not in self._unreadable:
                    self._unreadable.add(rec.image_path)
                    logger.warning("%s (%s)", e, "skipped" if self.on_unreadable == "skip" else
                                   "using the next image instead")
                if self.on_unreadable == "skip":
                    return None
        raise AnnotationError(f"{self.root / 'Images'}: no readable image in the {self.split} split")

    def _item(self, rec: Record, image, index: int) -> tuple[torch.Tensor, dict]:
        boxes = chain_boxes(rec)
        chains = chain_regions(rec)
        labels_by_chain = chain_labels(rec)
        distinct: dict[tuple, int] = {}
        labels: list[int] = []
        for chain in chains:
            for box in boxes[chain]:
                key = tuple(box)
                if key not in distinct:
                    distinct[key] = len(distinct)
                    labels.append(0)
                if labels[distinct[key]] == 0 and chain in labels_by_chain:
                    labels[distinct[key]] = ENTITY_TYPES.index(labels_by_chain[chain]) + 1
        labels = [lab or ENTITY_TYPES.index("other") + 1 for lab in labels]
        all_boxes = [list(k) for k in distinct] + [merged_box(boxes[c]) for c in chains]
        transform = self.transforms if self.transforms is not None else self._default_transforms
        image_t, boxes_t = transform(image, torch.tensor(all_boxes, dtype=torch.float32).reshape(-1, 4))
        h, w = image_t.shape[-2:]
        n = len(distinct)
        whole = torch.tensor([[0.0, 0.0, float(w), float(h)]])

        vocab = self._vocab()
        region_of = {c: i + 1 for i, c in enumerate(chains)}
        scene = set(rec.annotation.scene)
        phrases, regions, sentence_ids, boxed = [], [], [], []
        for s, sent in enumerate(rec.sentences):
            for ph in sent.phrases:
                if is_notvisual(ph):
                    continue
                if ph.chain_id in region_of:
                    region, has_box = region_of[ph.chain_id], True
                elif ph.chain_id in scene:
                    region, has_box = 0, False
                else:
                    continue
                phrases.append(torch.tensor(vocab.encode(ph.text), dtype=torch.long))
                regions.append(region)
                sentence_ids.append(s)
                boxed.append(has_box)
        target = {
            "boxes": boxes_t[:n],
            "labels": torch.tensor(labels, dtype=torch.int64),
            "region_boxes": torch.cat([whole, boxes_t[n:]]),
            "phrases": phrases,
            "phrase_region": torch.tensor(regions, dtype=torch.int64),
            "phrase_sentence": torch.tensor(sentence_ids, dtype=torch.int64),
            "phrase_boxed": torch.tensor(boxed, dtype=torch.bool),
            "num_sentences": len(rec.sentences),
            "image_id": rec.id,
            "index": index,
            "size": (int(h), int(w)),
        }
        return image_t, target


def pad_sequences(seqs: list[torch.Tensor], pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack LongTensor[L_i] rows into (LongTensor[B, L], lengths LongTensor[B]); L = max(1, max L_i)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    # A one-token row of padding, dropped again, keeps L >= 1 and makes an empty batch [0, 1].
    rows = [torch.as_tensor(s, dtype=torch.long) for s in seqs] + [torch.full((1,), pad, dtype=torch.long)]
    return pad_sequence(rows, batch_first=True, padding_value=pad)[:-1], lengths


def collate_fn(batch):
    """Batch ``(image, target)`` items into ``(images, targets, text)``; None items (skipped) are dropped.

    text:
        tokens LongTensor[P, L] (PAD-padded), lengths LongTensor[P],
        region LongTensor[P]: index into the batch's concatenated ``region_boxes``,
        sentence LongTensor[P]: global sentence id, sentence_image LongTensor[S]: image of each sentence
        (every sentence of every image counts, even one without usable phrases),
        boxed BoolTensor[P].
    """
    batch = [item for item in batch if item is not None]
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    seqs, region, sentence, boxed, sentence_image = [], [], [], [], []
    r_off = s_off = 0
    for k, t in enumerate(targets):
        ps = t["phrase_sentence"]
        n_sent = int(t.get("num_sentences", int(ps.max()) + 1 if len(ps) else 0))
        seqs.extend(t["phrases"])
        region.append(t["phrase_region"] + r_off)
        sentence.append(ps + s_off)
        boxed.append(t["phrase_boxed"])
        sentence_image.extend([k] * n_sent)
        r_off += len(t["region_boxes"])
        s_off += n_sent
    tokens, lengths = pad_sequences(seqs)

    def cat(parts, dtype):
        return torch.cat(parts).to(dtype) if parts else torch.zeros(0, dtype=dtype)

    text = {"tokens": tokens, "lengths": lengths, "region": cat(region, torch.long),
            "sentence": cat(sentence, torch.long), "sentence_image": torch.tensor(sentence_image, dtype=torch.long),
            "boxed": cat(boxed, torch.bool)}
    return images, targets, text
