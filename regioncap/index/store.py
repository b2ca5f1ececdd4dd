"""A Qdrant server (or cluster) as the index's engine, through qdrant-client.

The same layout as the embedded engine (:mod:`regioncap.index.edge`), as three collections under a prefix:

* ``<prefix>_images``: one point per image; vector = the multivector ``[whole-image vector, region
  vectors...]`` compared with ``MAX_SIM`` over dot products, so a query made of a sentence's phrase
  vectors scores S_kl = sum_t max_i v_i . s_t (exactly what ``AnalysisResult.align`` sums).
* ``<prefix>_regions``: one point per row of that multivector (``index`` -1: the whole image).
* ``<prefix>_meta``: one point recording the model that built the index (created first, with a creation
  marker: collections under the prefix without it are not regioncap's and are refused, never written),
  and one lease point per process that is writing (:meth:`ServerStore.begin_write`): one writer at a time,
  a second is refused with a message, so no writer's orphan clean-up or paths list undoes another's.

An index on a server is named as on the command line: ``--index NAME --qdrant-url URL`` uses the
collections of :func:`collection_prefix` (NAME), and so does the app (``$REGIONCAP_INDEX`` with
``$REGIONCAP_QDRANT_URL``): :func:`regioncap.index.region_index.open_index` is the one rule.

The server ranks; how it does so at scale (shards, HNSW, quantisation, vectors on disk) is its
configuration: see docs/collection-search.md. Everything else (keys, write order, exact re-scoring)
is :class:`~regioncap.index.region_index.RegionIndex`'s and the same for both engines.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from regioncap.errors import SearchIndexError
from regioncap.index.files import point_id
from regioncap.index.ledger import READ_SCHEMAS, SCHEMA, TOKEN, row_points

logger = logging.getLogger(__name__)

META_ID = 1  # the record of the meta collection
CREATING_ID = 2  # the creation marker: written first, removed once the record is written
QDRANT_URL_ENV = "REGIONCAP_QDRANT_URL"
LEASE_SECONDS = 600  # a writer silent for this long (killed) no longer holds the index
RENEW_SECONDS = 30


def collection_prefix(name) -> str:
    """The collection prefix of the index called ``name`` on a server (``--index NAME``; a path's last
    part): letters, digits, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(str(name)).name) or "regioncap"


def is_url(location) -> bool:
    return isinstance(location, str) and location.startswith(("http://", "https://"))


