"""Wording of the shapes preset: five Flickr30k-markup sentences per image."""

from __future__ import annotations

import random

from .markup import _tag
from .world import PATTERN_AFTER, PLURAL, SHAPE_SYNONYMS, SHAPE_TYPES, SIZE_SYNONYMS, Obj

NOTVISUAL_PHRASES = ["this picture", "the image", "this image", "the picture", "this drawing"]


def _article(rng: random.Random, next_word: str) -> str:
    a = rng.choices(["a", "the", "one"], [0.62, 0.32, 0.06])[0]
    return "an" if a == "a" and next_word[0] in "aeiou" else a


def _object_words(rng: random.Random, o: Obj) -> list[str]:
    """SIZE COLOUR PATTERN SHAPE, each word sometimes dropped or varied."""
    words, after = [], []
    if o.size != "medium" and rng.random() < 0.8:
        words.append(o.size if rng.random() < 0.8 else rng.choice(SIZE_SYNONYMS[o.size]))
    if rng.random() < 0.95:
        words.append(o.colour)
    if o.pattern != "plain" and rng.random() < 0.8:
        if rng.random() < 0.75:
            words.append(o.pattern)
        else:
            after = PATTERN_AFTER[o.pattern].split()
    synonyms = SHAPE_SYNONYMS.get(o.shape)
    words.append(rng.choice(synonyms) if synonyms and rng.random() < 0.08 else o.shape)
    return [_article(rng, words[0])] + words + after


def _relation(rng: random.Random, a: Obj, b: Obj, allow_and: bool = True) -> str:
    """A word linking "a REL b"; above/below/left/right only when the boxes say so."""
    geo = []
    ty = 0.25 * min(a.box[3] - a.box[1], b.box[3] - b.box[1])
    tx = 0.25 * min(a.box[2] - a.box[0], b.box[2] - b.box[0])
    if a.box[3] <= b.box[1] + ty:
        geo.append("above")
    if b.box[3] <= a.box[1] + ty:
        geo.append("below")
    if a.box[2] <= b.box[0] + tx:
        geo.append("to the left of")
    if b.box[2] <= a.box[0] + tx:
        geo.append("to the right of")
    if geo and rng.random() < 0.45:
        return rng.choice(geo)
    return rng.choice(["next to", "beside", "near"] + ["and", "and"] * allow_and)


def _mentions(rng: random.Random, n: int) -> list[list[int]]:
    """For each of 5 sentences, the objects it mentions: 1-3 each, every object in >= 3 sentences."""
    for _ in range(1000):
        rows: list[list[int]] = [[] for _ in range(5)]
        for k in range(n):
            for s in rng.sample(range(5), rng.choices([3, 4, 5], [0.6, 0.3, 0.1])[0]):
                rows[s].append(k)
        if all(1 <= len(r) <= 3 for r in rows):
            break
    else:  # n in 3..4: a cyclic assignment always fits
        rows = [[k for k in range(n) if (s - k) % 5 < 3] for s in range(5)]
    for r in rows:
        rng.shuffle(r)
    return rows


def _sentences(rng: random.Random, objs: list[Obj], bg, chains: list[int]) -> tuple[list[str], dict]:
    """Five sentences; returns them and {(i, j): chain} of the object pairs named as a group."""
    scene_chain, groups, out = chains[len(objs)], {}, []
    rows = _mentions(rng, len(objs))
    with_scene = [rng.random() < 0.6 for _ in rows]
    if not any(with_scene):
        with_scene[rng.randrange(5)] = True
    for row, scene in zip(rows, with_scene):
        plural = len(row) > 1
        if len(row) == 2 and objs[row[0]].shape == objs[row[1]].shape and rng.random() < 0.4:
            a, b = objs[row[0]], objs[row[1]]
            key = tuple(sorted(row))
            groups.setdefault(key, chains[len(objs) + 1 + len(groups)])
            words = ["two"] + ([a.colour] if a.colour == b.colour and rng.random() < 0.7 else []) + [PLURAL[a.shape]]
            clause = [_tag(groups[key], SHAPE_TYPES[a.shape], words)]
        else:
            phr = [_tag(chains[k], SHAPE_TYPES[objs[k].shape], _object_words(rng, objs[k])) for k in row]
            if len(row) == 1:
                clause = phr
            elif len(row) == 2:
                rel = _relation(rng, objs[row[0]], objs[row[1]])
                clause, plural = [phr[0], rel, phr[1]], rel == "and"
            elif rng.random() < 0.5:
                clause = [phr[0], ",", phr[1], "and", phr[2]]
            else:
                clause = [phr[0], _relation(rng, objs[row[0]], objs[row[1]], False), phr[1], "and", phr[2]]
        s_words = [bg[0]] if rng.random() < 0.85 else []
        s_words.append(rng.choice(bg[1]))
        s_phrase = _tag(scene_chain, "scene", [rng.choice(["a", "the", "the"])] + s_words)
        where = [rng.choice(bg[3]), s_phrase] if scene else []
        there = ["there", "are" if plural else "is"]
        nv = _tag(0, "notvisual", rng.choice(NOTVISUAL_PHRASES).split())
        form = rng.random()
        if form < 0.2:
            words = ([nv, rng.choice(["shows", "contains", "has"])] if rng.random() < 0.6 else ["in", nv, ","] + there)
            words += clause + where
        elif scene and form < 0.4:
            words = [s_phrase, "with"] + clause
        elif form < 0.6:
            words = there + clause + where
        else:
            words = clause + where
        out.append(" ".join(words) + " .")
    return out, groups

