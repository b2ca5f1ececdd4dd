"""regioncap.index on a Qdrant server (qdrant-client's in-process mode plays it): the record is checked as a
folder's is, collections that are not ours are refused, one writer at a time loses nothing, and the app
and the command line name an index the same way."""

import pytest
from qdrant_client import QdrantClient, models
from test_cli import run_main, scene_files
from test_index import assert_rows_agree

from regioncap.errors import SearchIndexError
from regioncap.index import RegionIndex, collection_prefix, region_index, store
from regioncap.index.sessions import SessionCollections
from regioncap.index.store import ServerStore
from regioncap.models.identity import model_identity


@pytest.fixture
def server():
    client = QdrantClient(":memory:")
    yield client
    client.close()


def test_a_second_writer_is_refused_while_the_first_writes_and_nothing_is_lost(tiny_model, server, tmp_path):
    """A has written an image's rows, not yet its image point, when B starts: B's orphan clean-up would
    delete A's rows, and B's paths would overwrite A's. B is refused instead, and runs once A is done."""
    first, second = scene_files(tmp_path / "a", 2), scene_files(tmp_path / "b", 1, start=2)
    twin = tmp_path / "b" / "twin.png"  # the bytes of A's first photo under B's path
    twin.write_bytes(first[0].read_bytes())
    a = RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0)
    b = RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0)
    refused, real = [], a.store.put_images

    def b_starts_meanwhile(items):
        try:
            b.add([tmp_path / "b"])
        except SearchIndexError as e:
            refused.append(str(e))
        real(items)

    a.store.put_images = b_starts_meanwhile
    assert a.add([tmp_path / "a"])["added"] == 2
    assert refused and all("being written by another process" in r and "one writer at a time" in r
                           for r in refused)
    assert_rows_agree(a, repaired=True)  # A's rows survived
    a.store.put_images = real
    assert b.add([tmp_path / "b"])["added"] == 2  # A is done: B writes
    paths = {i["hash"]: sorted(i["paths"]) for i in b.images()}
    assert sorted(map(sorted, paths.values())) == sorted(
        [sorted([str(first[0].resolve()), str(twin.resolve())]), [str(first[1].resolve())],
         [str(second[0].resolve())]])
    assert_rows_agree(b, repaired=True)
    a.close()
    b.close()


def test_paths_written_by_two_writers_in_turn_are_all_kept(tiny_model, server, tmp_path):
    """B adds a path while A is adding another of the same image: not last-writer-wins."""
    photo = scene_files(tmp_path / "photos", 1)[0]
    x, y = tmp_path / "x.png", tmp_path / "y.png"
    x.write_bytes(photo.read_bytes())
    y.write_bytes(photo.read_bytes())
    with RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0) as index:
        index.add([photo])
    a = RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0)
    b = RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0)
    real, refused = a.store.set_paths, []

    def b_meanwhile(digest, paths):
        try:
            b.add([y])
        except SearchIndexError as e:
            refused.append(e)  # it runs again after A
        real(digest, paths)

    a.store.set_paths = b_meanwhile
    a.add([x])
    stored = b.images()[0]["paths"]
    assert str(x.resolve()) in stored and (refused or str(y.resolve()) in stored)  # B's path not overwritten
    b.add([y])
    assert sorted(b.images()[0]["paths"]) == sorted(str(p.resolve()) for p in (photo, x, y))
    a.close()
    b.close()


def test_a_writer_that_died_is_taken_over_after_its_lease(tiny_model, server, tmp_path, monkeypatch):
    scene_files(tmp_path / "photos", 1)
    dead = RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0)
    dead.store.begin_write()  # killed while writing: its lease stays
    with RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0) as index:
        with pytest.raises(SearchIndexError, match="another process"):
            index.add([tmp_path / "photos"])
        later = store.time.time() + store.LEASE_SECONDS + 1
        monkeypatch.setattr(store.time, "time", lambda: later)
        assert index.add([tmp_path / "photos"])["added"] == 1
    monkeypatch.undo()
    with RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0) as index:
        assert index.add([tmp_path / "photos"])["unchanged"] == 1  # the stale lease was removed


def test_a_long_run_of_unchanged_files_keeps_its_lease(tiny_model, server, tmp_path, monkeypatch):
    """Re-indexing a library that did not change writes nothing; its lease is renewed all the same, so a
    second writer is still refused after LEASE_SECONDS of such a run."""
    scene_files(tmp_path / "photos", 3)
    index = RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0)
    index.add([tmp_path / "photos"])
    clock = [store.time.time()]
    monkeypatch.setattr(store.time, "time", lambda: clock[0])
    other = RegionIndex(server, tiny_model, prefix="shared", score_threshold=0.0)
    refused = []

    def slow(records, *args, **kwargs):  # each file of the run takes half the lease's time
        for record in records:
            clock[0] += store.LEASE_SECONDS / 2
            yield record

    def try_other(iterable):
        for item in slow(iterable):
            try:
                other.add([tmp_path / "photos"])
            except SearchIndexError:
                refused.append(True)
            yield item

    assert index.add([tmp_path / "photos"], progress=try_other)["unchanged"] == 3
    assert refused == [True, True, True]  # the first writer held the index through its whole run
    index.close()
    other.close()


