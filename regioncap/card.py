"""Reading model cards (README.md of a model folder): their ``## `` sections and ``- **key**: value`` items.

Used by the app's Model tab and by ``train/publish.py`` (which keeps a card's training data on rewrite).
"""

from __future__ import annotations

import re
from pathlib import Path

_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", flags=re.S)
_SECTION = re.compile(r"^## (.+?)[ \t]*\n(.*?)(?=^## |\Z)", flags=re.S | re.M)
_ITEM = re.compile(r"^- \*\*(.+?)\*\*: (.*)$", flags=re.M)


def card_sections(text: str) -> dict[str, str]:
    """``{"Training data": "...", "Metrics": "..."}``: each ``## `` heading and its stripped body (YAML
    front matter ignored; a repeated heading keeps its first body)."""
    sections: dict[str, str] = {}
    for title, body in _SECTION.findall(_FRONT_MATTER.sub("", text)):
        sections.setdefault(title.strip(), body.strip())
    return sections


def section_items(body: str) -> dict[str, str]:
    """The ``- **key**: value`` bullets of a section body, in order."""
    return dict(_ITEM.findall(body))


def read_card(directory) -> str:
    """The model card text of a model folder ("" when it has none)."""
    path = Path(directory) / "README.md"
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
