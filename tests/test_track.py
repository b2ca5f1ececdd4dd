"""Region tracking across frames: IoU by hand, numbers that stay, captions that change only with the region."""

import pytest

from regioncap.track import RegionTracker, cosine, iou


def test_iou_and_cosine_by_hand():
    # [0,0,10,10] and [5,0,15,10]: overlap 5x10 = 50, union 100 + 100 - 50 = 150
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching edges
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # empty boxes: no division by zero
    # [0,0,4,4] inside [0,0,8,8]: 16 / 64
    assert iou([0, 0, 4, 4], [0, 0, 8, 8]) == pytest.approx(0.25)
    assert cosine([1, 0], [1, 1]) == pytest.approx(2 ** -0.5)
    assert cosine([0, 0], [1, 1]) == 0.0


def test_a_region_that_stays_keeps_its_number_and_caption():
    tracker = RegionTracker()
    a, b = [0, 0, 10, 10], [50, 50, 70, 70]
    first = tracker.update([a, b], ["a red circle", "a blue square"])
    assert [t.number for t in first] == [1, 2]
    # next frame: listed in the other order, each moved by 1 px (IoU 9x10/110 = 0.82 for a), new wording
    second = tracker.update([[51, 50, 71, 70], [1, 0, 11, 10]], ["a large blue square", "a red ball"])
    assert [t.number for t in second] == [2, 1]
    assert [t.caption for t in second] == ["a blue square", "a red circle"]  # the region did not change
    assert second[1] is first[0] and second[1].box == [1, 0, 11, 10] and second[1].seen == 2


def test_a_moved_region_gets_the_new_caption_but_keeps_its_number():
    tracker = RegionTracker(match_iou=0.3, change_iou=0.5)
    tracker.update([[0, 0, 10, 10]], ["a red circle"])
    # moved by 4 px: IoU with the last box 6x10 / 140 = 0.43 >= 0.3 (same track) but < 0.5 (changed)
    (t,) = tracker.update([[4, 0, 14, 10]], ["a large red circle"])
    assert (t.number, t.caption, t.caption_box) == (1, "a large red circle", [4, 0, 14, 10])
    # small drifts add up: 2 px (IoU 0.67 with the captioned box, kept), then 2 more (IoU 0.43: changed)
    (t,) = tracker.update([[6, 0, 16, 10]], ["a circle"])
    assert t.caption == "a large red circle"
    (t,) = tracker.update([[8, 0, 18, 10]], ["a red disc"])
    assert (t.number, t.caption) == (1, "a red disc")


def test_a_region_that_looks_different_gets_the_new_caption():
    tracker = RegionTracker(change_similarity=0.8)
    tracker.update([[0, 0, 10, 10]], ["a red circle"], vectors=[[1.0, 0.0]])
    (t,) = tracker.update([[0, 0, 10, 10]], ["a red ball"], vectors=[[0.9, 0.1]])  # cos 0.994: same look
    assert t.caption == "a red circle"
    (t,) = tracker.update([[0, 0, 10, 10]], ["a blue square"], vectors=[[0.5, 0.5]])  # cos 0.707 < 0.8
    assert (t.number, t.caption, t.caption_vector) == (1, "a blue square", [0.5, 0.5])


def test_missed_frames_new_regions_and_freed_numbers():
    tracker = RegionTracker(max_missed=1)
    tracker.update([[0, 0, 10, 10], [50, 0, 60, 10]], ["one", "two"])
    # region 1 missed once: still held, so a new region takes 3, not 1
    out = tracker.update([[50, 0, 60, 10], [100, 0, 110, 10]], ["two", "three"])
    assert [t.number for t in out] == [2, 3]
    (back,) = [t for t in tracker.update([[0, 0, 10, 10]], ["uno"]) if t.number == 1]  # back in view
    assert back.caption == "one" and back.missed == 0
    # 2 and 3 now missed once; after a second miss they are dropped and their numbers are free again
    tracker.update([[0, 0, 10, 10]], ["one"])
    assert sorted(t.number for t in tracker.tracks) == [1]
    out = tracker.update([[0, 0, 10, 10], [200, 0, 210, 10]], ["one", "a newcomer"])
    assert [(t.number, t.caption) for t in out] == [(1, "one"), (2, "a newcomer")]


def test_greedy_matching_prefers_the_larger_overlap_and_uses_each_track_once():
    tracker = RegionTracker(match_iou=0.3)
    tracker.update([[0, 0, 10, 10]], ["a"])
    # both overlap track 1: [1,0,11,10] IoU 0.82 wins, [3,0,13,10] IoU 0.54 becomes a new region
    out = tracker.update([[3, 0, 13, 10], [1, 0, 11, 10]], ["b", "c"])
    assert [(t.number, t.caption) for t in out] == [(2, "b"), (1, "a")]
    # below match_iou: [0,0,10,10] vs [7,0,17,10] is 3x10/170 = 0.18 -> a new region
    tracker = RegionTracker(match_iou=0.3)
    tracker.update([[0, 0, 10, 10]], ["a"])
    assert tracker.update([[7, 0, 17, 10]], ["b"])[0].number == 2


def test_empty_frames_extras_and_bad_input():
    tracker = RegionTracker(max_missed=0)
    assert tracker.update([], []) == []
    (t,) = tracker.update([[0, 0, 10, 10]], ["a"], extras=[{"score": 0.9}])
    assert t.extra == {"score": 0.9}
    assert tracker.update([], []) == [] and tracker.tracks == []  # max_missed 0: gone at once
    with pytest.raises(ValueError, match="one caption"):
        tracker.update([[0, 0, 1, 1]], [])
    tracker.update([[0, 0, 10, 10]], ["a"])
    tracker.reset()
    assert tracker.tracks == [] and tracker.update([[0, 0, 10, 10]], ["b"])[0].number == 1
