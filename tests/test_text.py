"""The sentence chunker against hand-cut sentences."""

from regioncap.data.text import split_phrases
from regioncap.data.vocab import tokenize


def test_split_phrases():
    assert split_phrases(tokenize("A large red circle next to a small blue square.")) == [
        ["a", "large", "red", "circle"], ["a", "small", "blue", "square"]]
    assert split_phrases(tokenize("a man in a red shirt, riding a bike")) == [
        ["a", "man"], ["a", "red", "shirt"], ["a", "bike"]]
    assert split_phrases(tokenize(" , and . ")) == []
