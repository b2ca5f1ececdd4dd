"""Synthetic scenes in the Flickr30k Entities layout: the offline stand-in data set.

``python -m regioncap.data.synthetic OUT --images N --seed S [--splits 0.8,0.1,0.1] [--preset shapes|photo]
[--workers W]`` writes
``OUT/Images/<id>.jpg``, ``OUT/Annotations/<id>.xml``, ``OUT/Sentences/<id>.txt`` and
``OUT/{train,val,test}.txt`` in exactly the real data set's formats, so every loader, trainer
and evaluator runs the same code on it. Same seed -> same bytes; image ``i`` depends only on
(seed, i), so a small set is a prefix of a larger one with the same seed.

The default ``shapes`` preset (:mod:`.shapes`; the demo model and the tests rely on its bytes):

* images 192-256 px wide, 144-192 px high; one of eight named backgrounds (solid or gradient,
  with faint noise, a blotchy texture and a few faint distractor lines). The background is the
  image's scene chain (an ``<object>`` with ``<scene>1</scene>`` and no box).
* 2-4 objects: shape x colour x size x pattern, no two identical in one image, slightly rotated
  (not circles), overlapping but each with >= 60 % of its area visible; colours too close to the
  background are not used. The box is the shape's full bounding box clipped to the image.
* The shapes world reuses Flickr30k's coarse type names, one per shape, so the detector's
  classes are the real ones: circle -> people, square -> vehicles, triangle -> animals,
  star -> instruments, hexagon -> clothing, cross -> bodyparts.
* Five sentences per image in Flickr30k markup (``[/EN#<chain>/<type> words]``, ending in
  " ."), each mentioning 1-3 objects, every object in at least three; phrases read
  SIZE COLOUR PATTERN SHAPE ("a large red striped circle") with words dropped, synonyms
  ("big", "tiny", "box", "ball") and "with stripes" after the shape now and then. Sentences
  often name the scene and sometimes hold a not-visual phrase (``[/EN#0/notvisual this picture]``).
  Two objects of one shape are sometimes named together ("two circles"): a chain with two
  boxes, and objects with two ``<name>`` tags, as in the real data.

The ``photo`` preset (:mod:`.photo`) writes Flickr30k-like pictures in the same formats: 500 px on
the long side with varied aspect ratios, 3-8 objects, textured backgrounds, shading, shadows,
occlusion and richer wording.

Modules: :mod:`.world` (objects, geometry, placement), :mod:`.drawing` and :mod:`.wording` (the
shapes preset), :mod:`.photo` and :mod:`.photo_wording`, :mod:`.markup` (file formats),
:mod:`.writer` (``generate``, worker processes), :mod:`.cli` (``python -m``).
"""

from .cli import main
from .drawing import _background, _fill, _secondary, render
from .markup import _tag, _xml
from .shapes import make_example
from .wording import NOTVISUAL_PHRASES, _article, _mentions, _object_words, _relation, _sentences
from .world import (ATTRIBUTE_WORDS, BACKGROUNDS, COLOURS, MIN_CONTRAST, MIN_IN_FRAME, MIN_VISIBLE,
                    PATTERN_AFTER, PATTERNS, PLURAL, SHAPE_SYNONYMS, SHAPE_TYPES, SIZE_SYNONYMS, SIZES, SS, Obj,
                    _mask, _place, _pose, _sample_objects, _unit_shape)
from .writer import PRESETS, _split_counts, generate, image_ids

__all__ = [  # the public names and the internals the tests and benchmarks reach for
    "main", "_background", "_fill", "_secondary", "render", "_tag", "_xml", "make_example", "NOTVISUAL_PHRASES",
    "_article", "_mentions", "_object_words", "_relation", "_sentences", "BACKGROUNDS", "COLOURS", "MIN_CONTRAST",
    "MIN_IN_FRAME", "MIN_VISIBLE", "PATTERN_AFTER", "PATTERNS", "PLURAL", "SHAPE_SYNONYMS", "SHAPE_TYPES",
    "SIZE_SYNONYMS", "SIZES", "SS", "Obj", "_mask", "_place", "_pose", "_sample_objects", "_unit_shape", "PRESETS",
    "_split_counts", "generate", "image_ids", "ATTRIBUTE_WORDS",
]
