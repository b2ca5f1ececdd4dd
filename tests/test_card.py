"""regioncap.card and regioncap.cache: model-card sections, the analysis cache."""

from regioncap.cache import ResultCache, content_key
from regioncap.card import card_sections, read_card, section_items

CARD = """---
license: mit
---
# model

## Training data
- **data**: synthetic scenes
- **images**: 3,200

## Metrics
| bleu1 | 0.5 |
"""


def test_card_sections_and_items(tmp_path):
    sections = card_sections(CARD)
    assert list(sections) == ["Training data", "Metrics"]
    assert section_items(sections["Training data"]) == {"data": "synthetic scenes", "images": "3,200"}
    assert sections["Metrics"] == "| bleu1 | 0.5 |"
    assert card_sections("no sections") == {} and read_card(tmp_path) == ""
    (tmp_path / "README.md").write_text(CARD)
    assert read_card(tmp_path) == CARD


def test_result_cache_is_lru_by_content(tmp_path):
    cache = ResultCache(size=2)
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert content_key(a, 10, 0.5) == content_key(b, 10, 0.5) != content_key(a, 5, 0.5)
    from regioncap.index.files import read_file
    assert content_key(a)[0] == read_file(a)[1]  # one content hash for the app's cache and the index
    cache.put(1, "one")
    cache.put(2, "two")
    assert cache.get(1) == "one"  # 1 is now the most recent
    cache.put(3, "three")
    assert (cache.get(2), cache.get(1), cache.get(3), len(cache)) == (None, "one", "three", 2)
