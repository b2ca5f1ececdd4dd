"""The embedded engine: Qdrant Edge (``qdrant-edge-py``), Qdrant's own engine in the process.

An index folder holds two Edge shards and a record of the model that built it::

    DIR/regioncap-index.creating  the creation marker: written first, into an empty or new folder; removed last
    DIR/regioncap-index.json   {"format": "regioncap-edge", "schema": 3, "model", "model_id", "dim"}; written
                               after the shards: a folder with neither file is not regioncap's
    DIR/images/                one point per image: the multivector [whole-image vector, region vectors...]
                               (MaxSim over dot products = S_kl), payload = paths, size, regions, settings;
                               float32 on disk, an int8 copy in RAM (built by ``optimize``), in up to
                               ``SEGMENTS`` segments that a search scans in parallel threads
    DIR/regions/               one point per row of that multivector (``index`` -1 = the whole image):
                               brute force up to ~20,000 rows, HNSW beyond over int8 copies in RAM, the
                               best re-scored from the float32 vectors on disk (built by ``optimize``)

Each shard has a write-ahead log and an exclusive lock (a second process is refused). No pickle anywhere.
An index is created only in an empty (or new) folder, and regioncap deletes in it only what the creation
marker proves it made (a creation killed half-way completes when run again); any other folder is refused.

A sentence is ranked by MaxSim over every image, which reads every stored vector: up to
``DIRECT_IMAGES`` images from the float32 vectors (exact), above from the int8 copies, a quarter of the
bytes, with each segment's best ``OVERSAMPLING`` × limit images re-scored from the float32 vectors. At
100,000 images (766,624 vectors) in one segment Edge's float32 scan took 77 ms (p50), its int8 one with
re-scoring 41 ms, and that found the exact top 10 of all 60 test sentences. Edge scans a shard's
segments in parallel (one thread per core), one segment in one thread, and turns what was written between
two optimisations into one segment: so the images shard is optimised every ``SEGMENT_IMAGES`` images
written and keeps up to ``SEGMENTS`` segments (Edge's merge optimiser), and its scan runs on every core:
at 100,000 images 39 ms in one segment, 22 ms in seven on this machine's two cores
(docs/collection-search.md).

Phrase-first candidates (each phrase's nearest rows through HNSW, then MaxSim over their images) were
tried and found 0.74 of the exact top 10 at 1,000 rows per phrase: near-duplicate photos crowd one
phrase's nearest rows. ``benchmarks/bench_index.py`` measures the recall against an exhaustive S_kl over
every stored vector.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from regioncap.errors import SearchIndexError
from regioncap.fileio import fsync_path, write_json_atomic
from regioncap.index.files import INDEX_MARKERS, point_id
from regioncap.index.ledger import READ_SCHEMAS, SCHEMA, TOKEN, row_points

logger = logging.getLogger(__name__)

FORMAT = "regioncap-edge"
META_FILE, MARKER_FILE = INDEX_MARKERS  # the record, and the creation marker (files.py: never walked as input)
DIRECT_IMAGES = 20_000  # up to this many images a sentence is ranked from the float32 vectors, above from int8
OVERSAMPLING = 2.0  # above DIRECT_IMAGES: each segment's best 2 x limit images by int8 are re-scored in float32
# (at 100,000 images in 8 segments: recall 1.000 at 1x, 2x and 4x; peak RSS 1,689 / 1,800 / 1,984 MB)
# Phrases: the HNSW walk's breadth. Tuned on 300 tuning phrases (validation scenes) at 100,000 images of 5,000
# scenes: top-10 recall 0.974 at ef 1024, 0.985 at 2048, 0.994 at 4096 (re-scoring 8x instead of 2x changed
# nothing: the misses are the graph walk's); p50/p95 7.9 / 11.1 ms at 4096 vs 6.9 / 9.9 at 1024, load 2.8.
HNSW_EF = 4096
SEGMENTS = 8  # the images shard's segments Edge's merge optimiser aims at (it keeps segments under its own
# maximum size, so a million images end in 17): searched in parallel threads
SEGMENT_IMAGES = 5_000  # the images shard is optimised (a new segment) every this many images written
INDEXING_KB = 20_000  # a segment of more vector data gets its HNSW graph / int8 copies: ~20,000 rows at 256-d
OLD_FORMAT_MARKERS = ("meta.json", "collection", ".lock")  # qdrant-client's local mode (schema 1)
SYSTEM_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")  # a folder holding only these is empty (never deleted)


def _edge():
    try:
        import qdrant_edge
    except ImportError:
        raise SearchIndexError("the embedded index needs qdrant-edge-py: pip install -r requirements.txt") from None
    return qdrant_edge


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def check_folder(folder: Path, create: bool) -> dict | None:
    """The folder's index record (None: no index yet: the folder is new, empty, or half-created by us).
    SearchIndexError for a file in the way, an index of the old format (never opened: it holds pickles),
    a folder that holds anything else (it is not regioncap's), or no index where one must exist."""
    if folder.exists() and not folder.is_dir():
        raise SearchIndexError(f"{folder}: is a file, not an index folder")
    meta_path = folder / META_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SearchIndexError(f"{meta_path}: unreadable index record ({_first_line(e)})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SearchIndexError(f"{meta_path}: not a regioncap index record")
        if meta.get("schema") not in READ_SCHEMAS:
            raise SearchIndexError(f"{folder}: an index of schema {meta.get('schema')}, this regioncap reads "
                                   f"schema {' and '.join(map(str, READ_SCHEMAS))}: rebuild it (move the folder "
                                   f"away and run `python -m regioncap index PHOTOS --index {folder}`)")
        return meta
    if folder.is_dir() and any((folder / m).exists() for m in OLD_FORMAT_MARKERS):
        raise SearchIndexError(f"{folder}: an index of the old format (qdrant-client's local mode, which stores "
                               "pickles; it is not opened): rebuild it: move the folder away and run `python -m "
                               f"regioncap index PHOTOS --index {folder}`")
    foreign = folder.is_dir() and not (folder / MARKER_FILE).is_file() and any(p.name not in SYSTEM_FILES
                                                                               for p in folder.iterdir())
    if not create and foreign:  # e.g. the photos folder itself: building an index there would be refused too
        raise SearchIndexError(f"{folder}: not a regioncap index (no {META_FILE}); give --index the folder "
                               "that `python -m regioncap index PHOTOS --index DIR` built")
    if not create:
        raise SearchIndexError(f"{folder}: no index there (build one with `python -m regioncap index PHOTOS "
                               f"--index {folder}`)")
    if foreign:
        raise SearchIndexError(f"{folder}: not empty and not a regioncap index (no {META_FILE}); an index needs "
                               "a folder of its own: give --index a new or empty folder")
    return None


class EdgeStore:
    """Two Edge shards in ``folder`` (see the module docstring); ``folder`` None: a temporary folder,
    removed on :meth:`close` (an in-memory collection, e.g. one visitor's in the app)."""

    kind = "embedded"

    def __init__(self, folder: Path | None, create: bool = True):
        self.temporary = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="regioncap-index-")) if folder is None else Path(folder)
        self.meta = check_folder(self.folder, create)
        self.images = self.regions = None
        self.unoptimised = 0  # images written since the images shard was last optimised
        if self.meta is not None:
            self._open(create=False)

    # -- opening ------------------------------------------------------------------------------------
    def _configs(self, dim: int):
        q = _edge()
        images = q.EdgeConfig(
            vectors=q.EdgeVectorParams(size=dim, distance=q.Distance.Dot, memory=q.Memory.Cold,
                                       multivector_config=q.MultiVectorConfig(q.MultiVectorComparator.MaxSim),
                                       quantization_config=q.ScalarQuantizationConfig(q.ScalarType.Int8,
                                                                                     always_ram=True),
                                       hnsw_config=q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=1)),
            optimizers=q.EdgeOptimizersConfig(default_segment_number=SEGMENTS, indexing_threshold=INDEXING_KB),
            payload_memory=q.Memory.Cold)  # 100,000 images: opened in 0.33 s
        # the graph is walked over int8 copies in RAM, the best re-scored in float32: 230,000 rows opened in
        # 0.27 s, the first 60 phrases p95 7.9 ms (97.3 ms over the memory-mapped float32 vectors), recall kept
        regions = q.EdgeConfig(
            vectors=q.EdgeVectorParams(size=dim, distance=q.Distance.Dot, memory=q.Memory.Cold,
                                       quantization_config=q.ScalarQuantizationConfig(q.ScalarType.Int8,
                                                                                     always_ram=True)),
            hnsw_config=q.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=INDEXING_KB),
            optimizers=q.EdgeOptimizersConfig(indexing_threshold=INDEXING_KB),
            payload_memory=q.Memory.Cold)
        return images, regions

    def _open(self, create: bool, dim: int | None = None) -> None:
        q = _edge()
        configs = self._configs(dim) if create else (None, None)
        shards = []
        try:
            for name, config in zip(("images", "regions"), configs):
                path = self.folder / name
                if create and not (path / "edge_config.json").exists():
                    if path.exists():  # a creation killed half-way starts again: only in a folder we made
                        if not (self.folder / MARKER_FILE).is_file():
                            raise SearchIndexError(f"{path}: not made by regioncap (no {MARKER_FILE} in "
                                                   f"{self.folder}); it is left as it is")
                        shutil.rmtree(path)
                    shards.append(q.EdgeShard.create(str(path), config))
                else:
                    shards.append(q.EdgeShard.load(str(path)))
        except Exception as e:
            for shard in shards:
                shard.close()
            if isinstance(e, SearchIndexError):
                raise
            if "WouldBlock" in str(e):
                raise SearchIndexError(f"{self.folder}: the index is open in another process (an index folder "
                                       "can be used by one process at a time; use a Qdrant server to share "
                                       "one)") from None
            raise SearchIndexError(f"{self.folder}: cannot open the index ({_first_line(e)})") from None
        self.images, self.regions = shards
        if create:
            self.regions.update(q.UpdateOperation.create_field_index("index", q.PayloadSchemaType.Integer))

    def read_meta(self) -> dict | None:
        return self.meta

    def check(self, meta: dict) -> None:
        """Nothing more to check: :func:`check_folder` read the record."""

    def begin_write(self) -> None:
        """Nothing to do: the shards' locks keep a second process out of the folder."""

    def renew_write(self) -> None:
        pass

    def end_write(self) -> None:
        pass

    def create(self, dim: int, meta: dict) -> None:
        """The marker first (the folder is ours from here on), both shards, the record, then the marker
        removed: a folder with neither file is not regioncap's, one with the marker only is completed."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.folder / MARKER_FILE).is_file():
                write_json_atomic(self.folder / MARKER_FILE, {"format": FORMAT, "creating": True})
            self._open(create=True, dim=dim)
            self.write_meta({"format": FORMAT, "schema": SCHEMA, **meta})
            (self.folder / MARKER_FILE).unlink()
            fsync_path(self.folder)
        except OSError as e:
            raise SearchIndexError(f"{self.folder}: cannot create the index ({e.strerror or e})") from None

    def write_meta(self, meta: dict) -> None:
        write_json_atomic(self.folder / META_FILE, meta)
        self.meta = meta

    def close(self) -> None:
        """Flush (so that the next open loads segments instead of replaying the write-ahead log) and close
        both shards, whatever fails (the first failure is raised after)."""
        shards, self.images, self.regions = [s for s in (self.images, self.regions) if s is not None], None, None
        errors = []
        for shard in shards:
            for step in (shard.flush, shard.close):  # closed even when the flush failed: the lock is freed
                try:
                    step()
                except Exception as e:  # noqa: PERF203 - each shard is closed whatever the other did
                    errors.append(e)
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)
        if errors:
            raise SearchIndexError(f"{self.folder}: closing the index failed ({_first_line(errors[0])})")

    def optimize(self, regions: bool = True) -> None:
        """Build what the engine builds in the background on a server (HNSW, quantised copies, merged
        segments): after adding many images; a no-op for small collections. ``regions`` False: the images
        shard only (the regions' graph is built once, at the end).

        Then flush both shards: Edge deletes the folders of segments merged away, and truncates its
        write-ahead log, only when it flushes (without it, 100,000 images written in 5,000s left 77
        segment folders, 5.9 GB for 1.1 GB of data)."""
        for shard in (self.images, self.regions) if regions else (self.images,):
            shard.optimize()
        for shard in (self.images, self.regions):
            shard.flush()
        self.unoptimised = 0

    # -- reading ------------------------------------------------------------------------------------
    def count_images(self) -> int:
        return self.images.count(_edge().CountRequest(exact=True))

    def count_regions(self) -> int:
        return self.regions.count(_edge().CountRequest(exact=True))

    def _scroll(self, shard, payload, vectors: bool = False, batch: int = 1000):
        q, offset = _edge(), None
        while True:
            records, offset = shard.scroll(q.ScrollRequest(offset=offset, limit=batch, with_payload=payload,
                                                           with_vector=vectors))
            yield from records
            if offset is None:
                return

    def scroll_images(self, fields: list[str]):
        """Every image's payload (only ``fields``)."""
        for record in self._scroll(self.images, fields):
            yield record.payload

    def region_ids(self):
        """The point id of every row of the regions shard."""
        for record in self._scroll(self.regions, False):
            yield str(record.id)

    def get_rows(self, ids: list[str]) -> dict[str, np.ndarray]:
        """point id -> vector [D] of those rows of ``ids`` that are stored."""
        records = self.regions.retrieve(list(ids), with_payload=False, with_vector=True) if ids else []
        return {str(r.id): _multivector(r.vector) for r in records}

    def get_images(self, digests, fields: list[str]) -> dict[str, tuple[dict, np.ndarray]]:
        """hash -> (payload, multivector FloatArray[1 + N, D]) for those of ``digests`` that are stored."""
        ids = [point_id(d) for d in dict.fromkeys(digests)]
        records = self.images.retrieve(ids, with_payload=fields, with_vector=True) if ids else []
        return {r.payload["hash"]: (r.payload, _multivector(r.vector)) for r in records}

    def sentence_candidates(self, s: np.ndarray, limit: int, fields: list[str]) -> list[tuple[dict, np.ndarray]]:
        """The ``limit`` images of highest MaxSim with the phrase vectors ``s`` [P, D]: [(payload,
        multivector)]. Over every image, from the float32 vectors up to ``DIRECT_IMAGES`` images, above from
        the int8 copies with the best ``OVERSAMPLING`` x ``limit`` re-scored in float32."""
        q = _edge()
        large = self.images.count(q.CountRequest(exact=False)) > DIRECT_IMAGES  # exact: 5.4 ms at 100,000 images
        quantization = (q.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING) if large else
                        q.QuantizationSearchParams(ignore=True))
        points = self.images.query(q.QueryRequest(limit=limit, query=q.Query.Nearest(s.tolist()),
                                                  params=q.SearchParams(quantization=quantization),
                                                  with_payload=fields, with_vector=True))
        return [(p.payload, _multivector(p.vector)) for p in points]

    def phrase_candidates(self, s: np.ndarray, limit: int) -> list[tuple[str, int, str]]:
        """(hash, region index, analysis token) of at least the ``limit`` regions nearest to the phrase vector ``s`` [D]
        (the caller re-scores them exactly).

        Whole-image rows (one in about eleven) are dropped from twice ``limit`` unfiltered neighbours, which
        is several times faster than a filtered search, and the rest are all returned (more candidates for
        the exact re-scoring, at no cost to the engine); only when too many of them were whole images is
        the search repeated with the filter."""
        q = _edge()
        request = dict(query=q.Query.Nearest(s.tolist()), with_payload=["hash", "index", TOKEN], params=_params())
        points = self.regions.query(q.QueryRequest(limit=2 * limit, **request))
        found = [_row(p.payload) for p in points if p.payload["index"] >= 0]
        if len(found) < limit and len(points) == 2 * limit:
            regions_only = q.Filter(must=[q.FieldCondition("index", range=q.RangeFloat(gte=0))])
            points = self.regions.query(q.QueryRequest(limit=limit, filter=regions_only, **request))
            found = [_row(p.payload) for p in points]
        return found

    # -- writing ------------------------------------------------------------------------------------
    def put_rows(self, items: list[tuple[str, np.ndarray, dict]]) -> None:
        """Write the rows of images ``(hash, multivector [1 + N, D], payload)`` into the regions shard, at
        the ids of the payload's analysis token (the order of writes: :mod:`regioncap.index.ledger`)."""
        q = _edge()
        rows = [q.Point(pid, vector, payload) for item in items for pid, vector, payload in row_points(*item)]
        for start in range(0, len(rows), 4096):
            self.regions.update(q.UpdateOperation.upsert_points(rows[start:start + 4096]))

    def put_images(self, items: list[tuple[str, np.ndarray, dict]]) -> None:
        """Write image points; every ``SEGMENT_IMAGES`` of them the images shard is optimised, which makes
        them a segment of their own (a search scans segments in parallel)."""
        if items:
            q = _edge()
            self.images.update(q.UpdateOperation.upsert_points(
                [q.Point(point_id(digest), vector, payload) for digest, vector, payload in items]))
            self.unoptimised += len(items)
            if self.unoptimised >= SEGMENT_IMAGES:
                self.optimize(regions=False)

    def set_paths(self, digest: str, paths: list[str]) -> None:
        self.images.update(_edge().UpdateOperation.set_payload([point_id(digest)], {"paths": paths}))

    def delete_images(self, digests: list[str]) -> None:
        """Delete image points (their rows: :func:`regioncap.index.ledger.delete`)."""
        if digests:
            self.images.update(_edge().UpdateOperation.delete_points([point_id(d) for d in digests]))

    def delete_rows(self, ids: list[str]) -> None:
        if ids:
            self.regions.update(_edge().UpdateOperation.delete_points(ids))


def _row(payload: dict) -> tuple[str, int, str]:
    return payload["hash"], int(payload["index"]), payload.get(TOKEN) or ""


def _params():
    q = _edge()
    return q.SearchParams(hnsw_ef=HNSW_EF, quantization=q.QuantizationSearchParams(rescore=True,
                                                                                   oversampling=OVERSAMPLING))


def _multivector(vector) -> np.ndarray:
    """A stored multivector (Edge gives a list of rows, or a dict with the default name "")."""
    if isinstance(vector, dict):
        vector = vector[""]
    return np.asarray(vector, dtype=np.float32)
