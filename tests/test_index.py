"""regioncap.index: Qdrant's MaxSim is S_kl; stored scores are align()'s and query()'s; incremental, safe updates.

The tests that take ``where`` run against each engine that runs here: Qdrant Edge (an index folder) and
the server path (qdrant-client; its in-process mode plays the server).
"""

import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from regioncap import batch
from regioncap.errors import SearchIndexError, TextError
from regioncap.index import RegionIndex, edge, ledger
from regioncap.index.edge import EdgeStore
from regioncap.index.files import expand_paths
from regioncap.index.store import ServerStore
from regioncap.models.alignment import image_sentence_scores, region_phrase_similarity
from regioncap.models.identity import model_identity
from regioncap.models.results import AnalysisResult

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


@pytest.fixture(params=["edge", "server"])
def where(request, tmp_path):
    """``where(name)``: the location of index ``name`` on this engine; the same name, the same index."""
    if request.param == "edge":
        return lambda name="index": tmp_path / name
    from qdrant_client import QdrantClient

    server = QdrantClient(":memory:")  # one "server" for the test; RegionIndex leaves its client open
    request.addfinalizer(server.close)
    return lambda name="index": server


def open_index(location, model, **kw):
    return RegionIndex(location, model, score_threshold=0.0, **kw)


def row_count(index) -> int:
    return index.store.count_regions()


def expected_rows(index) -> int:
    return sum(1 + len(i["regions"]) for i in index.images())  # the whole image, then each region


@pytest.mark.parametrize("engine", ["edge", "server"])
def test_qdrant_max_sim_equals_image_sentence_scores_on_random_data(engine, tmp_path, monkeypatch):
    """Qdrant's MaxSim ranks images as S_kl does: the best ``limit`` of more images than that, from the
    float32 vectors, and (embedded) from the int8 copies of a collection large enough to have them."""
    monkeypatch.setattr(edge, "INDEXING_KB", 8)  # int8 copies for a segment of over 8 KB: ~30 of these images
    g = torch.Generator().manual_seed(0)
    dim, limit = 16, 10
    counts = torch.randint(1, 8, (240,), generator=g).tolist()  # rows per image (row 0 plays the whole image)
    v = torch.nn.functional.normalize(torch.randn(sum(counts), dim, generator=g), dim=1)
    region_image = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    sentences = [torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1) for n in (1, 2, 4)]
    s = torch.cat(sentences)
    phrase_sentence = torch.repeat_interleave(torch.arange(len(sentences)), torch.tensor([len(x) for x in sentences]))
    expected = image_sentence_scores(region_phrase_similarity(v, s), region_image, phrase_sentence,
                                     len(counts), len(sentences))  # [K, S]
    if engine == "edge":
        store = EdgeStore(tmp_path / "index")
    else:
        from qdrant_client import QdrantClient

        store = ServerStore(QdrantClient(":memory:"))
    store.create(dim, {"model_id": "random"})
    rows = v.split(counts)
    items = [(f"{k:064x}", rows[k].numpy(), {"hash": f"{k:064x}", "k": k}) for k in range(len(counts))]
    store.put_rows(items)
    store.put_images(items)

    def check():
        for j, q in enumerate(sentences):
            found = store.sentence_candidates(q.numpy(), limit, ["k"])
            assert [p["k"] for p, _ in found] == expected[:, j].argsort(descending=True)[:limit].tolist()
            for payload, vectors in found:  # the stored vectors come back as they went in
                assert torch.equal(torch.from_numpy(vectors), rows[payload["k"]])

    check()
    if engine == "edge":  # a large collection's path: the int8 copies (built by optimize), re-scored in float32
        store.optimize()
        assert store.images.info().indexed_vectors_count == len(counts)  # every image has its int8 copy
        monkeypatch.setattr(edge, "DIRECT_IMAGES", 100)  # fewer than the collection: the int8 path
        check()
    store.close()


