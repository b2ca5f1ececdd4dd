"""The documentation: links that stay true, and the README's front matter as a Hugging Face Space reads it.

Every relative link in README.md, docs/*.md and benchmarks/README.md must name a file that exists, and a
``#fragment`` must match a heading of the page it points to, by GitHub's heading-anchor rules.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SPACE_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}  # Spaces config reference


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks and the front matter, inline code spans blanked."""
    lines = text.split("\n")
    start = 0
    if lines and lines[0].strip() == "---":  # YAML front matter
        start = next((i + 1 for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
    fence = None
    for number, line in enumerate(lines[start:], start + 1):
        match = FENCE.match(line)
        if match and (fence is None or match.group(1) == fence):
            fence = match.group(1) if fence is None else None
            continue
        if fence is None:
            yield number, line


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup dropped, lower case, punctuation removed, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).lower()  # HTML tags
    text = "".join(c for c in text if c.isalnum() or c in " -_")  # letters and digits of any script stay
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every fragment a link into ``path`` may use: its headings' anchors (repeats get -1, -2, …), HTML ids."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if match:
            slug = github_anchor(match.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    """'page:line: target (why)' for each relative link to a missing file or an unknown heading."""
    problems = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
                continue  # https:, mailto:, …: not checked here (no network)
            path_part, _, fragment = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}:{number}: {target}"
            if not linked.exists():
                problems.append(f"{where} (no such file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                problems.append(f"{where} (no heading #{fragment} in {linked.name})")
    return problems


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Use it", "use-it"),
    ("Caption choice and `caption_score`", "caption-choice-and-caption_score"),
    ("Training on Flickr30k (`--preset flickr30k`)", "training-on-flickr30k---preset-flickr30k"),
    ("regioncap — region captioning and phrase grounding", "regioncap--region-captioning-and-phrase-grounding"),
    ("6. Known pitfalls (measured on the development machine: 2 CPU cores, no GPU)",
     "6-known-pitfalls-measured-on-the-development-machine-2-cpu-cores-no-gpu"),
    ("The app's API", "the-apps-api"),
    ("Search [a collection](docs/x.md) *fast*", "search-a-collection-fast"),
    ("Größe und Ähnlichkeit", "größe-und-ähnlichkeit"),
])
def test_github_anchor_follows_githubs_rules(heading, anchor):
    assert github_anchor(heading) == anchor


def test_the_checker_finds_a_missing_file_an_unknown_heading_and_ignores_code(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Other page\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text("---\nlink: [x](front-matter.md)\n---\n# Page\n\n"
                    "[ok](other.md) [ok](other.md#twice-1) [ok](#page) [web](https://example.org/#nothing)\n"
                    "![ok](other.md) `[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n"
                    "[bad](missing.md) [bad](other.md#twice-2) [bad](#nowhere)\n")
    assert broken_links(page) == ["page.md:11: missing.md (no such file)",
                                  "page.md:11: other.md#twice-2 (no heading #twice-2 in other.md)",
                                  "page.md:11: #nowhere (no heading #nowhere in page.md)"]


def test_every_relative_link_in_the_docs_names_a_file_and_a_heading_that_exist():
    assert (ROOT / "docs").is_dir() and len(PAGES) >= 3
    problems = [problem for page in PAGES for problem in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {Path(target.partition("#")[0]).name for _, line in prose_lines(readme) for target in LINK.findall(line)
              if target.startswith("docs/")}
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= linked


def test_readme_front_matter_is_valid_space_metadata():
    from huggingface_hub import SpaceCard, SpaceCardData, metadata_load
    from packaging.requirements import Requirement
    from packaging.version import Version

    card = SpaceCard.load(ROOT / "README.md")  # raises on front matter that is not a YAML mapping
    data = card.data
    assert isinstance(data, SpaceCardData)
    assert metadata_load(ROOT / "README.md") == data.to_dict()
    assert data.sdk == "gradio" and (ROOT / data.app_file).is_file()
    gradio = next(Requirement(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if line.strip().startswith("gradio"))
    assert isinstance(data.sdk_version, str) and Version(data.sdk_version) in gradio.specifier
    # A string "3.x" or "3.x.x" (an unquoted 3.10 would be read as the number 3.1), within requires-python.
    assert isinstance(data.python_version, str) and re.fullmatch(r"3\.\d+(\.\d+)?", data.python_version)
    assert Version(data.python_version) >= Version("3.10")
    extra = data.to_dict()
    assert isinstance(extra.get("short_description"), str) and 0 < len(extra["short_description"]) <= 60
    assert extra["colorFrom"] in SPACE_COLOURS and extra["colorTo"] in SPACE_COLOURS
    assert data.title and data.license == "mit"


def test_readme_stays_short_and_keeps_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split("\n---\n", 1)[1]
    assert len(body.strip().splitlines()) <= 200
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -r requirements-dev.txt && python -m pytest\n" in ci
    assert "pip install -r requirements.txt && python app.py " in text
    assert "pip install -r requirements-dev.txt && python -m pytest " in text
    for picture in ("caption.png", "search.png", "collection.png"):
        assert f"](docs/images/{picture})" in text


def test_license_is_mit_as_pyproject_and_the_space_front_matter_say():
    import tomllib

    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in license_text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == {"text": "MIT"}


def test_the_readme_deploys_the_space_with_train_publish_and_cites_the_papers():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "git push space" not in readme and "python -m train.publish --space USER/" in readme
    assert "@inproceedings{karpathy2015" in readme and "@article{plummer2017" in readme
    assert "ruff" in (ROOT / "requirements-dev.txt").read_text()
