"""The Qdrant side of the index: opening a client, the three collections, the model record.

* ``<prefix>_images``: one point per image; vector = the multivector ``[whole-image vector, region
  vectors...]`` compared with ``MAX_SIM`` over dot products, so a query made of a sentence's phrase
  vectors scores S_kl = sum_t max_i v_i . s_t (exactly what ``AnalysisResult.align`` sums).
* ``<prefix>_regions``: one point per region (its unit vector, dot product).
* ``<prefix>_meta``: one point recording the model that built the index.

Embedded mode (a folder) is Qdrant's local mode: one process per folder (a file lock), points pickled
into SQLite, so an index folder is trusted data like a pickle.
"""

from __future__ import annotations

import logging
from pathlib import Path

from regioncap.errors import SearchIndexError

logger = logging.getLogger(__name__)

META_ID = 1  # the one point of the meta collection
SCHEMA = 1  # bumped when the payload layout changes
MEMORY = ":memory:"


def is_url(location: str) -> bool:
    return str(location).startswith(("http://", "https://"))


def open_client(location, create: bool, timeout: int = 10):
    """A QdrantClient for a folder, ``":memory:"`` or an ``http(s)://`` server URL.

    Raises SearchIndexError: no index folder (and ``create`` False), a folder locked by another
    process, a file in the way, or a server that does not answer.
    """
    from qdrant_client import QdrantClient

    location = str(location)
    if location == MEMORY:
        return QdrantClient(location=MEMORY)
    if is_url(location):
        client = QdrantClient(url=location, timeout=timeout, check_compatibility=False)
        try:
            client.get_collections()
        except Exception as e:  # httpx / grpc / HTTP status errors all mean "not usable"
            raise SearchIndexError(f"Qdrant server {location} does not answer ({_first_line(e)})") from None
        return client
    folder = Path(location).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SearchIndexError(f"{folder}: is a file, not an index folder")
    if not create and not folder.is_dir():
        raise SearchIndexError(f"{folder}: no index there (build one with `python -m regioncap index PHOTOS "
                               f"--index {folder}`)")
    try:
        client = QdrantClient(path=str(folder))
        fast_commits(client)
        return client
    except RuntimeError as e:
        if "already accessed" in str(e):
            raise SearchIndexError(f"{folder}: the index is open in another process (an index folder can be "
                                   "used by one process at a time; use a Qdrant server to share one)") from None
        raise SearchIndexError(f"{folder}: cannot open the index ({_first_line(e)})") from None
    except Exception as e:  # a damaged storage.sqlite, unreadable folder
        raise SearchIndexError(f"{folder}: cannot open the index ({_first_line(e)})") from None


def fast_commits(client) -> None:
    """Embedded mode commits every point in its own SQLite transaction, each an fsync (26 ms a point on
    the shared test machine, 11 points an image). WAL with synchronous=NORMAL keeps every commit atomic
    (a killed process loses nothing it committed; power loss can lose the last commits, never corrupt
    the file) without the fsync: 0.4 ms a point. Reaches into qdrant-client's local storage, so any
    surprise there is logged and ignored."""
    import sqlite3

    try:
        collections = client._client.collections  # QdrantLocal: name -> LocalCollection
        for collection in collections.values():
            storage = getattr(collection, "storage", None)
            connection = getattr(storage, "storage", None)
            if isinstance(connection, sqlite3.Connection):
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
    except (AttributeError, sqlite3.Error) as e:
        logger.debug("could not switch the index to WAL commits (%s)", e)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class Collections:
    """Names and creation of the three collections under one ``prefix``."""

    def __init__(self, client, prefix: str = "regioncap", local: bool = True):
        self.client, self.local = client, local
        self.images, self.regions, self.meta = (f"{prefix}_images", f"{prefix}_regions", f"{prefix}_meta")

    def exist(self) -> bool:
        return self.client.collection_exists(self.meta)

    def read_meta(self) -> dict | None:
        if not self.exist():
            return None
        points = self.client.retrieve(self.meta, [META_ID], with_payload=True)
        return dict(points[0].payload) if points else None

    def create(self, dim: int, meta: dict) -> None:
        """Create the collections (idempotent: an interrupted creation completes), then the model record,
        which is written last: an index without it is treated as not yet created."""
        from qdrant_client import models

        if not self.client.collection_exists(self.images):
            self.client.create_collection(self.images, vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)))
        if not self.client.collection_exists(self.regions):
            self.client.create_collection(self.regions, vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.DOT))
        if not self.local:  # payload indexes only matter (and only exist) on a server
            for name in (self.images, self.regions):
                self.client.create_payload_index(name, "hash", models.PayloadSchemaType.KEYWORD)
            self.client.create_payload_index(self.images, "paths", models.PayloadSchemaType.KEYWORD)
        if not self.client.collection_exists(self.meta):
            self.client.create_collection(self.meta, vectors_config=models.VectorParams(
                size=1, distance=models.Distance.DOT))
        if self.local:
            fast_commits(self.client)
        self.client.upsert(self.meta, [models.PointStruct(id=META_ID, vector=[1.0], payload=meta)], wait=True)

    def scroll(self, collection: str, payload, vectors: bool = False, batch: int = 1000):
        """Every point of ``collection`` (ids, the ``payload`` keys asked for, vectors if asked)."""
        offset = None
        while True:
            points, offset = self.client.scroll(collection, limit=batch, offset=offset, with_payload=payload,
                                                with_vectors=vectors)
            yield from points
            if offset is None:
                return

    def delete_regions_of(self, hashes: list[str]) -> None:
        from qdrant_client import models

        if hashes:
            selector = models.FilterSelector(filter=models.Filter(must=[
                models.FieldCondition(key="hash", match=models.MatchAny(any=list(hashes)))]))
            self.client.delete(self.regions, points_selector=selector, wait=True)