def test_edge_images_shard_grows_in_segments_and_a_search_spans_them(tmp_path, monkeypatch):
    """Everything written between two optimisations becomes one segment, which Edge scans in one thread:
    the images shard is optimised every SEGMENT_IMAGES images and keeps up to SEGMENTS segments."""
    monkeypatch.setattr(edge, "SEGMENT_IMAGES", 4)
    monkeypatch.setattr(edge, "SEGMENTS", 3)
    monkeypatch.setattr(edge, "INDEXING_KB", 1)  # a segment of 4 small images is sealed too
    g = torch.Generator().manual_seed(1)
    dim, n = 16, 30
    rows = [torch.nn.functional.normalize(torch.randn(1 + k % 5, dim, generator=g), dim=1) for k in range(n)]
    q = torch.nn.functional.normalize(torch.randn(3, dim, generator=g), dim=1)
    skl = torch.stack([(r @ q.T).max(dim=0).values.sum() for r in rows])
    store = EdgeStore(tmp_path / "index")
    store.create(dim, {"model_id": "random"})
    for start in range(0, n, 2):  # as ``add`` writes: a few images at a time
        items = [(f"{k:064x}", rows[k].numpy(), {"hash": f"{k:064x}", "k": k}) for k in range(start, start + 2)]
        store.put_rows(items)
        store.put_images(items)
    segments = store.images.info().segments_count
    assert 2 <= segments <= 3 + 1  # sealed segments (merged down to SEGMENTS), and the one being written
    folders = list((tmp_path / "index" / "images" / "segments").iterdir())
    assert len(folders) == segments  # those merged away are deleted as it goes (Edge deletes them on flush)
    assert store.count_images() == n
    for direct in (10**6, 0):  # float32, then int8 re-scored
        monkeypatch.setattr(edge, "DIRECT_IMAGES", direct)
        found = store.sentence_candidates(q.numpy(), 5, ["k"])  # the best 5 of 30, wherever they are
        assert [p["k"] for p, _ in found] == skl.argsort(descending=True)[:5].tolist()
    store.close()


def test_server_searches_pass_engine_settings_without_warning_in_process():
    """The server path sends ef and re-scoring settings; qdrant-client's in-process mode (the app's tests,
    ``:memory:``) ignores them, and its warning that it does is not passed on to the user."""
    import warnings

    from qdrant_client import QdrantClient

    store = ServerStore(QdrantClient(":memory:"))
    store.create(8, {"model_id": "random"})
    v = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    items = [(f"{k:064x}", v.numpy(), {"hash": f"{k:064x}"}) for k in range(3)]
    store.put_rows(items)
    store.put_images(items)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store.phrase_candidates(v[0].numpy(), 2)) == 2
        assert len(store.sentence_candidates(v.numpy(), 2, ["hash"])) == 2
    store.close()


def test_scores_are_exactly_align_and_query_of_the_stored_regions(tiny_model, photos, where):
    """The best 3 of 6 images and the best 5 regions of all are the brute-force best of fresh analyses,
    and their scores are exactly ``align()``'s and ``query()``'s."""
    folder, paths = photos
    paths = paths + [scene(folder / f"more-{k}.png", 10 + k) for k in range(3)]
    with open_index(where(), tiny_model) as index:
        counts = index.add([folder])
        assert (counts["added"], counts["failed"], len(index)) == (6, [], 6)
        analysed = {str(p.resolve()): tiny_model.analyze(p, max_regions=10, score_threshold=0.0) for p in paths}
        scores = {path: result.align(SENTENCE).score for path, result in analysed.items()}
        hits = index.search(SENTENCE, top_k=3)
        assert [h.path for h in hits] == sorted(scores, key=lambda p: -scores[p])[:3]
        for hit in hits:
            fresh = analysed[hit.path].align(SENTENCE)
            assert hit.score == fresh.score  # exactly, not approximately
            assert [(m.phrase, m.similarity, m.region_index) for m in hit.matches] == \
                   [(a.phrase, a.similarity, a.region_index) for a in fresh]
        regions = index.search("a red circle", by="regions", top_k=5)
        every = sorted(((sim, path, region.box) for path, result in analysed.items()
                        for region, sim in result.query("a red circle", top_k=100)), key=lambda x: -x[0])
        assert [(r.similarity, r.path, r.box) for r in regions] == every[:5]  # exactly query()'s, the true top 5
        assert len(index.search(SENTENCE, top_k=1)) == 1


