"""regioncap.index: an index folder is empty, regioncap's own, or refused; nothing the user had is deleted;
every shard is closed on every error path."""

import pytest
from test_cli import run_main, scene_files

from regioncap.errors import SearchIndexError
from regioncap.index import RegionIndex, edge
from regioncap.index.edge import MARKER_FILE, META_FILE, EdgeStore


def tree(folder) -> dict:
    """relative path -> bytes of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def proj(tmp_path):
    """The issue's folder: photos in proj/images, a note in proj/regions."""
    scene_files(tmp_path / "proj" / "images", 3)
    (tmp_path / "proj" / "regions").mkdir()
    (tmp_path / "proj" / "regions" / "note.txt").write_text("my notes on these regions")
    return tmp_path / "proj"


def test_indexing_a_photo_folder_into_its_parent_is_refused_and_deletes_nothing(saved_model, proj, capsys):
    before = tree(proj)
    code, out, err = run_main(capsys, "index", proj / "images", "--index", proj, "--model", saved_model[1])
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "not empty and not a regioncap index" in err and "Traceback" not in err
    assert tree(proj) == before  # the photos and the note, byte for byte; no record, no marker


def test_a_folder_that_is_not_ours_is_refused_by_the_python_api(tiny_model, proj):
    before = tree(proj)
    with pytest.raises(SearchIndexError, match="not empty and not a regioncap index.*new or empty folder"):
        RegionIndex(proj, tiny_model)
    assert tree(proj) == before


def test_searching_a_photo_folder_says_it_is_no_index_without_suggesting_to_build_one_there(saved_model, proj,
                                                                                           capsys):
    """The hint must not send the user to a command that is refused (an index in the photos' own folder)."""
    before = tree(proj)
    code, out, err = run_main(capsys, "search", "a red circle", "--index", proj / "images", "--model",
                              saved_model[1])
    assert code == 2 and out == "" and err.strip().count("\n") == 0
    assert "not a regioncap index" in err and f"--index {proj / 'images'}" not in err
    assert tree(proj) == before
    code, _, err = run_main(capsys, "search", "a red circle", "--index", proj / "new", "--model", saved_model[1])
    assert code == 2 and "no index there (build one with" in err  # a folder that is not there: build it


def test_shards_are_never_deleted_without_our_marker(proj):
    """The one place that deletes a half-created shard checks the marker itself."""
    before = tree(proj)
    store = EdgeStore.__new__(EdgeStore)  # as if check_folder had been passed
    store.folder, store.temporary, store.images, store.regions = proj, False, None, None
    with pytest.raises(SearchIndexError, match="not made by regioncap"):
        store._open(create=True, dim=16)
    assert tree(proj) == before


def test_an_empty_folder_becomes_an_index_and_the_marker_goes(tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"Bud1")  # what a file browser leaves in a new folder
    for folder in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        with RegionIndex(folder, tiny_model) as index:
            assert len(index) == 0
        assert sorted(p.name for p in folder.iterdir() if p.name != ".DS_Store") == ["images", META_FILE, "regions"]
        with RegionIndex(folder, tiny_model, create=False) as index:  # and it is an index now
            assert len(index) == 0


def test_a_creation_killed_half_way_completes_and_left_no_shard_open(tiny_model, tmp_path, monkeypatch):
    folder = tmp_path / "index"
    real = edge.write_json_atomic

    def power_cut(path, obj, *a, **k):
        if path.name == META_FILE:
            raise OSError(28, "No space left on device")
        return real(path, obj, *a, **k)

    monkeypatch.setattr(edge, "write_json_atomic", power_cut)
    with pytest.raises(SearchIndexError, match="cannot create the index.*No space left"):
        RegionIndex(folder, tiny_model)
    monkeypatch.undo()
    assert (folder / MARKER_FILE).is_file() and not (folder / META_FILE).exists()
    # a shard half-created (killed inside EdgeShard.create): no edge_config.json in it
    (folder / "regions" / "edge_config.json").unlink()
    # both shards were closed when the creation failed: this process opens them again (else WouldBlock)
    with RegionIndex(folder, tiny_model) as index:
        index.add(scene_files(tmp_path / "photos", 2))
        assert len(index) == 2
    assert not (folder / MARKER_FILE).exists() and (folder / META_FILE).is_file()


def test_close_closes_the_second_shard_when_flushing_the_first_fails(tmp_path):
    store = EdgeStore(tmp_path / "index")
    store.create(16, {"model_id": "random"})
    closed = []

    class Shard:  # the real shard, with a flush that fails (a full disk)
        def __init__(self, shard, fail):
            self.shard, self.fail = shard, fail

        def flush(self):
            if self.fail:
                raise OSError("No space left on device")
            self.shard.flush()

        def close(self):
            closed.append(self)
            self.shard.close()

    store.images, store.regions = Shard(store.images, True), Shard(store.regions, False)
    with pytest.raises(SearchIndexError, match="closing the index failed.*No space left"):
        store.close()
    assert len(closed) == 2
    store = EdgeStore(tmp_path / "index")  # both locks were released
    store.close()


def test_a_refused_model_or_dimension_releases_the_folder(tiny_model, make_model, tmp_path):
    with RegionIndex(tmp_path / "index", tiny_model):
        pass
    record = (tmp_path / "index" / META_FILE)
    record.write_text(record.read_text().replace('"dim": 16', '"dim": 32'))
    with pytest.raises(SearchIndexError, match="holds 32-d vectors.*16-d"):
        RegionIndex(tmp_path / "index", tiny_model)
    with pytest.raises(SearchIndexError, match="holds 32-d vectors"):
        RegionIndex(tmp_path / "index", tiny_model)  # not "open in another process": it was closed
