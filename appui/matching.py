"""Phrase matching, one way for every tab that lights up regions (Search, Live): the phrase's length
check, the match threshold and the words that say nothing matched.

A region matches a phrase when their similarity reaches the model's calibrated match threshold
(``calibration.json`` beside the model, :mod:`regioncap.calibrate`), which the model carries as
``match_threshold`` from the moment it is read (:func:`regioncap.hub.read_model_folder`); a model without
one uses 0 (a negative similarity is no match).
"""

from __future__ import annotations

from dataclasses import dataclass

from regioncap.errors import RegionCapError

from appui.settings import MAX_PHRASE

THRESHOLD_HOW = ("the threshold separating true from false phrase-region pairs best on held-out data, "
                 "see `python -m regioncap.calibrate`")


def match_threshold(holder) -> float:
    """The similarity a true match reaches for the model ``holder`` has loaded; 0 without a calibration
    (or before the model has loaded): the loaded model's ``match_threshold``, read with its folder."""
    value = getattr(holder.model, "match_threshold", None)
    return 0.0 if value is None else float(value)


def check_phrase(phrase: str) -> str:
    """The phrase stripped; too long a phrase is a RegionCapError."""
    phrase = (phrase or "").strip()
    if len(phrase) > MAX_PHRASE:
        raise RegionCapError(f"That is too long for a phrase (over {MAX_PHRASE} characters): try 'a red box'.")
    return phrase


@dataclass
class Matches:
    """The regions matching a phrase, best first, with their similarity; ``note`` says why none did."""

    phrase: str
    matches: list  # [(Region, similarity)] at or above ``threshold``
    best: float | None  # the best similarity found (None: no region at all)
    threshold: float

    @property
    def note(self) -> str:
        if self.matches or self.best is None:
            return ""
        return (f"*No region matches this phrase well: the best similarity is {self.best:.2f}, below "
                f"{self.threshold:.2f}* ({THRESHOLD_HOW})")


def phrase_matches(result, phrase: str, top_k: int, threshold: float) -> Matches:
    """The ``top_k`` regions of ``result`` most similar to ``phrase`` that reach ``threshold``. Raises
    RegionCapError for too long a phrase, an empty one or one without a known word (``result.query``)."""
    phrase = check_phrase(phrase)
    found = result.query(phrase, top_k=max(1, int(top_k)))
    return Matches(phrase, [(r, sim) for r, sim in found if sim >= threshold], found[0][1] if found else None,
                   threshold)