def test_reindex_is_a_no_op_changes_are_updated_and_prune_forgets(tiny_model, photos, where):
    folder, paths = photos
    location = where()
    with open_index(location, tiny_model) as index:
        index.add([folder])
    with open_index(location, tiny_model) as index:  # reopened from disk
        assert index.add([folder]) == {"added": 0, "updated": 0, "unchanged": 3, "failed": []}
        scene(paths[0], 99)  # new content under a known path
        shutil.copy(paths[1], folder / "copy-of-b.jpg")  # known content under a new path: stored once
        assert index.add([folder]) == {"added": 1, "updated": 1, "unchanged": 2, "failed": []}
        assert len(index) == 3
        stored = {i["hash"]: i["paths"] for i in index.images()}
        assert sorted(sorted(p) for p in stored.values()) == sorted(
            [[str(paths[0].resolve())], sorted([str(paths[1].resolve()), str((folder / "copy-of-b.jpg").resolve())]),
             [str(paths[2].resolve())]])
        hits = index.search(SENTENCE, top_k=10)  # every hit names all its files, the first as its path
        assert {h.hash: h.paths for h in hits} == stored and all(h.path == h.paths[0] for h in hits)
        paths[2].unlink()
        (folder / "copy-of-b.jpg").unlink()
        assert index.prune() == 1  # c.png's image; b.jpg's keeps its other path
        assert len(index) == 2 and all(len(p) == 1 for p in (i["paths"] for i in index.images()))
        assert index.remove([folder]) == 2 and len(index) == 0
        assert row_count(index) == 0


def test_other_settings_reanalyse(tiny_model, photos, where):
    folder, _ = photos
    with open_index(where(), tiny_model) as index:
        index.add([folder])
    with RegionIndex(where(), tiny_model, max_regions=1, score_threshold=0.0) as index:
        assert index.add([folder])["updated"] == 3
        assert all(len(i["regions"]) <= 1 for i in index.images())
        assert row_count(index) == expected_rows(index)


def test_files_are_recognised_by_content(tiny_model, photos, tmp_path, where):
    folder, _ = photos
    (folder / "notes.jpg").write_text("not a picture")
    scene(folder / "picture.txt", 6)  # a PNG whatever its name says: in a folder, skipped by its suffix
    scene(folder / "no-extension", 5)
    (folder / ".hidden.png").write_bytes(b"junk")  # hidden files in a folder are skipped
    with open_index(where(), tiny_model) as index:
        counts = index.add([folder, tmp_path / "missing"])
        failed = {f["path"]: f["error"] for f in counts["failed"]}
        assert set(failed) == {str((folder / "notes.jpg").resolve()), str(tmp_path / "missing")}
        assert "not an image" in failed[str((folder / "notes.jpg").resolve())]
        assert counts["added"] == 3 and len(index) == 3
        assert index.add([folder / "picture.txt", folder / "no-extension"])["added"] == 2  # named: content decides


def test_another_model_is_refused_by_name(tiny_model, make_model, photos, where):
    tiny_model.name_or_path = "models/first"
    with open_index(where(), tiny_model) as index:
        index.add([photos[0]])
    other = make_model(seed=1)
    other.name_or_path = "models/second"
    assert model_identity(other) != model_identity(tiny_model)
    assert model_identity(make_model(seed=0)) == model_identity(tiny_model)
    with pytest.raises(SearchIndexError, match="built by the model models/first.*not by models/second"):
        RegionIndex(where(), other)
    with RegionIndex(where(), tiny_model) as index:  # the refusal released the folder
        assert len(index) == 3


def test_a_vocabulary_change_is_another_model(tiny_model, make_model):
    from regioncap.data.vocab import Vocabulary

    other = make_model(seed=0)
    other.vocab = Vocabulary(tiny_model.vocab.id_to_token[4:-1] + ["zebra"])  # same size, config, weights
    assert model_identity(other) != model_identity(tiny_model)


def test_half_written_image_is_repaired(tiny_model, photos, where):
    folder, paths = photos
    with open_index(where(), tiny_model) as index:
        index.add([folder])
        # what a kill between the row write and the image write leaves: rows, no image point
        info = index.images()[0]
        index.store.delete_images([info["hash"]])  # the image point only, none of its rows
        assert len(index) == 2
        assert index.add([folder]) == {"added": 1, "updated": 0, "unchanged": 2, "failed": []}
        assert row_count(index) == expected_rows(index)