def test_collections_that_are_not_ours_are_refused_and_left_alone(tiny_model, server):
    server.create_collection("photos_images", vectors_config=models.VectorParams(size=4,
                                                                                 distance=models.Distance.DOT))
    server.upsert("photos_images", [models.PointStruct(id=1, vector=[1.0, 0, 0, 0], payload={"mine": True})])
    with pytest.raises(SearchIndexError, match="photos_images on the server is not a regioncap index"):
        RegionIndex(server, tiny_model, prefix="photos")
    assert server.count("photos_images").count == 1 and not server.collection_exists("photos_regions")
    server.create_collection("other_meta", vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT))
    with pytest.raises(SearchIndexError, match="other_meta on the server is not a regioncap index's record"):
        RegionIndex(server, tiny_model, prefix="other")


def test_schema_dimension_and_model_are_checked_as_for_folders(tiny_model, make_model, server):
    identity = model_identity(tiny_model)
    ServerStore(server, "wide", owned=False).create(32, {"model": "m", "model_id": identity, "dim": 32})
    with pytest.raises(SearchIndexError, match="holds 32-d vectors, .* makes 16-d ones"):
        RegionIndex(server, tiny_model, prefix="wide")
    ServerStore(server, "liar", owned=False).create(32, {"model": "m", "model_id": identity, "dim": 16})
    with pytest.raises(SearchIndexError, match="liar_images on the server holds 32-d vectors, its record says 16"):
        RegionIndex(server, tiny_model, prefix="liar")
    with RegionIndex(server, tiny_model, prefix="future"):
        pass
    with pytest.raises(SearchIndexError, match="built by the model"):
        RegionIndex(server, make_model(seed=1), prefix="future")
    ServerStore(server, "future", owned=False).write_meta({"schema": 99, "model_id": identity, "dim": 16})
    with pytest.raises(SearchIndexError, match="schema 99, this regioncap reads schema 2 and 3"):
        RegionIndex(server, tiny_model, prefix="future")


def test_an_interrupted_creation_on_a_server_completes(tiny_model, server, monkeypatch):
    def cut(self, meta):
        raise SearchIndexError("the server went away")

    monkeypatch.setattr(ServerStore, "write_meta", cut)
    with pytest.raises(SearchIndexError, match="went away"):
        RegionIndex(server, tiny_model, prefix="half")
    monkeypatch.undo()
    assert server.collection_exists("half_images") and server.collection_exists("half_meta")
    with RegionIndex(server, tiny_model, prefix="half") as index:  # its own marker: completed, not refused
        assert len(index) == 0 and index.meta["schema"] == 3


class Unclosable:
    """The test's in-process server as a URL's client: RegionIndex closes what it connected."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        return getattr(self.client, name)

    def close(self):
        pass


def test_the_app_and_the_command_line_name_a_server_index_alike(saved_model, server, tmp_path, capsys,
                                                                monkeypatch):
    _, folder = saved_model
    monkeypatch.setattr(region_index, "connect", lambda url: Unclosable(server))
    scene_files(tmp_path / "photos", 3)
    code, out, err = run_main(capsys, "index", tmp_path / "photos", "--index", "team/photos.v2", "--model", folder,
                              "--qdrant-url", "http://qdrant.example:6333", "--threshold", "0")
    assert code == 0, err
    assert collection_prefix("team/photos.v2") == "photos_v2" and server.collection_exists("photos_v2_images")
    from regioncap.models.model import RegionCaptioner

    monkeypatch.setenv("REGIONCAP_QDRANT_URL", "http://qdrant.example:6333")
    sessions = SessionCollections()
    sessions.open_shared(RegionCaptioner.from_pretrained(folder), "team/photos.v2", [])
    assert sessions.shared_error is None and len(sessions.shared) == 3
    code, out, err = run_main(capsys, "search", "a red circle", "--index", "team/photos.v2", "--model", folder,
                              "--qdrant-url", "http://qdrant.example:6333")
    assert code == 0 and '"results": [' in out


def test_a_server_that_does_not_answer_leaves_no_client_open(monkeypatch):
    import qdrant_client

    closed = []

    class Silent:
        def __init__(self, **kw):
            pass

        def get_collections(self):
            raise ConnectionError("connection refused")

        def close(self):
            closed.append(True)

    monkeypatch.setattr(qdrant_client, "QdrantClient", Silent)
    with pytest.raises(SearchIndexError, match="does not answer"):
        store.connect("http://127.0.0.1:9")
    assert closed == [True]
