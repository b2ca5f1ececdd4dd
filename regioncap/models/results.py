"""What an analysis returns: regions with captions, and the cached vectors that answer phrase queries.

:class:`AnalysisResult` keeps the region vectors of one image so that :meth:`AnalysisResult.query`
and :meth:`AnalysisResult.align` only run the model's text encoder — no image work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from regioncap.data.vocab import tokenize
from regioncap.errors import RegionCapError, TextError
from regioncap.data.text import STOP_WORDS, split_phrases
from regioncap.models.alignment import region_phrase_similarity
from regioncap.narrate import describe

MAX_TEXT_CHARS = 2000  # longer input is cut before tokenizing (the encoder keeps max_len tokens anyway)
MAX_SENTENCE_TOKENS = 256  # align() reads at most this many tokens of a sentence


@dataclass
class Region:
    """One region: ``box`` [x1, y1, x2, y2] in the original image's pixels; ``score`` the detector's
    confidence (1.0 for user boxes); ``caption_score`` the score the caption was chosen by: its
    log-probability, or with reranking ``log_prob / (words + 1) ** alpha + weight * (v_i . s)``
    (:mod:`regioncap.models.rerank`; higher is better); ``label`` the entity type ("user" for user boxes)."""

    box: list[float]
    caption: str
    score: float
    caption_score: float
    label: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score"], d["caption_score"] = round(self.score, 4), round(self.caption_score, 4)
        return d


@dataclass
class PhraseAlignment:
    """A phrase of a sentence and its best region; ``region_index`` is None (and ``region`` None)
    when the whole image matches the phrase better than any region (e.g. "a grey background")."""

    phrase: str
    region_index: int | None
    region: Region | None
    similarity: float


class Alignment(list):
    """``list[PhraseAlignment]`` with ``.score``: Karpathy's S_kl = sum over phrases of the best similarity."""

    def __init__(self, items, score: float):
        super().__init__(items)
        self.score = score


class AnalysisResult:
    """What :meth:`RegionCaptioner.analyze` found in one image.

    Attributes:
        regions: list[Region], highest detector score first.
        vectors: FloatTensor[N, D] region vectors (row i belongs to ``regions[i]``), CPU.
        image_vector: FloatTensor[D], the whole-image region [0, 0, W, H].
        width, height: the image size in pixels.  timings_ms: dict of stage timings.

        candidates: per region, the captions it was chosen among (``CaptionCandidate``: caption,
            log_prob, similarity, score, member_similarity), best first — empty lists when the model does
            not rerank (``captioner.rerank_weight`` and ``rerank_length_alpha`` 0) and the region is not
            made up of several detected objects (``captioner.group_weight``), or captions were not asked for.

    ``query`` and ``align`` reuse the vectors and only run the model's text encoder.
    """

    def __init__(self, regions, vectors, image_vector, width, height, timings_ms, model, candidates=None):
        self.regions, self.vectors, self.image_vector = regions, vectors, image_vector
        self.width, self.height, self.timings_ms = width, height, timings_ms
        self.candidates = candidates if candidates is not None else [[] for _ in regions]
        self._model = model  # for its text side only

    @property
    def model(self):
        """The model that made this result (``analyze(objects=)`` checks it is the one analysing)."""
        return self._model

    def __repr__(self) -> str:
        return f"AnalysisResult({len(self.regions)} regions, {self.width}x{self.height})"

    def query(self, phrase: str, top_k: int = 3) -> list[tuple[Region, float]]:
        """The ``top_k`` regions most similar to ``phrase``: [(Region, similarity)], best first."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise RegionCapError(f"top_k must be an integer >= 1, got {top_k!r}")
        s = self._model.encode_text([phrase])[0]  # [D]
        if not self.regions:
            return []
        sims = self.vectors @ s  # [N]
        best = sims.topk(min(top_k, len(self.regions)))
        return [(self.regions[i], float(v)) for v, i in zip(best.values.tolist(), best.indices.tolist())]

    def align(self, sentence: str) -> Alignment:
        """Split ``sentence`` into phrases and give each its best region (or the whole image).

        Phrases come from :func:`sentence_phrases`; a phrase without a known content word is dropped.
        Raises TextError when the sentence is empty or no phrase is left.
        """
        phrases = sentence_phrases(sentence, self._model)
        return self.align_encoded(phrases, self._model.encode_text(phrases))

    def align_encoded(self, phrases: list[str], s: torch.Tensor) -> Alignment:
        """:meth:`align` for phrases already encoded: ``s`` FloatTensor[P, D], row t = ``phrases[t]``.

        The candidates are the whole image (row 0) and the regions, so S_kl here is the MaxSim of the
        phrase vectors against ``[image_vector, *vectors]`` (what the collection index stores per image).
        """
        candidates = torch.cat([self.image_vector[None], self.vectors])  # [1 + N, D]; row 0 = whole image
        best = region_phrase_similarity(candidates, s).max(dim=1)
        items = []
        for phrase, sim, idx in zip(phrases, best.values.tolist(), best.indices.tolist()):
            region_index = idx - 1 if idx > 0 else None
            region = self.regions[region_index] if region_index is not None else None
            items.append(PhraseAlignment(phrase, region_index, region, float(sim)))
        return Alignment(items, float(best.values.sum()))

    def describe(self) -> str:
        """The scene narration (:func:`regioncap.narrate.describe`): a summary, then each region in
        reading order with where it is — plain words for a screen reader or a speech voice."""
        return describe(self.regions, self.width, self.height)

    def to_dict(self) -> dict:
        """``{"width", "height", "regions": [...], "timings_ms"}`` as in the CLI's caption JSON."""
        return {"width": self.width, "height": self.height, "regions": [r.to_dict() for r in self.regions],
                "timings_ms": dict(self.timings_ms)}


def sentence_phrases(sentence: str, model) -> list[str]:
    """The phrases :meth:`AnalysisResult.align` scores for ``sentence`` (``model``: its vocab and max_len).

    Tokenized (at most MAX_SENTENCE_TOKENS), cut by :func:`~regioncap.data.text.split_phrases`;
    a phrase without a known content word is dropped, each is cut to the text encoder's max_len.
    Raises TextError when the sentence is empty or no phrase is left.
    """
    if not isinstance(sentence, str) or not sentence.strip():
        raise TextError("empty sentence: type a sentence, e.g. 'a red circle next to a blue square'")
    vocab, max_len = model.vocab, model.config.text_encoder.max_len
    tokens = tokenize(sentence[:MAX_TEXT_CHARS])[:MAX_SENTENCE_TOKENS]
    chunks = [c[:max_len] for c in split_phrases(tokens) if any(t not in STOP_WORDS and t in vocab for t in c)]
    if not chunks:
        raise TextError(f"no phrase of {sentence.strip()[:60]!r} has a word the model knows")
    return [" ".join(c) for c in chunks]
