"""Drawing regions: labels inside the image, readable on dark and light images, input untouched."""

import numpy as np
import pytest
from PIL import Image

from regioncap.models.model import Region
from regioncap.viz import PALETTE, draw_regions, label_rects


def regions():
    return [Region([2, 1, 40, 30], "a large red circle", 0.9, -1.0, "other"),
            Region([50, 40, 119, 79], "a very long caption " * 10, 0.8, -2.0, "other"),
            Region([0, 0, 120, 80], "the whole thing", 0.7, -3.0, "scene")]


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255)])
def test_draws_visibly_on_dark_and_light_images(colour):
    image = Image.new("RGB", (120, 80), colour)
    before = np.asarray(image).copy()
    out = draw_regions(image, regions())
    assert out.size == image.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(image), before)  # input untouched
    arr = np.asarray(out)
    assert (arr != before).any(axis=2).mean() > 0.05
    # the first box's colour and a dark outline are both drawn
    assert (arr == PALETTE[0]).all(axis=2).any() and (arr == (0, 0, 0)).all(axis=2).any()


def test_labels_stay_inside_the_image_and_do_not_overlap():
    image = Image.new("RGB", (120, 80), (40, 40, 40))
    rects, texts = label_rects(image.size, regions())
    assert texts[1].endswith("…")  # the long caption is shortened to fit
    assert len(rects) == 3
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 80
    for i in range(3):
        for j in range(i + 1, 3):
            a, b = rects[i], rects[j]
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_dict_regions_custom_labels_tiny_image_and_empty():
    image = Image.new("RGB", (16, 12), (200, 200, 200))
    out = draw_regions(image, [{"box": [-5, -5, 50, 50], "caption": "x"}], labels=["0.93"])
    assert out.size == (16, 12)
    assert all(0 <= c for r in label_rects(image.size, [{"box": [-5, -5, 50, 50]}])[0] for c in r)
    assert np.array_equal(np.asarray(draw_regions(image, [])), np.asarray(image))


def test_own_numbers_set_the_label_prefix_and_the_colour():
    image = Image.new("RGB", (120, 80), (128, 128, 128))
    boxes = [{"box": [5, 30, 40, 70], "caption": "a red circle"}, {"box": [60, 30, 110, 70], "caption": "a square"}]
    assert label_rects(image.size, boxes, numbers=[7, 2])[1] == ["7. a red circle", "2. a square"]
    arr = np.asarray(draw_regions(image, boxes, numbers=[7, 2]))
    assert (arr == PALETTE[6]).all(axis=2).any() and (arr == PALETTE[1]).all(axis=2).any()
    assert not (arr == PALETTE[0]).all(axis=2).any()  # index 0's colour is not used


def test_phrase_spans_find_the_typed_phrases_in_order():
    from regioncap.viz import phrase_spans

    sentence = "A Red  circle next to a red circle, and a zebra"
    spans = phrase_spans(sentence, ["a red circle", "a red circle", "a blue square"])
    assert spans == [(0, 13), (22, 34), None]
    assert [sentence[s:e] for s, e in spans[:2]] == ["A Red  circle", "a red circle"]


def test_spotlight_dims_all_but_the_boxes():
    from PIL import Image

    from regioncap.viz import spotlight

    im = Image.new("RGB", (20, 10), (200, 200, 200))
    out = spotlight(im, [[2, 2, 6, 6], [-5, -5, 1, 1], [30, 30, 40, 40]])  # one partly outside, one outside
    assert out.getpixel((3, 3)) == (200, 200, 200) and out.getpixel((0, 0)) == (200, 200, 200)
    assert out.getpixel((10, 5)) == (70, 70, 70)  # 200 * (1 - 0.65)