def connect(url: str, timeout: int = 10):
    """A QdrantClient for a server URL; SearchIndexError when it does not answer."""
    from qdrant_client import QdrantClient

    client = QdrantClient(url=url, timeout=timeout, check_compatibility=False)
    try:
        client.get_collections()
    except Exception as e:  # httpx / grpc / HTTP status errors all mean "not usable"
        client.close()  # its connection pool: nothing of a refused server is kept open
        raise SearchIndexError(f"Qdrant server {url} does not answer ({_first_line(e)})") from None
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class ServerStore:
    """The index's collections on a Qdrant server (``client``: a connected QdrantClient; closed with the
    store when ``owned``, else the caller's to close)."""

    kind = "server"

    def __init__(self, client, prefix: str = "regioncap", owned: bool = True):
        self.client, self.owned, self.prefix = client, owned, prefix
        self.images, self.regions, self.meta = (f"{prefix}_images", f"{prefix}_regions", f"{prefix}_meta")
        self.writer = point_id(f"writer:{uuid.uuid4()}")  # this store's lease point, while it writes
        self.renewed = 0.0

    def read_meta(self) -> dict | None:
        """The index's record (None: no index yet, or one whose creation was interrupted); SearchIndexError
        for collections under this prefix that regioncap did not create, or a record it cannot read."""
        if not self.client.collection_exists(self.meta):
            taken = [c for c in (self.images, self.regions) if self.client.collection_exists(c)]
            if taken:
                raise SearchIndexError(f"the collection {taken[0]} on the server is not a regioncap index's (no "
                                       f"{self.meta}): it is left as it is; name the index otherwise")
            return None
        points = {p.id: p.payload for p in self.client.retrieve(self.meta, [META_ID, CREATING_ID],
                                                                  with_payload=True)}
        if META_ID in points:
            return dict(points[META_ID])
        if CREATING_ID in points:
            return None  # an interrupted creation: it completes
        raise SearchIndexError(f"the collection {self.meta} on the server is not a regioncap index's record: it "
                               "is left as it is; name the index otherwise")

    def check(self, meta: dict) -> None:
        """SearchIndexError unless ``meta`` is a record this regioncap reads, with collections of its
        dimension."""
        if meta.get("schema") not in READ_SCHEMAS:
            raise SearchIndexError(f"the index {self.prefix} on the server is of schema {meta.get('schema')}, this "
                                   f"regioncap reads schema {' and '.join(map(str, READ_SCHEMAS))}: rebuild it")
        for name in (self.images, self.regions):
            size = self.client.get_collection(name).config.params.vectors.size
            if size != meta.get("dim"):
                raise SearchIndexError(f"the collection {name} on the server holds {size}-d vectors, its record "
                                       f"says {meta.get('dim')}: it is not this index's; name the index otherwise")

    def create(self, dim: int, meta: dict) -> None:
        """The meta collection and its creation marker first (the prefix is ours from here on), then the
        collections (idempotent: an interrupted creation completes), then the model record, then the
        marker removed: an index without the record is treated as not yet created."""
        from qdrant_client import models

        if not self.client.collection_exists(self.meta):
            self.client.create_collection(self.meta, vectors_config=models.VectorParams(
                size=1, distance=models.Distance.DOT))
            self.client.upsert(self.meta, [models.PointStruct(id=CREATING_ID, vector=[1.0],
                                                              payload={"creating": True})], wait=True)
        int8 = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8,
                                                                               always_ram=True))
        if not self.client.collection_exists(self.images):
            # as the embedded engine: every image is scanned (no HNSW over multivectors: built here in 671 s
            # for 100,000 images, it found 5 % of the true top 10), from int8 copies in RAM, re-scored
            self.client.create_collection(self.images, vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.DOT, hnsw_config=models.HnswConfigDiff(m=0),
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                quantization_config=int8))
        if not self.client.collection_exists(self.regions):  # HNSW over int8 copies in RAM, re-scored
            self.client.create_collection(self.regions, vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.DOT, quantization_config=int8))
        for name, field, schema in ((self.regions, "hash", models.PayloadSchemaType.KEYWORD),
                                    (self.regions, "index", models.PayloadSchemaType.INTEGER),
                                    (self.images, "paths", models.PayloadSchemaType.KEYWORD)):
            with warnings.catch_warnings():  # qdrant-client's in-process mode says it has no use for them
                warnings.simplefilter("ignore", UserWarning)
                self.client.create_payload_index(name, field, schema)
        self.write_meta({"schema": SCHEMA, **meta})
        self.client.delete(self.meta, points_selector=[CREATING_ID], wait=True)

    def write_meta(self, meta: dict) -> None:
        from qdrant_client import models

        self.client.upsert(self.meta, [models.PointStruct(id=META_ID, vector=[1.0], payload=meta)], wait=True)

    # -- one writer at a time -------------------------------------------------------------------------
    def begin_write(self) -> None:
        """Take the index for writing: a lease point of this store, then every other writer's looked at;
        SearchIndexError (and no lease) when another process holds one that is alive (renewed in the
        last ``LEASE_SECONDS``). Two writers starting at once may both be refused, never both let in."""
        from qdrant_client import models

        now = time.time()
        mine = {"lease": True, "host": socket.gethostname(), "pid": os.getpid(), "since": now, "seen": now}
        self.client.upsert(self.meta, [models.PointStruct(id=self.writer, vector=[1.0], payload=mine)], wait=True)
        self.renewed = now
        leases = [p for p in self._scroll(self.meta, True) if p.payload.get("lease") and str(p.id) != self.writer]
        alive = [p.payload for p in leases if now - p.payload.get("seen", 0) < LEASE_SECONDS]
        if alive:
            self.end_write()
            other = alive[0]
            raise SearchIndexError(
                f"the index {self.prefix} on the server is being written by another process ({other.get('host')}, "
                f"pid {other.get('pid')}, since {time.strftime('%H:%M:%S', time.localtime(other.get('since', 0)))})"
                f": one writer at a time; run this again when it has finished (a writer that stopped without "
                f"finishing is taken over {LEASE_SECONDS // 60} minutes after its last write)")
        stale = [str(p.id) for p in leases]
        if stale:
            self.client.delete(self.meta, points_selector=stale, wait=True)

    def renew_write(self) -> None:
        """Tell other processes that this writer is alive (at most every ``RENEW_SECONDS``)."""
        if time.time() - self.renewed >= RENEW_SECONDS:
            self.renewed = time.time()
            self.client.set_payload(self.meta, {"seen": self.renewed}, points=[self.writer], wait=True)

    def end_write(self) -> None:
        self.client.delete(self.meta, points_selector=[self.writer], wait=True)

    def close(self) -> None:
        if not self.owned:
            return
        try:
            self.client.close()
        except Exception:  # closing twice
            logger.debug("closing the Qdrant client", exc_info=True)

    def optimize(self) -> None:
        """Nothing to do: a server optimises in the background."""

    # -- reading ------------------------------------------------------------------------------------
    def count_images(self) -> int:
        return self.client.count(self.images, exact=True).count

    def count_regions(self) -> int:
        return self.client.count(self.regions, exact=True).count

    def _scroll(self, collection: str, payload, batch: int = 1000):
        offset = None
        while True:
            points, offset = self.client.scroll(collection, limit=batch, offset=offset, with_payload=payload)
            yield from points
            if offset is None:
                return

    def scroll_images(self, fields: list[str]):
        for point in self._scroll(self.images, fields):
            yield point.payload

    def region_ids(self):
        for point in self._scroll(self.regions, False):
            yield str(point.id)

    def get_rows(self, ids: list[str]) -> dict[str, np.ndarray]:
        points = self.client.retrieve(self.regions, list(ids), with_payload=False, with_vectors=True) if ids else []
        return {str(p.id): np.asarray(p.vector, dtype=np.float32) for p in points}

    def get_images(self, digests, fields: list[str]) -> dict[str, tuple[dict, np.ndarray]]:
        ids = [point_id(d) for d in dict.fromkeys(digests)]
        points = self.client.retrieve(self.images, ids, with_payload=fields, with_vectors=True) if ids else []
        return {p.payload["hash"]: (p.payload, np.asarray(p.vector, dtype=np.float32)) for p in points}

    def _query(self, collection: str, query: np.ndarray, hnsw_ef: int | None = None, **kw) -> list:
        """``query_points`` with int8 candidates re-scored in float32 (``OVERSAMPLING`` x limit) and
        ``hnsw_ef`` where the collection has a graph."""
        from qdrant_client import models

        from regioncap.index.edge import OVERSAMPLING

        params = models.SearchParams(hnsw_ef=hnsw_ef, quantization=models.QuantizationSearchParams(
            rescore=True, oversampling=OVERSAMPLING))
        with warnings.catch_warnings():  # qdrant-client's in-process mode searches exactly and says so
            warnings.simplefilter("ignore", UserWarning)
            return self.client.query_points(collection, query=query.tolist(), search_params=params, **kw).points

    def sentence_candidates(self, s: np.ndarray, limit: int, fields: list[str]) -> list[tuple[dict, np.ndarray]]:
        points = self._query(self.images, s, limit=limit, with_payload=fields, with_vectors=True)
        return [(p.payload, np.asarray(p.vector, dtype=np.float32)) for p in points]

    def phrase_candidates(self, s: np.ndarray, limit: int) -> list[tuple[str, int, str]]:
        from qdrant_client import models

        from regioncap.index.edge import HNSW_EF

        regions_only = models.Filter(must=[models.FieldCondition(key="index", range=models.Range(gte=0))])
        points = self._query(self.regions, s, hnsw_ef=HNSW_EF, limit=limit, query_filter=regions_only,
                             with_payload=["hash", "index", TOKEN])
        return [(p.payload["hash"], int(p.payload["index"]), p.payload.get(TOKEN) or "") for p in points]

    # -- writing ------------------------------------------------------------------------------------
    def put_rows(self, items: list[tuple[str, np.ndarray, dict]]) -> None:
        from qdrant_client import models

        rows = [models.PointStruct(id=pid, vector=vector.tolist(), payload=payload)
                for item in items for pid, vector, payload in row_points(*item)]
        for start in range(0, len(rows), 1024):
            self.client.upsert(self.regions, rows[start:start + 1024], wait=True)

    def put_images(self, items: list[tuple[str, np.ndarray, dict]]) -> None:
        from qdrant_client import models

        if items:
            self.client.upsert(self.images, [models.PointStruct(id=point_id(digest), vector=vector.tolist(),
                                                                payload=payload)
                                             for digest, vector, payload in items], wait=True)

    def set_paths(self, digest: str, paths: list[str]) -> None:
        self.client.set_payload(self.images, {"paths": paths}, points=[point_id(digest)], wait=True)

    def delete_images(self, digests: list[str]) -> None:
        if digests:
            self.client.delete(self.images, points_selector=[point_id(d) for d in digests], wait=True)

    def delete_rows(self, ids: list[str]) -> None:
        if ids:
            self.client.delete(self.regions, points_selector=ids, wait=True)
