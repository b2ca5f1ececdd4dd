"""regioncap.batch.analyze_loaded: batches of one image size, results in input order, bounded look-ahead."""

from pathlib import Path

import pytest
from PIL import Image

from regioncap.batch import LoadedFile, analyze_loaded


class Recorder:
    """Stands in for the model: records each analyze_batch call's image sizes; a result names its image."""

    def __init__(self):
        self.calls = []

    def analyze_batch(self, images, max_regions, score_threshold, captions=True):
        self.calls.append([im.size for im in images])
        return [f"result of {im.info['name']}" for im in images]


def item(name: str, size=None) -> LoadedFile:
    image = None
    if size is not None:
        image = Image.new("RGB", size)
        image.info["name"] = name
    return LoadedFile(Path(name), digest=name, image=image, error=None if size else f"{name}: not an image")


A, B, C = (40, 30), (30, 40), (50, 50)


def test_images_of_one_size_are_batched_and_results_come_back_in_order():
    items = [item("a1", A), item("b1", B), item("a2", A), item("bad"), item("b2", B), item("a3", A),
             item("b3", B), item("a4", A), item("c1", C)]
    model = Recorder()
    out = list(analyze_loaded(model, items, batch_size=2, window=8))
    assert [i.digest for i, _ in out] == [i.digest for i in items]
    assert [r for _, r in out] == [None if i.digest == "bad" else f"result of {i.digest}" for i in items]
    assert all(len(set(call)) == 1 for call in model.calls)  # one size a call
    assert model.calls == [[A, A], [B, B], [A, A], [B], [C]]  # full batches first; the rest at the end
    assert all(i.image is None for i, _ in out)  # decoded pictures freed once analysed


def test_a_full_window_runs_the_oldest_items_batch_even_if_not_full():
    items = [item("c1", C)] + [item(f"a{k}", A) for k in range(1, 4)]
    model = Recorder()
    first = next(iter(analyze_loaded(model, items, batch_size=8, window=3)))
    assert first[0].digest == "c1" and model.calls == [[C]]  # c1 did not wait for 7 more of its size


@pytest.mark.parametrize("batch_size", [1, 3])
def test_batch_size_one_is_one_image_a_call_in_order(batch_size):
    items = [item(f"x{k}", (A, B, C)[k % 3]) for k in range(7)]
    model = Recorder()
    out = list(analyze_loaded(model, items, batch_size=batch_size))
    assert [i.digest for i, _ in out] == [f"x{k}" for k in range(7)]
    assert sum(len(call) for call in model.calls) == 7
    assert all(len(call) <= batch_size and len(set(call)) == 1 for call in model.calls)


class Choking(Recorder):
    """A model that fails on any batch holding the picture named "poison"."""

    def analyze_batch(self, images, max_regions, score_threshold, captions=True):
        if any(im.info["name"] == "poison" for im in images):
            self.calls.append("raised")
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
        return super().analyze_batch(images, max_regions, score_threshold, captions)


def test_a_failing_picture_fails_alone_and_its_batch_mates_are_analysed():
    items = [item("a1", A), item("poison", A), item("a2", A), item("a3", A)]
    model = Choking()
    out = list(analyze_loaded(model, items, batch_size=4))
    assert [r for _, r in out] == ["result of a1", None, "result of a2", "result of a3"]
    assert out[1][0].error == "poison: analysis failed (RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB)"
    assert model.calls == ["raised", [A], "raised", [A], [A]]  # the batch, then each picture alone


def test_load_files_makes_a_display_size_preview_in_the_reading_threads(tmp_path):
    from regioncap.batch import load_files

    Image.new("RGB", (3000, 1000)).save(tmp_path / "wide.png")
    Image.new("RGB", (300, 200)).save(tmp_path / "small.png")
    wide, small = load_files([tmp_path / "wide.png", tmp_path / "small.png"], workers=2, preview=1600)
    assert (wide.image.size, wide.preview.size) == ((3000, 1000), (1600, 533))
    assert small.preview is small.image  # no copy of a picture already small enough
    assert next(load_files([tmp_path / "small.png"])).preview is None  # not asked for
