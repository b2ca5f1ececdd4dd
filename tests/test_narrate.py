"""Scene narration: hand-computed boxes on a 300 × 300 picture (grid cells are 100 px)."""

import re

import pytest

from regioncap.models.results import AnalysisResult, Region
from regioncap.narrate import (came_into_view, describe, grid_cell, place, plural, reading_order,
                               region_label, size_word)


def region(box, caption):
    return Region(box=box, caption=caption, score=0.9, caption_score=-1.0, label="other")


@pytest.mark.parametrize("box, words", [
    ([10, 10, 40, 40], "at the top left"), ([120, 10, 180, 60], "at the top"),
    ([250, 0, 300, 50], "at the top right"), ([0, 120, 60, 180], "at the left"),
    ([110, 110, 190, 190], "in the middle"), ([220, 140, 300, 160], "at the right"),
    ([0, 250, 20, 300], "at the bottom left"), ([100, 210, 200, 290], "at the bottom"),
    ([210, 210, 290, 290], "at the bottom right"),
])
def test_every_cell_of_the_grid_has_its_words(box, words):
    assert place(box, 300, 300) == words


def test_the_cell_is_the_box_centres_and_edges_stay_inside():
    # Centre (99, 201): column 0, row 2; a box past the picture's edge still lands on the grid.
    assert grid_cell([90, 190, 108, 212], 300, 300) == (2, 0)
    assert grid_cell([280, -40, 340, 10], 300, 300) == (0, 2)


def test_size_words_relative_to_the_picture_unless_the_caption_says_it():
    assert size_word([0, 0, 200, 200], 300, 300) == "large"  # 44 % of the picture
    assert size_word([0, 0, 25, 25], 300, 300) == "small"  # 0.7 %
    assert size_word([0, 0, 100, 100], 300, 300) is None  # 11 %
    assert size_word([0, 0, 25, 25], 300, 300, "a small red circle") is None


def test_reading_order_is_row_by_row_then_left_to_right():
    boxes = [[200, 20, 260, 80],  # top right, centre y 50
             [10, 40, 70, 90],  # top left, a little lower (centre y 65): still read first in its row
             [120, 220, 180, 280],  # bottom
             [120, 120, 180, 180]]  # middle
    assert reading_order(boxes, 300, 300) == [1, 0, 3, 2]


def test_plurals_of_captions():
    assert plural("a small red circle", 2) == "two small red circles"
    assert plural("a man wearing a helmet", 3) == "three men wearing a helmet"
    assert plural("a box next to a tree", 2) == "two boxes next to a tree"
    assert plural("a striped butterfly", 2) == "two striped butterflies"
    assert plural("grass", 2) == "two regions of grass"
    assert plural("a red circle", 1) == "a red circle"


def test_plurals_of_captions_whose_head_noun_ends_in_ing():
    """A noun in -ing is the head, not the verb that ends it ("two talls building" before)."""
    assert plural("a tall building", 2) == "two tall buildings"
    assert plural("a white building with windows", 3) == "three white buildings with windows"
    assert plural("a gold ring", 2) == "two gold rings"
    assert plural("a man sitting on a bench", 2) == "two men sitting on a bench"  # a verb still ends it


def test_narration_groups_shared_captions_and_reads_in_order():
    regions = [region([150, 130, 170, 150], "a small red circle"),  # middle (centre 160, 140)
               region([210, 210, 290, 290], "a blue square"),  # bottom right
               region([20, 120, 40, 140], "A small red circle"),  # left: same caption, other case
               region([0, 0, 300, 120], "a grey sky")]  # top, 40 % of the picture
    text = describe(regions, 300, 300)
    assert text == ("Four regions: a grey sky, two small red circles and a blue square. "
                    "A grey sky, large, at the top. Two small red circles, at the left and in the middle. "
                    "A blue square at the bottom right.")


def test_narration_of_one_region_none_and_a_group_in_one_place():
    assert describe([], 300, 300) == "No regions found in this picture."
    assert describe([region([110, 110, 190, 190], "a green star")], 300, 300) == (
        "One region: a green star. A green star in the middle.")
    two = [region([0, 0, 40, 40], "a dog"), region([50, 50, 90, 90], "a dog")]
    assert describe(two, 300, 300).endswith("Two dogs, both at the top left.")


def test_narration_has_no_numbers_or_scores_and_mentions_every_caption():
    regions = [region([i * 30, i * 25, i * 30 + 40, i * 25 + 40], f"a shape number {w}")
               for i, w in enumerate("one two three four five six seven".split())]
    text = describe(regions, 300, 300)
    assert not re.search(r"\d", text)
    for r in regions:
        assert r.caption in text


def test_labels_and_announcements():
    r = region([220, 10, 290, 60], "a red checkered triangle")
    assert region_label(2, 5, r, 300, 300) == "Region 2 of 5, at the top right: a red checkered triangle"
    assert came_into_view("a red triangle", [0, 100, 50, 200], 300, 300) == (
        "a red triangle came into view at the left")
    assert came_into_view("a red triangle", [0, 100, 50, 200], 300, 300, present=True) == (
        "a red triangle comes into view at the left")


def test_analysis_result_describes_its_own_regions():
    import torch
    regions = [region([210, 210, 290, 290], "a blue square")]
    result = AnalysisResult(regions, torch.zeros(1, 4), torch.zeros(4), 300, 300, {}, model=None)
    assert result.describe() == "One region: a blue square. A blue square at the bottom right."