def test_rows_of_an_image_never_written_are_removed(tiny_model, photos, where):
    folder, paths = photos
    with open_index(where(), tiny_model) as index:
        index.add([paths[0]])
        orphan = "f" * 64  # rows written, then killed before the image point
        index.store.put_rows([(orphan, torch.nn.functional.normalize(torch.randn(3, 16), dim=1).numpy(), {})])
        assert index.add([paths[1]])["added"] == 1
        assert row_count(index) == expected_rows(index)


def test_one_process_per_folder_and_clear_errors(tiny_model, photos, tmp_path):
    """(The embedded engine's folder rules; a server's errors are its own.)"""
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


def test_an_old_format_folder_is_refused_and_never_opened(tiny_model, tmp_path):
    old = tmp_path / "old-index"  # what qdrant-client's local mode left: pickles in SQLite
    (old / "collection" / "regioncap_images").mkdir(parents=True)
    (old / "meta.json").write_text(json.dumps({"collections": {}}))
    (old / "collection" / "regioncap_images" / "storage.sqlite").write_bytes(b"\x80\x04pickle")
    for create in (True, False):
        with pytest.raises(SearchIndexError, match="old format.*rebuild it.*regioncap index PHOTOS --index"):
            RegionIndex(old, tiny_model, create=create)
    assert sorted(p.name for p in old.iterdir()) == ["collection", "meta.json"]  # nothing written there


WRITES = ("put_rows", "put_images", "set_paths", "delete_images", "delete_rows")  # every store op that writes


class Killed(BaseException):
    """A kill: no ``except Exception`` of the code under test catches it."""


def kill_at(store, step: int) -> list[str]:
    """Make the store's write op number ``step`` (0-based) raise Killed; returns the ops run, in order."""
    done = []

    def wrap(name, real):
        def op(*args, **kwargs):
            if len(done) == step:
                raise Killed(name)
            done.append(name)
            return real(*args, **kwargs)
        return op

    for name in WRITES:
        setattr(store, name, wrap(name, getattr(store, name)))
    return done


def stored_rows(index) -> list[tuple[str, int, str, np.ndarray]]:
    """(hash, index, analysis token or "", vector) of every row in the regions shard or collection."""
    store, out, offset = index.store, [], None
    if isinstance(store, EdgeStore):
        records = list(store._scroll(store.regions, True, vectors=True))
    else:
        records = []
        while True:
            points, offset = store.client.scroll(store.regions, limit=1000, offset=offset, with_payload=True,
                                                 with_vectors=True)
            records += points
            if offset is None:
                break
    for r in records:
        vector = r.vector[""] if isinstance(r.vector, dict) else r.vector
        out.append((r.payload["hash"], r.payload["index"], r.payload.get("analysis") or "",
                    np.asarray(vector, dtype=np.float32)))
    return out


def assert_rows_agree(index, repaired: bool) -> None:
    """Every image point's rows are there and hold its vectors (not merely as many); ``repaired``: no
    other row is left."""
    points = index.store.get_images([i["hash"] for i in index.images()], ["hash", "regions", "analysis"])
    rows = stored_rows(index)
    for digest, (payload, multivector) in points.items():
        mine = {i: v for h, i, token, v in rows if h == digest and token == (payload.get("analysis") or "")}
        assert sorted(mine) == list(range(-1, len(payload["regions"])))
        for i, vector in mine.items():
            np.testing.assert_array_equal(vector, multivector[i + 1])
    if repaired:
        assert len(rows) == sum(len(multivector) for _, multivector in points.values())


def assert_phrase_search_is_true(index, model, phrases=("a red circle", "the small blue square"), top_k=4):
    """The regions a phrase finds are the brute-force best over the stored image points' vectors."""
    points = index.store.get_images([i["hash"] for i in index.images()], ["hash", "regions"])
    for phrase in phrases:
        s = model.encode_text([phrase])[0].numpy()
        scored = [(float(multivector[1 + i] @ s), digest, i) for digest, (_, multivector) in points.items()
                  for i in range(len(multivector) - 1)]
        truth = [(digest, i) for _, digest, i in sorted(scored, reverse=True)[:top_k]]
        assert [(h.hash, h.region_index) for h in index.search(phrase, by="regions", top_k=top_k)] == truth


