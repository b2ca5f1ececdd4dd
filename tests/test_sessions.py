"""regioncap.index.sessions: per-visitor collections stay within their limit under concurrent uploads, and
one is never closed under a request that is using it."""

import threading
import time

import pytest
from PIL import Image

from regioncap.errors import RegionCapError
from regioncap.index.sessions import SessionCollections


def make_photos(folder, count: int) -> list[str]:
    photos = []
    for k in range(count):
        path = folder / f"p{k}.png"
        Image.new("RGB", (64, 48), (20 * k, 255 - 20 * k, 90)).save(path)  # different contents
        photos.append(str(path))
    return photos


def test_concurrent_uploads_cannot_pass_the_limit(tiny_model, tmp_path):
    photos = make_photos(tmp_path, 8)
    sessions = SessionCollections(max_photos=5)
    start, out = threading.Barrier(2), []

    def upload(batch):
        start.wait()
        out.append(sessions.add("visitor", tiny_model, batch))

    threads = [threading.Thread(target=upload, args=(photos[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    index = sessions.own("visitor")
    added = sum(counts["added"] for counts, _ in out)
    assert len(index) == added == 5  # without the shared lock both saw room for 4 and stored 8
    assert sum(left for _, left in out) == 3
    sessions.drop("visitor")


def hold(store, method: str):
    """Make ``store.method`` stop until released: (entered, release) events."""
    entered, release, real = threading.Event(), threading.Event(), getattr(store, method)

    def held(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    setattr(store, method, held)
    return entered, release


def in_thread(fn, out: dict, name: str) -> threading.Thread:
    """Run ``fn`` in a thread; its result or exception lands in ``out[name]``."""
    def run():
        try:
            out[name] = fn()
        except BaseException as e:  # noqa: BLE001 - the test looks at whatever it was
            out[name] = e

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_dropping_a_collection_that_is_adding_waits_for_the_add(tiny_model, tmp_path):
    photos = make_photos(tmp_path, 3)
    sessions = SessionCollections()
    sessions.add("visitor", tiny_model, photos[:1])
    index = sessions.own("visitor")
    folder = index.store.folder  # the collection's temporary folder
    entered, release = hold(index.store, "put_images")
    out = {}
    adding = in_thread(lambda: sessions.add("visitor", tiny_model, photos[1:]), out, "add")
    assert entered.wait(30)
    dropping = in_thread(lambda: sessions.drop("visitor"), out, "drop")  # the browser tab closed
    dropping.join(0.5)
    assert dropping.is_alive() and folder.is_dir()  # the close waits; nothing is deleted under the add
    release.set()
    adding.join(30)
    dropping.join(30)
    assert not isinstance(out["add"], BaseException), out["add"]
    assert out["add"][0]["added"] == 2 and out["drop"] is None
    assert not folder.exists() and sessions.own("visitor") is None
    for call in (lambda: index.search("a red circle"), lambda: index.add(photos), lambda: len(index)):
        with pytest.raises(RegionCapError, match="was closed"):  # not an AttributeError
            call()


def test_evicting_a_collection_that_is_searching_lets_the_search_finish(tiny_model, tmp_path):
    photos = make_photos(tmp_path, 4)
    sessions = SessionCollections(max_sessions=1)
    sessions.add("first", tiny_model, photos[:2])
    index, where = sessions.searchable("first")
    assert where == "your 2 photos"
    folder = index.store.folder
    entered, release = hold(index.store, "sentence_candidates")
    out = {}
    searching = in_thread(lambda: index.search("a red circle next to the small blue square"), out, "search")
    assert entered.wait(30)
    t0 = time.perf_counter()
    counts, _ = sessions.add("second", tiny_model, photos[2:])  # evicts "first" (least recently used)
    assert counts["added"] == 2 and time.perf_counter() - t0 < 20  # the new visitor did not wait for the search
    assert sessions.own("first") is None and folder.is_dir()
    release.set()
    searching.join(30)
    assert not isinstance(out["search"], BaseException), out["search"]
    assert len(out["search"]) == 2
    for _ in range(300):  # closed in the background once the search ended
        if not folder.exists():
            break
        time.sleep(0.1)
    assert not folder.exists()
    with pytest.raises(RegionCapError, match="was closed"):
        index.search("a red circle")
    sessions.drop("second")
