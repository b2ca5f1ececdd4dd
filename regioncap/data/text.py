"""Sentence -> phrases: the chunker behind ``AnalysisResult.align`` and the collection search.

Text work on tokens (``regioncap.data.vocab.tokenize``), no model: which chunks a model knows is
``regioncap.models.results.sentence_phrases``'s check.
"""

from __future__ import annotations

# A fixed-list chunker: Karpathy used a dependency parse; phrases here end at a preposition, a
# common verb, a conjunction or punctuation, which is enough for "a man in a red shirt riding a bike".
SPLIT_WORDS = frozenset(
    "and or but while as with without in on at of to into onto from by for near next beside behind "
    "above below under over beneath between among around across through along against toward towards "
    "inside outside up down off than like left right front top bottom middle "
    "is are was were be been being has have had does do did there here that which who whose "
    "holding wearing sitting standing riding playing walking running looking carrying "
    "watching jumping lying laying eating talking using pulling pushing climbing throwing "
    "catching touching covering surrounded stands sits holds wears rides plays walks runs looks "
    "lies faces overlaps appears shows contains showing containing".split()
)
STOP_WORDS = frozenset(
    "a an the this that these those some its his her their our my your one another other each "
    "very also just".split()
)


def split_phrases(tokens: list[str]) -> list[list[str]]:
    """Cut a tokenized sentence into phrases at split words and punctuation.

    ``["a", "red", "circle", "next", "to", "a", "blue", "square", "."]`` ->
    ``[["a", "red", "circle"], ["a", "blue", "square"]]``. Split words and punctuation are dropped;
    empty chunks are removed. Which chunks carry a known content word is the caller's check.
    """
    chunks: list[list[str]] = [[]]
    for tok in tokens:
        if tok in SPLIT_WORDS or not any(ch.isalnum() for ch in tok):
            if chunks[-1]:
                chunks.append([])
        else:
            chunks[-1].append(tok)
    return [c for c in chunks if c]
