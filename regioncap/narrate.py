"""Scene narration: what a screen reader or a text-to-speech voice says about an analysed picture.

Built from a result's regions alone (no model): one sentence of summary, then each region — or each
group of regions sharing a caption — in reading order with where it is::

    Five regions: two small red circles, a blue square, a green star and a grey cloud.
    A grey cloud, large, at the top. A green star at the top right. Two small red circles, at the
    left and in the middle. A blue square at the bottom right.

Where a region is comes from its box centre on a 3×3 grid of the picture ("at the top left", "in the
middle", "at the bottom right"); "large"/"small" is added when the box covers much or little of the
picture and the caption does not already say so. No pixel numbers, no scores: it is read aloud.

Reading order is row by row of the grid (top, middle, bottom), left to right inside a row by the box
centre: two regions at nearly the same height are read left to right even when one sits a few pixels
higher. The same words serve the CLI's ``"description"``, the app's picture alternatives, its Live
announcements and the video's audio-description track (:func:`came_into_view`).
"""

from __future__ import annotations

from collections.abc import Sequence

ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "middle", "right")
LARGE_AREA = 0.35  # a box covering at least this fraction of the picture is "large"
SMALL_AREA = 0.01  # ... at most this fraction, "small"
SIZE_WORDS = frozenset("large big huge small little tiny".split())
NUMBERS = "no one two three four five six seven eight nine ten eleven twelve".split()
ARTICLES = frozenset({"a", "an", "one"})
# A caption's head noun ends before its first connector: "a man wearing a helmet" -> "a man".
CONNECTORS = frozenset(
    "with without in on at of near next beside behind above below under over by from and or that "
    "who which while against along across inside outside between among around through".split()
)
IRREGULAR_PLURALS = {"man": "men", "woman": "women", "person": "people", "child": "children",
                     "foot": "feet", "tooth": "teeth", "mouse": "mice", "goose": "geese",
                     "sheep": "sheep", "fish": "fish", "deer": "deer", "leaf": "leaves",
                     "knife": "knives", "wife": "wives", "life": "lives", "shelf": "shelves"}
# Nouns ending in "-ing", which are not the verb that ends a head noun ("a tall building", "a gold ring").
ING_NOUNS = frozenset(
    "building ceiling clothing painting drawing awning railing ring string wing king swing thing sling "
    "spring earring wedding bedding stocking evening morning siding sibling duckling icing frosting "
    "lightning pudding dumpling filling opening landing crossing".split()
)


def grid_cell(box: Sequence[float], width: float, height: float) -> tuple[int, int]:
    """(row, column) in 0..2 of the box centre on a 3×3 grid of a ``width`` × ``height`` picture."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = min(2, max(0, int(3 * cx / width))) if width > 0 else 1
    row = min(2, max(0, int(3 * cy / height))) if height > 0 else 1
    return row, col


def place(box: Sequence[float], width: float, height: float) -> str:
    """Where ``box`` [x1, y1, x2, y2] is: "at the top left", "at the top", "in the middle", …"""
    row, col = grid_cell(box, width, height)
    if (row, col) == (1, 1):
        return "in the middle"
    if row == 1:
        return f"at the {COLUMNS[col]}"
    if col == 1:
        return f"at the {ROWS[row]}"
    return f"at the {ROWS[row]} {COLUMNS[col]}"


def size_word(box: Sequence[float], width: float, height: float, caption: str = "") -> str | None:
    """"large" or "small" relative to the picture, None when neither or the caption already says it."""
    if SIZE_WORDS & set(caption.lower().split()) or width <= 0 or height <= 0:
        return None
    area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / (width * height)
    return "large" if area >= LARGE_AREA else "small" if area <= SMALL_AREA else None


def reading_order(boxes: Sequence[Sequence[float]], width: float, height: float) -> list[int]:
    """Indices of ``boxes`` in reading order: grid row (top first), then the centre's x, then its y."""
    def key(i):
        box = boxes[i]
        return grid_cell(box, width, height)[0], (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, i
    return sorted(range(len(boxes)), key=key)


def count_word(n: int) -> str:
    return NUMBERS[n] if 0 <= n < len(NUMBERS) else str(n)


def plural(caption: str, n: int) -> str:
    """``caption`` for ``n`` of the same: "a small red circle" -> "two small red circles";
    "a man wearing a hat" -> "two men wearing a hat". A caption without a leading article
    ("grass") becomes "two regions of grass"."""
    words = caption.split()
    if n == 1:
        return caption
    if len(words) < 2 or words[0].lower() not in ARTICLES:
        return f"{count_word(n)} regions of {caption}"
    # The head noun is the word before the first connector or -ing verb after it ("a man wearing"); an
    # -ing noun ("a tall building") is the head itself.
    end = next((i for i, w in enumerate(words[2:], 2) if w.lower() in CONNECTORS or _ing_verb(w)),
               len(words))
    words[end - 1] = _plural_noun(words[end - 1])
    return " ".join([count_word(n), *words[1:]])


def _ing_verb(word: str) -> bool:
    low = word.lower()
    return low.endswith("ing") and low not in ING_NOUNS


def _plural_noun(word: str) -> str:
    low = word.lower()
    if low in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[low]
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def join_words(items: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def groups(regions, width: float, height: float) -> list[list[int]]:
    """Indices of ``regions`` grouped by caption (case-insensitive), each group in reading order,
    groups ordered by their first member in reading order."""
    order = reading_order([r.box for r in regions], width, height)
    by_caption: dict[str, list[int]] = {}
    for i in order:
        by_caption.setdefault(regions[i].caption.strip().lower(), []).append(i)
    return list(by_caption.values())  # dicts keep insertion order: first member's reading order


def describe_region(region, width: float, height: float) -> str:
    """One region in words: "a red circle, small, at the top left" (no sentence case, no full stop)."""
    size = size_word(region.box, width, height, region.caption)
    where = place(region.box, width, height)
    return f"{region.caption}, {size}, {where}" if size else f"{region.caption} {where}"


def describe(regions, width: float, height: float) -> str:
    """The narration of a picture's ``regions`` (objects with ``.box`` and ``.caption``)."""
    if not regions:
        return "No regions found in this picture."
    grouped = groups(regions, width, height)
    names = [plural(regions[g[0]].caption, len(g)) for g in grouped]
    n = len(regions)
    summary = f"{count_word(n)} region{'s' if n != 1 else ''}: {join_words(names)}"
    parts = [_sentence(summary)]
    for g, name in zip(grouped, names):
        if len(g) == 1:
            parts.append(_sentence(describe_region(regions[g[0]], width, height)))
            continue
        places = list(dict.fromkeys(place(regions[i].box, width, height) for i in g))
        where = f"{'both' if len(g) == 2 else 'all'} {places[0]}" if len(places) == 1 else join_words(places)
        parts.append(_sentence(f"{name}, {where}"))
    return " ".join(parts)


def region_label(position: int, count: int, region, width: float, height: float) -> str:
    """A region's accessible name: "Region 2 of 5, at the top right: a red checkered triangle"."""
    return f"Region {position} of {count}, {place(region.box, width, height)}: {region.caption}"


def came_into_view(caption: str, box: Sequence[float], width: float, height: float,
                   present: bool = False) -> str:
    """An announcement: "a red triangle came into view at the left" (``present``: "comes into view",
    the wording of a video's audio-description cue)."""
    verb = "comes" if present else "came"
    return f"{caption} {verb} into view {place(box, width, height)}"
