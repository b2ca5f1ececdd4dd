"""The default ``shapes`` preset: small scenes (192-256 x 144-192 px) of 2-4 objects.

The demo model and the tests rely on its exact bytes: change nothing that alters the random
draws or their order.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from .drawing import render
from .markup import _xml
from .wording import _sentences
from .world import BACKGROUNDS, Obj, _place, _sample_objects


def make_example(seed: int, index: int, image_id: str) -> tuple[Image.Image, str, str]:
    """Image `index` of the set with `seed`: (RGB image, annotation XML text, sentences text)."""
    rng = random.Random(f"regioncap-synthetic:{seed}:{index}")
    nrng = np.random.default_rng([seed & 0xFFFFFFFF, index])
    w, h = rng.randint(192, 256), rng.randint(144, 192)
    bg = rng.choice(BACKGROUNDS)
    objs: list[Obj] = []
    while len(objs) < 2:
        objs = _place(rng, _sample_objects(rng, rng.randint(2, 4), bg[2]), w, h)
    chains = rng.sample(range(100000, 1000000), len(objs) + 6)  # objects, scene, a group per sentence at most
    sentences, groups = _sentences(rng, objs, bg, chains)
    image = render(rng, nrng, w, h, bg, objs)
    return image, _xml(image_id, w, h, objs, chains, groups), "\n".join(sentences) + "\n"

