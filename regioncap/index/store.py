"""A Qdrant server (or cluster) as the index's engine, through qdrant-client.

The same layout as the embedded engine (:mod:`regioncap.index.edge`), as three collections under a prefix:

* ``<prefix>_images``: one point per image; vector = the multivector ``[whole-image vector, region
  vectors...]`` compared with ``MAX_SIM`` over dot products, so a query made of a sentence's phrase
  vectors scores S_kl = sum_t max_i v_i . s_t (exactly what ``AnalysisResult.align`` sums).
* ``<prefix>_regions``: one point per row of that multivector (``index`` -1: the whole image).
* ``<prefix>_meta``: one point recording the model that built the index.

The server ranks; how it does so at scale (shards, HNSW, quantisation, vectors on disk) is its
configuration: see docs/collection-search.md. Everything else (keys, write order, exact re-scoring)
is :class:`~regioncap.index.region_index.RegionIndex`'s and the same for both engines.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from regioncap.errors import SearchIndexError
from regioncap.index.edge import row_ids
from regioncap.index.files import point_id

logger = logging.getLogger(__name__)

META_ID = 1  # the one point of the meta collection
SCHEMA = 2


def is_url(location) -> bool:
    return isinstance(location, str) and location.startswith(("http://", "https://"))


def connect(url: str, timeout: int = 10):
    """A QdrantClient for a server URL; SearchIndexError when it does not answer."""
    from qdrant_client import QdrantClient

    client = QdrantClient(url=url, timeout=timeout, check_compatibility=False)
    try:
        client.get_collections()
    except Exception as e:  # httpx / grpc / HTTP status errors all mean "not usable"
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
        self.client, self.owned = client, owned
        self.images, self.regions, self.meta = (f"{prefix}_images", f"{prefix}_regions", f"{prefix}_meta")

    def read_meta(self) -> dict | None:
        if not self.client.collection_exists(self.meta):
            return None
        points = self.client.retrieve(self.meta, [META_ID], with_payload=True)
        return dict(points[0].payload) if points else None

    def create(self, dim: int, meta: dict) -> None:
        """Create the collections (idempotent: an interrupted creation completes), then the model record,
        which is written last: an index without it is treated as not yet created."""
        from qdrant_client import models

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
        if not self.client.collection_exists(self.meta):
            self.client.create_collection(self.meta, vectors_config=models.VectorParams(
                size=1, distance=models.Distance.DOT))
        self.client.upsert(self.meta, [models.PointStruct(id=META_ID, vector=[1.0], payload={"schema": SCHEMA,
                                                                                             **meta})], wait=True)

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

    def region_rows(self):
        for point in self._scroll(self.regions, ["hash"]):
            yield str(point.id), point.payload["hash"]

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

    def phrase_candidates(self, s: np.ndarray, limit: int) -> list[tuple[str, int]]:
        from qdrant_client import models

        from regioncap.index.edge import HNSW_EF

        regions_only = models.Filter(must=[models.FieldCondition(key="index", range=models.Range(gte=0))])
        points = self._query(self.regions, s, hnsw_ef=HNSW_EF, limit=limit, query_filter=regions_only,
                             with_payload=["hash", "index"])
        return [(p.payload["hash"], int(p.payload["index"])) for p in points]

    # -- writing ------------------------------------------------------------------------------------
    def put_rows(self, items: list[tuple[str, np.ndarray, dict]]) -> None:
        from qdrant_client import models

        rows = [models.PointStruct(id=point_id(f"{digest}:{i - 1}"), vector=vector[i].tolist(),
                                   payload={"hash": digest, "index": i - 1})
                for digest, vector, _ in items for i in range(len(vector))]
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

    def delete_images(self, counts: dict[str, int]) -> None:
        if counts:
            self.client.delete(self.images, points_selector=[point_id(d) for d in counts], wait=True)
            self.delete_rows(row_ids(counts))

    def delete_rows(self, ids: list[str]) -> None:
        if ids:
            self.client.delete(self.regions, points_selector=ids, wait=True)
