"""regioncap.index: Qdrant's MaxSim is S_kl; stored scores are align()'s and query()'s; incremental, safe updates."""

import shutil

import pytest
import torch
from PIL import Image, ImageDraw

from regioncap.errors import SearchIndexError, TextError
from regioncap.index import RegionIndex
from regioncap.index.files import expand_paths, point_id
from regioncap.models.identity import model_identity
from regioncap.index.store import Collections, open_client
from regioncap.models.alignment import image_sentence_scores, region_phrase_similarity

SENTENCE = "a large red circle next to the small blue square"


def scene(path, seed: int, size=(96, 72)):
    """A small picture with a few coloured shapes (different for every seed)."""
    g = torch.Generator().manual_seed(seed)
    im = Image.new("RGB", size, tuple(int(c) for c in torch.randint(60, 200, (3,), generator=g)))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x, y = (int(v) for v in torch.randint(0, 60, (2,), generator=g))
        colour = tuple(int(c) for c in torch.randint(0, 256, (3,), generator=g))
        (d.ellipse if int(torch.randint(2, (1,), generator=g)) else d.rectangle)((x, y, x + 30, y + 25), fill=colour)
    im.save(path, format="JPEG" if str(path).endswith(".jpg") else "PNG")
    return path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    paths = [scene(folder / "a.png", 1), scene(folder / "b.jpg", 2), scene(folder / "sub" / "c.png", 3)]
    return folder, paths


def open_index(location, model, **kw):
    return RegionIndex(location, model, score_threshold=0.0, **kw)


def test_qdrant_max_sim_equals_image_sentence_scores_on_random_data():
    from qdrant_client import models

    g = torch.Generator().manual_seed(0)
    dim, counts = 16, [1, 3, 5, 2, 7, 4]  # regions per image (row 0 plays the whole image)
    v = torch.nn.functional.normalize(torch.randn(sum(counts), dim, generator=g), dim=1)
    region_image = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    sentences = [torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1) for n in (1, 2, 4)]
    s = torch.cat(sentences)
    phrase_sentence = torch.repeat_interleave(torch.arange(len(sentences)), torch.tensor([len(x) for x in sentences]))
    expected = image_sentence_scores(region_phrase_similarity(v, s), region_image, phrase_sentence,
                                     len(counts), len(sentences))  # [K, S]
    store = Collections(open_client(":memory:", create=True))
    store.create(dim, {"model_id": "random"})
    rows = v.split(counts)
    store.client.upsert(store.images, [models.PointStruct(id=k, vector=rows[k].tolist()) for k in range(len(counts))])
    for j, q in enumerate(sentences):
        found = store.client.query_points(store.images, query=q.tolist(), limit=len(counts)).points
        got = torch.tensor([p.score for p in sorted(found, key=lambda p: p.id)])
        torch.testing.assert_close(got, expected[:, j], atol=1e-5, rtol=0)
        assert [p.id for p in found] == expected[:, j].argsort(descending=True).tolist()


def test_scores_are_exactly_align_and_query_of_the_stored_regions(tiny_model, photos, tmp_path):
    folder, paths = photos
    with open_index(tmp_path / "index", tiny_model) as index:
        counts = index.add([folder])
        assert (counts["added"], counts["failed"], len(index)) == (3, [], 3)
        hits = index.search(SENTENCE, top_k=3)
        assert sorted(h.path for h in hits) == sorted(str(p.resolve()) for p in paths)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        analysed = {h.path: tiny_model.analyze(h.path, max_regions=10, score_threshold=0.0) for h in hits}
        for hit in hits:
            fresh = analysed[hit.path].align(SENTENCE)
            assert hit.score == fresh.score  # exactly, not approximately
            assert [(m.phrase, m.similarity, m.region_index) for m in hit.matches] == \
                   [(a.phrase, a.similarity, a.region_index) for a in fresh]
        regions = index.search("a red circle", by="regions", top_k=5)
        assert len(regions) == 5 and [r.similarity for r in regions] == sorted((r.similarity for r in regions),
                                                                               reverse=True)
        for r in regions:
            same = [sim for region, sim in analysed[r.path].query("a red circle", top_k=10) if region.box == r.box]
            assert same == [r.similarity]
        assert len(index.search(SENTENCE, top_k=1)) == 1


