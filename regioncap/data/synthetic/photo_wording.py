"""Wording of the ``photo`` preset: five Flickr30k-markup sentences with richer, more varied language.

Compared with the shapes preset: 1-4 objects per sentence (every object in 2-4 sentences), three
attribute orders ("a large red striped ball", "a big striped red ball", "a small ball that is
red"), colour modifiers, more synonyms, verbs ("rests", "can be seen"), fronted scene phrases,
and relations read from the picture: left/right/above/below from the boxes and "in front of",
"behind", "partly hiding" from the actual occlusion.
"""

from __future__ import annotations

import random

from .markup import _tag
from .world import PLURAL, SHAPE_TYPES, Obj

SHAPE_WORDS = {"circle": ["circle", "circle", "circle", "ball", "disc", "round shape"],
               "square": ["square", "square", "square", "box", "block"],
               "triangle": ["triangle", "triangle", "triangle", "triangular shape", "wedge"],
               "star": ["star", "star", "star", "star shape"],
               "hexagon": ["hexagon", "hexagon", "hexagon", "six-sided shape"],
               "cross": ["cross", "cross", "cross", "plus sign"]}
SIZE_WORDS = {"small": ["small", "small", "little", "tiny"], "medium": ["medium-sized"],
              "large": ["large", "large", "big", "huge"]}
COLOUR_MODIFIERS = ["bright", "dark", "light", "pale"]
PATTERN_AFTER = {"striped": ["with stripes", "with white stripes", "covered in stripes"],
                 "dotted": ["with dots", "with polka dots", "covered in dots"],
                 "checkered": ["with checks", "with a checkered pattern"]}
PATTERN_BEFORE = {"striped": ["striped"], "dotted": ["dotted", "spotted", "polka-dot"], "checkered": ["checkered"]}
VERBS = {False: ["sits", "rests", "lies", "stands", "is placed", "can be seen"],
         True: ["sit", "rest", "lie", "stand", "are placed", "can be seen"]}
NOTVISUAL_PHRASES = ["this picture", "the image", "this photo", "the photograph", "this shot", "the picture",
                     "a photo"]
OPENERS = [["here", "we", "see"], ["we", "can", "see"], ["you", "can", "see"], ["look", "at"]]


def _article(rng: random.Random, next_word: str) -> str:
    a = rng.choices(["a", "the", "one"], [0.64, 0.31, 0.05])[0]
    return "an" if a == "a" and next_word[0] in "aeiou" else a


def object_words(rng: random.Random, o: Obj) -> list[str]:
    """A noun phrase for one object in one of three attribute orders, words dropped now and then."""
    size = rng.choice(SIZE_WORDS[o.size]) if rng.random() < (0.75 if o.size != "medium" else 0.15) else None
    colour = [o.colour] if rng.random() < 0.92 else []
    if colour and rng.random() < 0.12:
        colour = [rng.choice(COLOUR_MODIFIERS)] + colour
    pattern = o.pattern if o.pattern != "plain" and rng.random() < 0.8 else None
    noun = rng.choice(SHAPE_WORDS[o.shape]).split()
    form = rng.random()
    if colour and not pattern and form < 0.12:  # "a small ball that is red"
        words = ([size] if size else []) + noun + ["that", "is"] + colour
    elif pattern and form < 0.35:  # "a big red ball with stripes"
        words = ([size] if size else []) + colour + noun + rng.choice(PATTERN_AFTER[pattern]).split()
    elif pattern and form < 0.5:  # "a big striped red ball"
        words = ([size] if size else []) + [rng.choice(PATTERN_BEFORE[pattern])] + colour + noun
    else:  # "a big red striped ball"
        words = ([size] if size else []) + colour + ([rng.choice(PATTERN_BEFORE[pattern])] if pattern else []) + noun
    return [_article(rng, words[0])] + words


def _relation(rng: random.Random, objs: list[Obj], i: int, j: int, front: dict, allow_and: bool = True) -> str:
    """A phrase linking "objs[i] REL objs[j]", true of the picture."""
    a, b = objs[i], objs[j]
    if (min(i, j), max(i, j)) in front and rng.random() < 0.6:  # the later-drawn one hides part of the other
        if j > i:
            return rng.choice(["behind", "partly hidden behind", "partly covered by"])
        return rng.choice(["in front of", "partly hiding", "overlapping"])
    geo = []
    ty = 0.25 * min(a.box[3] - a.box[1], b.box[3] - b.box[1])
    tx = 0.25 * min(a.box[2] - a.box[0], b.box[2] - b.box[0])
    if a.box[3] <= b.box[1] + ty:
        geo += ["above", "over"]
    if b.box[3] <= a.box[1] + ty:
        geo += ["below", "under", "beneath"]
    if a.box[2] <= b.box[0] + tx:
        geo += ["to the left of", "left of"]
    if b.box[2] <= a.box[0] + tx:
        geo += ["to the right of", "right of"]
    if geo and rng.random() < 0.5:
        return rng.choice(geo)
    return rng.choice(["next to", "beside", "near", "close to", "by"] + ["and", "and", "and"] * allow_and)


