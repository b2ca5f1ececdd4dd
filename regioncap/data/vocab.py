"""Tokenizer and vocabulary.

Tokens are lower-cased words from nltk's Treebank tokenizer, which needs no
downloaded data. The vocabulary reserves four ids: ``<pad>`` = 0, ``<start>`` = 1,
``<end>`` = 2, ``<unk>`` = 3; the other tokens follow by falling count, ties in
alphabetical order, so building twice from the same texts gives the same ids.

Stored as ``vocab.json``: ``{"tokens": [...every token, specials first...], "min_count": n}``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections import Counter
from pathlib import Path
from collections.abc import Iterable

from regioncap.errors import ModelFileError
from regioncap.fileio import write_json_atomic

PAD, START, END, UNK = 0, 1, 2, 3
PAD_TOKEN, START_TOKEN, END_TOKEN, UNK_TOKEN = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = [PAD_TOKEN, START_TOKEN, END_TOKEN, UNK_TOKEN]
VOCAB_FILE = "vocab.json"



def _treebank_tokenizer():
    """nltk's TreebankWordTokenizer, imported without nltk's package ``__init__`` where nltk is not loaded yet.

    ``import nltk`` loads every subpackage, scipy.stats among them: 1.6 s on the reference machine, more
    than torch, for a tokenizer that is four imports of pure Python (75 ms). A ``search`` call pays it on
    every run, so the two packages on the way are entered as bare namespaces for the time of the import
    and then removed; a later ``import nltk`` (BLEU in training) runs nltk's own ``__init__`` as usual.
    """
    if "nltk" in sys.modules:
        from nltk.tokenize import TreebankWordTokenizer

        return TreebankWordTokenizer()
    spec = importlib.util.find_spec("nltk")
    root = list(spec.submodule_search_locations)
    stubs = {"nltk": root, "nltk.tokenize": [str(Path(root[0]) / "tokenize")]}
    for name, path in stubs.items():
        sys.modules[name] = module = types.ModuleType(name)
        module.__path__ = path
    try:
        from nltk.tokenize.treebank import TreebankWordTokenizer
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return TreebankWordTokenizer()


_tokenizer = _treebank_tokenizer()
# plurals no suffix rule finds (Flickr30k's people words among them)
IRREGULAR_PLURALS = {"men": "man", "women": "woman", "children": "child", "people": "person", "feet": "foot",
                     "teeth": "tooth", "mice": "mouse", "geese": "goose", "oxen": "ox", "knives": "knife",
                     "leaves": "leaf", "wolves": "wolf", "shelves": "shelf"}


def tokenize(text: str) -> list[str]:
    """Lower-cased Treebank tokens: ``"A red, striped Box."`` -> ``["a", "red", ",", "striped", "box", "."]``."""
    return _tokenizer.tokenize(text.lower())


def singular(word: str, known) -> str | None:
    """The singular of an English plural noun, if it is one of ``known`` words; else None.

    Suffix rules (``-ies`` -> ``-y``, ``-es`` -> ``-``, ``-s`` -> ``-``, ``-men`` -> ``-man``) plus
    :data:`IRREGULAR_PLURALS`, checked against ``known`` so that only a word the vocabulary has is
    returned: ``"stars"`` -> ``"star"``, ``"crosses"`` -> ``"cross"``, ``"firemen"`` -> ``"fireman"``,
    ``"glass"`` -> None. Candidates shorter than three letters are refused (``"is"``, ``"as"``, ``"its"``).
    """
    if word in IRREGULAR_PLURALS:
        candidates = [IRREGULAR_PLURALS[word]]
    else:
        candidates = []
        if word.endswith("men"):
            candidates.append(word[:-3] + "man")
        if word.endswith("ies"):
            candidates.append(word[:-3] + "y")
        if word.endswith("es"):
            candidates.append(word[:-2])
        if word.endswith("s") and not word.endswith("ss"):
            candidates.append(word[:-1])
    return next((c for c in candidates if len(c) >= 3 and c != word and c in known), None)


class Vocabulary:
    """Word <-> id mapping with the special tokens at ids 0..3.

    ``token_to_id`` is a dict and ``id_to_token`` a list; :meth:`encode` maps unknown words to UNK.
    """

    PAD, START, END, UNK = PAD, START, END, UNK

    def __init__(self, tokens: Iterable[str] = (), min_count: int = 1):
        self.min_count = int(min_count)
        self.id_to_token = list(SPECIAL_TOKENS)
        self.token_to_id = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for tok in tokens:
            if tok not in self.token_to_id:
                self.token_to_id[tok] = len(self.id_to_token)
                self.id_to_token.append(tok)

    @classmethod
    def build(cls, texts: Iterable[str | list[str]], min_count: int = 1) -> Vocabulary:
        """Build from texts (strings are tokenized; lists are taken as tokens) keeping words seen >= min_count times."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text) if isinstance(text, str) else text)
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIAL_TOKENS),
                      key=lambda t: (-counts[t], t))
        return cls(kept, min_count=min_count)

    def __len__(self) -> int:
        return len(self.id_to_token)

    def __contains__(self, token: str) -> bool:
        return token in self.token_to_id

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and list(self.id_to_token) == list(other.id_to_token)

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, min_count={self.min_count})"

    def singular_ids(self) -> list[int]:
        """Per id, the id of its word's singular (:func:`singular`) where the vocabulary has it, else itself:
        ``ids[vocab.token_to_id["stars"]] == vocab.token_to_id["star"]``."""
        return [self.token_to_id.get(singular(t, self.token_to_id) or t, i) if i >= len(SPECIAL_TOKENS) else i
                for i, t in enumerate(self.id_to_token)]

    def encode(self, text_or_tokens: str | list[str], max_len: int | None = None) -> list[int]:
        """Token ids of a text or token list, no specials added; unknown words -> UNK; cut to max_len."""
        tokens = tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
        ids = [self.token_to_id.get(t, UNK) for t in tokens]
        return ids if max_len is None else ids[:max_len]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of `ids` joined by spaces: stops at <end>, skips <pad> and <start>; UNK shows as "<unk>"."""
        words = []
        for i in ids:
            i = int(i)
            if i == END:
                break
            if i in (PAD, START):
                continue
            words.append(self.id_to_token[i] if 0 <= i < len(self.id_to_token) else UNK_TOKEN)
        return " ".join(words)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"tokens": list(self.id_to_token), "min_count": self.min_count}

    @classmethod
    def from_dict(cls, data, source: str = "vocabulary") -> Vocabulary:
        """Rebuild from :meth:`to_dict`'s output; anything malformed -> ModelFileError naming `source`."""
        if not isinstance(data, dict) or set(data) != {"tokens", "min_count"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ModelFileError(f"{source}: expected keys ['min_count', 'tokens'], got {keys}")
        tokens, min_count = data["tokens"], data["min_count"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise ModelFileError(f"{source}: 'tokens' must be a list of non-empty strings")
        if tokens[:4] != SPECIAL_TOKENS:
            raise ModelFileError(f"{source}: 'tokens' must start with {SPECIAL_TOKENS}")
        if len(set(tokens)) != len(tokens):
            raise ModelFileError(f"{source}: 'tokens' has duplicates")
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ModelFileError(f"{source}: 'min_count' must be a positive integer, got {min_count!r}")
        return cls(tokens[4:], min_count=min_count)

    def save(self, path) -> Path:
        """Write vocab.json (`path` is the file, or a folder to write vocab.json into). Returns the file."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        return write_json_atomic(path, self.to_dict(), indent=0, ensure_ascii=False)

    @classmethod
    def load(cls, path) -> Vocabulary:
        """Read vocab.json (the file, or a folder holding it). Missing or malformed -> ModelFileError."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFileError(f"{path}: vocabulary file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{path}: not a readable JSON vocabulary ({e})") from None
        return cls.from_dict(data, str(path))