def test_reindex_is_a_no_op_changes_are_updated_and_prune_forgets(tiny_model, photos, tmp_path):
    folder, paths = photos
    location = tmp_path / "index"
    with open_index(location, tiny_model) as index:
        index.add([folder])
    with open_index(location, tiny_model) as index:  # reopened from disk
        assert index.add([folder]) == {"added": 0, "updated": 0, "unchanged": 3, "failed": []}
        scene(paths[0], 99)  # new content under a known path
        shutil.copy(paths[1], folder / "copy-of-b.jpg")  # known content under a new path: stored once
        assert index.add([folder]) == {"added": 1, "updated": 1, "unchanged": 2, "failed": []}
        assert len(index) == 3
        assert sorted(index.search(SENTENCE, top_k=10)[0].paths)  # every hit names its files
        stored = {i["hash"]: i["paths"] for i in index.images()}
        assert sorted(len(p) for p in stored.values()) == [1, 1, 2]
        paths[2].unlink()
        (folder / "copy-of-b.jpg").unlink()
        assert index.prune() == 1  # c.png's image; b.jpg's keeps its other path
        assert len(index) == 2 and all(len(p) == 1 for p in (i["paths"] for i in index.images()))
        assert index.remove([folder]) == 2 and len(index) == 0
        assert index.client.count(index.store.regions, exact=True).count == 0


def test_other_settings_reanalyse(tiny_model, photos, tmp_path):
    folder, _ = photos
    with open_index(tmp_path / "index", tiny_model) as index:
        index.add([folder])
    with RegionIndex(tmp_path / "index", tiny_model, max_regions=1, score_threshold=0.0) as index:
        assert index.add([folder])["updated"] == 3
        assert all(len(i["regions"]) <= 1 for i in index.images())
        assert index.client.count(index.store.regions, exact=True).count == sum(
            len(i["regions"]) for i in index.images())


def test_files_are_recognised_by_content(tiny_model, photos, tmp_path):
    folder, _ = photos
    (folder / "notes.jpg").write_text("not a picture")
    scene(folder / "picture.txt", 6)  # a PNG whatever its name says
    scene(folder / "no-extension", 5)
    (folder / ".hidden.png").write_bytes(b"junk")  # hidden files in a folder are skipped
    with open_index(tmp_path / "index", tiny_model) as index:
        counts = index.add([folder, tmp_path / "missing"])
        failed = {f["path"]: f["error"] for f in counts["failed"]}
        assert set(failed) == {str((folder / "notes.jpg").resolve()), str(tmp_path / "missing")}
        assert "not an image" in failed[str((folder / "notes.jpg").resolve())]
        assert counts["added"] == 5 and len(index) == 5


def test_another_model_is_refused_by_name(tiny_model, make_model, photos, tmp_path):
    tiny_model.name_or_path = "models/first"
    with open_index(tmp_path / "index", tiny_model) as index:
        index.add([photos[0]])
    other = make_model(seed=1)
    other.name_or_path = "models/second"
    assert model_identity(other) != model_identity(tiny_model)
    assert model_identity(make_model(seed=0)) == model_identity(tiny_model)
    with pytest.raises(SearchIndexError, match="built by the model models/first.*not by models/second"):
        RegionIndex(tmp_path / "index", other)
    with RegionIndex(tmp_path / "index", tiny_model) as index:  # the refusal released the folder
        assert len(index) == 3


def test_half_written_image_is_repaired(tiny_model, photos, tmp_path):
    folder, paths = photos
    with open_index(tmp_path / "index", tiny_model) as index:
        index.add([folder])
        # what a kill between the region write and the image write leaves: regions, no image point
        digest = index.images()[0]["hash"]
        index.client.delete(index.store.images, points_selector=[point_id(digest)])
        assert len(index) == 2
        assert index.add([folder]) == {"added": 1, "updated": 0, "unchanged": 2, "failed": []}
        assert index.client.count(index.store.regions, exact=True).count == sum(
            len(i["regions"]) for i in index.images())


def test_one_process_per_folder_and_clear_errors(tiny_model, photos, tmp_path):
    with open_index(tmp_path / "index", tiny_model):
        with pytest.raises(SearchIndexError, match="open in another process"):
            RegionIndex(tmp_path / "index", tiny_model)
    with pytest.raises(SearchIndexError, match="no index there"):
        RegionIndex(tmp_path / "nothing", tiny_model, create=False)
    assert not (tmp_path / "nothing").exists()
    with pytest.raises(SearchIndexError, match="does not answer"):
        RegionIndex("http://127.0.0.1:9", tiny_model)
    with open_index(":memory:", tiny_model) as index:
        index.add([photos[0]])
        for text, message in [("", "empty"), ("zebra quokka", "knows"), ("red " * 400, "at most")]:
            with pytest.raises(TextError, match=message):
                index.search(text)
        with pytest.raises(Exception, match="top_k"):
            index.search("a red circle", top_k=0)


def test_expand_paths_is_sorted_absolute_and_deduplicated(photos, tmp_path):
    folder, paths = photos
    files, missing = expand_paths([folder, paths[0], tmp_path / "nope"])
    assert files == sorted(p.resolve() for p in paths)
    assert missing == [(str(tmp_path / "nope"), "no such file or folder")]