def mentions(rng: random.Random, n: int) -> list[list[int]]:
    """For each of 5 sentences, the objects it mentions: 1-4 each, every object in 2-4 sentences."""
    for _ in range(200):
        rows: list[list[int]] = [[] for _ in range(5)]
        for k in range(n):
            for s in rng.sample(range(5), rng.choices([2, 3, 4], [0.5, 0.35, 0.15])[0]):
                rows[s].append(k)
        if all(1 <= len(r) <= 4 for r in rows):
            break
    else:  # object k in sentences 2k and 2k+1 (mod 5): rows of 1-4 for n in 3..8
        rows = [[k for k in range(n) if s in ((2 * k) % 5, (2 * k + 1) % 5)] for s in range(5)]
    for r in rows:
        rng.shuffle(r)
    return rows


def _clause(rng, objs, row, chains, groups, front) -> tuple[list[str], bool]:
    """The objects of one sentence joined into a clause; returns (words, plural subject)."""
    n_obj = len(objs)
    if len(row) == 2 and objs[row[0]].shape == objs[row[1]].shape and rng.random() < 0.4:
        a, b = objs[row[0]], objs[row[1]]
        key = tuple(sorted(row))
        groups.setdefault(key, chains[n_obj + 1 + len(groups)])
        words = ["two"] + ([a.colour] if a.colour == b.colour and rng.random() < 0.7 else []) + [PLURAL[a.shape]]
        return [_tag(groups[key], SHAPE_TYPES[a.shape], words)], True
    phr = [_tag(chains[k], SHAPE_TYPES[objs[k].shape], object_words(rng, objs[k])) for k in row]
    if len(row) == 1:
        return phr, False
    if len(row) == 2:
        rel = _relation(rng, objs, row[0], row[1], front)
        return [phr[0], rel, phr[1]], rel == "and"
    if len(row) == 3:
        if rng.random() < 0.5:
            return [phr[0], ",", phr[1], "and", phr[2]], True
        return [phr[0], _relation(rng, objs, row[0], row[1], front, False), phr[1], "and", phr[2]], True
    if rng.random() < 0.5:
        return [phr[0], ",", phr[1], ",", phr[2], "and", phr[3]], True
    return ([phr[0], _relation(rng, objs, row[0], row[1], front, False), phr[1], "and", phr[2],
             _relation(rng, objs, row[2], row[3], front, False), phr[3]], True)


def photo_sentences(rng: random.Random, objs: list[Obj], scene, chains: list[int],
                    front: dict) -> tuple[list[str], dict]:
    """Five sentences; returns them and {(i, j): chain} of the object pairs named as a group."""
    scene_chain, groups, out = chains[len(objs)], {}, []
    rows = mentions(rng, len(objs))
    with_scene = [rng.random() < 0.65 for _ in rows]
    if not any(with_scene):
        with_scene[rng.randrange(5)] = True
    for row, has_scene in zip(rows, with_scene):
        clause, plural = _clause(rng, objs, row, chains, groups, front)
        s_words = [rng.choice(scene.adjectives)] if rng.random() < 0.6 else []
        s_words.append(rng.choice(scene.nouns))
        art = "the" if rng.random() < 0.5 else ("an" if s_words[0][0] in "aeiou" else "a")
        s_phrase = _tag(scene_chain, "scene", [art] + s_words)
        where = [rng.choice(scene.preps), s_phrase] if has_scene else []
        nv = _tag(0, "notvisual", rng.choice(NOTVISUAL_PHRASES).split())
        there = ["there", "are" if plural else "is"]
        form = rng.random()
        if form < 0.12:
            words = [nv, rng.choice(["shows", "contains", "features", "has"])] + clause + where
        elif form < 0.2:
            words = ["in", nv, ","] + there + clause + where
        elif has_scene and form < 0.32:
            words = [s_phrase, "with"] + clause
        elif has_scene and form < 0.45:
            words = where + [","] + clause + [rng.choice(VERBS[plural])]
        elif form < 0.6:
            words = clause + [rng.choice(VERBS[plural])] + where
        elif form < 0.7:
            words = rng.choice(OPENERS) + clause + where
        elif form < 0.82:
            words = there + clause + where
        else:
            words = clause + where
        out.append(" ".join(words) + " .")
    return out, groups
