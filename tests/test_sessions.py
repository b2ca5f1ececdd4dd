"""regioncap.index.sessions: per-visitor collections stay within their limit under concurrent uploads."""

import threading

from PIL import Image

from regioncap.index.sessions import SessionCollections


def test_concurrent_uploads_cannot_pass_the_limit(tiny_model, tmp_path):
    photos = []
    for k in range(8):
        path = tmp_path / f"p{k}.png"
        Image.new("RGB", (64, 48), (20 * k, 255 - 20 * k, 90)).save(path)  # eight different contents
        photos.append(str(path))
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