def reversed_analysis(real):
    """``batch.analyze_loaded`` whose analyses list their regions in reverse: another analysis with as many
    rows, whose row i holds other vectors than the first analysis's row i."""
    def analyze_loaded(*args, **kwargs):
        for item, result in real(*args, **kwargs):
            if result is not None:
                result = AnalysisResult(result.regions[::-1], result.vectors.flip(0), result.image_vector,
                                        result.width, result.height, result.timings_ms, result.model)
            yield item, result
    return analyze_loaded


@pytest.mark.parametrize("fewer", [False, True], ids=["same-rows", "fewer-rows"])
def test_reanalysis_killed_at_any_step_leaves_rows_that_agree_with_their_image(tiny_model, photos, where, fewer,
                                                                               monkeypatch):
    """Two paths share one image; it is analysed again (other settings, another analysis with as many or
    fewer rows) and the run is killed before each of its writes in turn. Reopened, every image's rows are
    its own analysis's vectors, phrase search finds the true best regions, both paths are kept; the next
    run completes the image and leaves no other row."""
    folder = photos[0] / "kill"  # two images, one of them under two paths
    folder.mkdir()
    paths = [shutil.copy(p, folder / p.name) for p in photos[1][:2]]
    twin = folder / "twin.png"
    shutil.copy(paths[0], twin)
    both = sorted([str(paths[0].resolve()), str(twin.resolve())])
    second = {"max_regions": 2 if fewer else 10, "score_threshold": 1e-9}
    for step in itertools.count():
        location, name = where(f"k{step}"), f"k{step}"
        with open_index(location, tiny_model, prefix=name) as index:
            index.add([folder])
            first = {i["hash"]: len(i["regions"]) for i in index.images()}
        with monkeypatch.context() as m:
            m.setattr(batch, "analyze_loaded", reversed_analysis(batch.analyze_loaded))
            with RegionIndex(location, tiny_model, prefix=name, **second) as index:
                done = kill_at(index.store, step)
                try:
                    index.add([paths[0]])
                except Killed:
                    pass
                else:
                    break  # every step has been killed once
        with open_index(location, tiny_model, prefix=name) as index:  # reopened after the kill
            assert_rows_agree(index, repaired=False)
            assert_phrase_search_is_true(index, tiny_model)
            stored = [i for i in index.images() if str(twin.resolve()) in i["paths"]]
            assert len(stored) == 1 and sorted(stored[0]["paths"]) == both
        with monkeypatch.context() as m:
            m.setattr(batch, "analyze_loaded", reversed_analysis(batch.analyze_loaded))
            with RegionIndex(location, tiny_model, prefix=name, **second) as index:  # the next run completes it
                index.add([twin])
                assert_rows_agree(index, repaired=True)
                assert_phrase_search_is_true(index, tiny_model)
                stored = [i for i in index.images() if str(twin.resolve()) in i["paths"]][0]
                assert sorted(stored["paths"]) == both and stored["max_regions"] == second["max_regions"]
                if fewer:
                    assert len(stored["regions"]) == 2 < first[stored["hash"]]
                else:
                    assert len(stored["regions"]) == first[stored["hash"]] >= 2
    assert step == len(done) >= 2 and done[:2] == ["put_rows", "put_images"]  # each write was killed once


def test_an_index_of_schema_2_is_read_and_upgraded_on_its_first_write(tiny_model, photos, where, monkeypatch):
    """Indexes written before analysis tokens (rows at ``hash:row``, no token) are searched as they are,
    and their next write re-analyses into tokened rows and removes the old ones."""
    folder, _ = photos
    with monkeypatch.context() as m:
        m.setattr(ledger, "new_token", lambda: "")  # the rows and image points of schema 2
        with open_index(where(), tiny_model) as index:
            index.add([folder])
            index.store.write_meta({**index.meta, "schema": 2})
    with open_index(where(), tiny_model) as index:
        assert len(index) == 3 and index.meta["schema"] == 2
        assert_rows_agree(index, repaired=True)
        assert_phrase_search_is_true(index, tiny_model)
    with RegionIndex(where(), tiny_model, max_regions=2, score_threshold=0.0) as index:
        assert index.add([folder])["updated"] == 3
        assert index.meta["schema"] == 3 and all(i["analysis"] for i in index.images())
        assert_rows_agree(index, repaired=True)
        assert_phrase_search_is_true(index, tiny_model)
    with open_index(where(), tiny_model, create=False) as index:
        assert index.store.read_meta()["schema"] == 3
