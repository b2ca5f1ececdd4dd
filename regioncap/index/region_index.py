"""RegionIndex: a searchable collection of photos (Karpathy & Fei-Fei's image-sentence retrieval, on Qdrant).

    index = RegionIndex("photos.index", model)           # a folder (Qdrant Edge), ":memory:", a URL or a QdrantClient
    index.add(["~/Pictures"])                             # {"added": .., "updated": .., "unchanged": .., ...}
    index.search("a red circle next to a blue square")    # [ImageHit], best S_kl first
    index.search("a red circle", by="regions")            # [RegionHit], best similarity first

Qdrant ranks the candidates; their scores are then recomputed in torch from the stored vectors with
the very code of ``AnalysisResult.align`` / ``query``, so an image's ``score`` *is* ``align(text).score``
on the stored regions and a region's ``similarity`` *is* ``query()``'s (not merely close in float32).

Keys and crash safety: an image is keyed by the sha256 of its bytes; the order of every write and delete
is :mod:`regioncap.index.ledger`'s: an image's rows (regions) go to ids of their own analysis, then its
image point switches to them, so after a kill at any step each image's rows are its analysis's, a killed
run leaves at most rows of no image (ignored by searches, removed by the next writer), and no kill loses a
path. On a server one process writes at a time (a second is refused). A closed index (the app drops a
visitor's collection) is closed once the call in progress ends; a later call is a SearchIndexError.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import numpy as np
import torch

from regioncap import batch
from regioncap.errors import RegionCapError, SearchIndexError, TextError
from regioncap.index import ledger
from regioncap.index.edge import EdgeStore
from regioncap.index.files import walk
from regioncap.index.hits import ImageHit, Match, RegionHit
from regioncap.index.store import ServerStore, collection_prefix, connect, is_url
from regioncap.models.identity import model_identity
from regioncap.models.results import AnalysisResult, Region, sentence_phrases

logger = logging.getLogger(__name__)
MAX_QUERY_CHARS = 1000
MAX_TOP_K = 1000
RERANK_MARGIN = 3  # extra candidates re-scored: Qdrant's and torch's float rounding may order near-ties apart
MEMORY = ":memory:"
IMAGE_FIELDS = ["hash", "paths", "width", "height", "regions", "max_regions", "threshold", ledger.TOKEN, "time"]
VIDEO_FIELDS = ["time", "video", "every", "frames"]  # a video's frame (regioncap.video.indexing)


def open_index(name, model, qdrant_url: str | None = None, **kw) -> RegionIndex:
    """The index called ``name``: the folder ``name``, or with ``qdrant_url`` the collections of
    :func:`~regioncap.index.store.collection_prefix` (name) on that Qdrant server. The one naming rule of
    the command line (``--index NAME [--qdrant-url URL]``) and the app (``$REGIONCAP_INDEX``,
    ``$REGIONCAP_QDRANT_URL``). ``kw``: :class:`RegionIndex`'s."""
    if qdrant_url:
        return RegionIndex(qdrant_url, model, prefix=collection_prefix(name), **kw)
    return RegionIndex(name, model, **kw)


class RegionIndex:
    """A collection of analysed photos in Qdrant, searchable by sentence (images) or phrase (regions).

    Args:
        location: an index folder (Qdrant Edge, in the process; created by :meth:`add`), ``":memory:"``
            (an embedded index in a temporary folder, removed on :meth:`close`), the ``http(s)://`` URL of
            a Qdrant server, or a connected ``qdrant_client.QdrantClient``.
        model: the RegionCaptioner that analyses the photos and encodes queries (a ``TextModel`` can only
            search). An index remembers the model that built it
            (:func:`~regioncap.models.identity.model_identity`) and refuses another.
        max_regions, score_threshold: the ``analyze`` settings of newly indexed images.
        create: False opens an existing index only (SearchIndexError when there is none).
        prefix: collection-name prefix on a server (several indexes can share one server).
    """

    def __init__(self, location, model, max_regions: int = 10, score_threshold: float = 0.5,
                 create: bool = True, prefix: str = "regioncap"):
        self.location, self.model = location if not isinstance(location, (str, Path)) else str(location), model
        self.max_regions, self.score_threshold = max_regions, float(score_threshold)
        self.model_id = model_identity(model)
        self.model_name = str(getattr(model, "name_or_path", None) or "an unsaved model")
        self._lock = threading.RLock()  # one writer at a time; the app calls from threads; close waits for it
        self._closed, self._writers = False, 0
        if isinstance(self.location, str) and not is_url(self.location):
            self.store = EdgeStore(None if self.location == MEMORY else Path(self.location).expanduser(), create)
        else:
            owned = is_url(self.location)
            self.store = ServerStore(connect(self.location) if owned else self.location, prefix, owned)
        try:
            self.meta = self.store.read_meta()
            if self.meta is None and not create:
                raise SearchIndexError(f"{self.location}: no index there (build one with `python -m regioncap "
                                       "index`)")
            if self.meta is not None:
                self._check_meta(self.meta)
            else:
                self.store.create(model.config.joint_dim, {"model": self.model_name, "model_id": self.model_id,
                                                           "dim": model.config.joint_dim})
                self.meta = self.store.read_meta()
        except BaseException:
            self.close()  # every shard it opened, a temporary folder, a connection of its own
            raise

    def _check_meta(self, meta: dict) -> None:
        """The record's schema and dimension, and the model that built it (as for folders, on a server)."""
        self.store.check(meta)
        dim = self.model.config.joint_dim
        if meta.get("model_id") != self.model_id:
            name = meta.get("model", "an unknown model")
            raise SearchIndexError(
                f"{self.location} was built by the model {name} (id {str(meta.get('model_id'))[:12]}), not by "
                f"{self.model_name} (id {self.model_id[:12]}): search or extend it with {name}, or build a new "
                "index (vectors from another model are meaningless here)")
        if meta.get("dim") != dim:
            raise SearchIndexError(f"{self.location} holds {meta.get('dim')}-d vectors, {self.model_name} makes "
                                   f"{dim}-d ones: it is not this model's index")

    def close(self) -> None:
        """Release the index (the folder's lock, a temporary folder, a server connection it opened), once
        the call in progress in another thread (an add, a search) has ended; later calls are refused."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.store.close()

    def _open(self) -> None:
        """SearchIndexError once closed (called under the lock)."""
        if self._closed:
            raise SearchIndexError(f"{self.location}: this collection was closed; open it again to use it")

    @contextlib.contextmanager
    def _writing(self):
        """Hold the index for writing (its lock; on a server, its lease: one writing process at a time)
        and bring an index of schema 2 to schema 3 first (see :mod:`regioncap.index.ledger`)."""
        with self._lock:
            self._open()
            if self._writers == 0:
                self.store.begin_write()
            self._writers += 1
            try:
                if self.meta.get("schema", ledger.SCHEMA) < ledger.SCHEMA:
                    self.meta = {**self.meta, "schema": ledger.SCHEMA}
                    self.store.write_meta(self.meta)
                yield
            finally:
                self._writers -= 1
                if self._writers == 0:
                    self.store.end_write()

    def __enter__(self) -> RegionIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        """Number of distinct images (by content) in the index."""
        with self._lock:
            self._open()
            return self.store.count_images()

    # -- writing ------------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, dict], dict[str, set[str]]]:
        """(hash -> image payload, path -> hashes listing it) for every indexed image."""
        images, by_path = {}, {}
        for payload in self.store.scroll_images(["hash", "paths", "max_regions", "threshold", "regions", ledger.TOKEN,
                                                 *VIDEO_FIELDS]):
            images[payload["hash"]] = payload
            for path in payload["paths"]:
                by_path.setdefault(path, set()).add(payload["hash"])
        return images, by_path

    def _repair(self, images: dict[str, dict]) -> None:
        """Remove rows of no stored image's analysis (what a killed run leaves: :func:`ledger.repair`)."""
        if removed := ledger.repair(self.store, images):
            logger.info("removed %d rows left by an interrupted run", removed)

    def _current(self, info: dict | None) -> bool:
        return info is not None and (info["max_regions"], info["threshold"]) == (self.max_regions,
                                                                                 self.score_threshold)

    def write(self, digest: str, result: AnalysisResult, paths: list[str], old: dict | None = None,
              extra: dict | None = None) -> dict:
        """Store ``result`` as image ``digest`` with these ``paths``; ``old``: its payload when it is
        stored already (other settings): replaced as :func:`ledger.write` orders it. ``extra``: more
        payload (a video frame's ``time``...)."""
        regions = [r.to_dict() | {"score": r.score, "caption_score": r.caption_score} for r in result.regions]
        payload = {"hash": digest, "paths": paths, "width": result.width, "height": result.height,
                   "regions": regions, "max_regions": self.max_regions, "threshold": self.score_threshold,
                   **(extra or {})}
        multivector = torch.cat([result.image_vector[None], result.vectors]).numpy()  # row 0: whole image
        self.store.renew_write()
        return ledger.write(self.store, digest, multivector, payload, old)

    def _set_paths(self, images: dict, digest: str, paths: list[str]) -> None:
        """Give image ``digest`` these paths; with none left, the image and its rows are deleted."""
        if paths:
            self.store.set_paths(digest, paths)
            images[digest]["paths"] = paths
        else:
            ledger.delete(self.store, [images.pop(digest)])

    def add(self, paths, progress=None, batch_size: int | None = None, workers: int | None = None,
            every: float = 0.5) -> dict:
        """Index image and video files and folders (recursive); returns ``{"added", "updated", "unchanged",
        "failed"}`` (``failed``: ``[{"path", "error"}]``). ``progress``: optional wrapper of the file list (e.g. tqdm).
        A video's frames, one every ``every`` seconds, are indexed as pictures with its path and their time
        (:mod:`regioncap.video.indexing`).
        ``workers`` threads read and decode files while the model analyses ``batch_size`` images at a time
        (defaults: :func:`regioncap.batch.default_workers`, :func:`~regioncap.batch.default_batch_size`).

        A file whose bytes are already indexed (under this path, with these settings) is unchanged; a known
        path with new bytes is updated; a new path is added (the same bytes under two paths are stored once).
        """
        if not hasattr(self.model, "analyze_batch"):
            raise RegionCapError(f"{self.model_name}: loaded for searching only; load the whole model to add photos")
        found = walk(paths)
        files = [f.path for f in found.found if f.kind != "video"]
        videos = [f.path for f in found.found if f.kind == "video"]
        counts = {"added": 0, "updated": 0, "unchanged": 0,
                  "failed": [{"path": p, "error": f"{p}: {why}"} for p, why in found.missing]}
        batch_size = batch_size or batch.default_batch_size(getattr(self.model, "device", "cpu"))
        with self._writing():
            images, by_path = self._state()
            self._repair(images)
            loaded = batch.load_files(files, workers, decode=lambda path, digest: not self._current(images.get(digest)))
            results = batch.analyze_loaded(self.model, loaded, batch_size, self.max_regions, self.score_threshold)
            records = ((str(item.path), item.digest, result, item.error) for item, result in results)
            self._record(records, counts, images, by_path, progress, len(files))
            if videos:
                from regioncap.video.indexing import add_videos

                add_videos(self, videos, every, counts, images, by_path, progress)
            self.store.optimize()
        return counts

    def _record(self, records, counts: dict, images: dict, by_path: dict, progress=None, total: int = 0) -> None:
        """Record each ``(path, digest, AnalysisResult or None, error or None)`` of ``records`` (see
        :meth:`_apply`) into the index and ``counts``; ``images``/``by_path``: :meth:`_state`, kept current.
        Shared by :meth:`add` and the Ray driver (:mod:`regioncap.index.distributed`)."""
        for key, digest, result, error in progress(_Sized(records, total)) if progress else records:
            self.store.renew_write()  # a long run of unchanged files writes nothing: the lease must not lapse
            if error is not None:
                counts["failed"].append({"path": key, "error": error})
                continue
            status = self._apply(key, digest, result, images, by_path.get(key, set()))
            by_path[key] = {digest}
            counts[status] += 1

    def _apply(self, key: str, digest: str, result: AnalysisResult | None, images: dict, old: set[str]) -> str:
        """Record file ``key`` with content ``digest`` (``result``: its analysis, None when it was not
        needed); returns its status."""
        info = images.get(digest)
        if self._current(info) and key in info["paths"]:
            status = "unchanged"
        elif self._current(info):
            self._set_paths(images, digest, info["paths"] + [key])
            status = "updated" if old - {digest} else "added"
        else:
            if result is None:  # the same bytes as a file analysed with other settings earlier in this run
                result = self.model.analyze_batch([key], self.max_regions, self.score_threshold)[0]
            keep = info["paths"] if info else []
            images[digest] = self.write(digest, result, keep + ([key] if key not in keep else []), info)
            status = "updated" if info or old - {digest} else "added"
        for stale in old - {digest}:  # the file's earlier content (or a run killed mid-update)
            if stale in images:
                self._set_paths(images, stale, [p for p in images[stale]["paths"] if p != key])
        return status

    def remove(self, paths) -> int:
        """Forget these files (folders: every indexed file under them); returns the images removed."""
        targets = [str(Path(p).expanduser().resolve()) for p in paths]
        with self._writing():
            images, _ = self._state()
            before = len(images)
            for digest, info in list(images.items()):
                keep = [p for p in info["paths"] if not any(p == t or p.startswith(t.rstrip("/") + "/")
                                                            for t in targets)]
                if keep != info["paths"]:
                    self._set_paths(images, digest, keep)
            return before - len(images)

    def prune(self) -> int:
        """Forget files that no longer exist; returns the images removed."""
        with self._writing():
            images, by_path = self._state()
            gone = [p for p in by_path if not Path(p).is_file()]
            return self.remove(gone) if gone else 0

    # -- searching ----------------------------------------------------------------------------------
    def search(self, text: str, by: str = "images", top_k: int = 10) -> list:
        """The ``top_k`` best images for a sentence (``by="images"``: [ImageHit], S_kl) or regions for a
        phrase (``by="regions"``: [RegionHit], similarity), best first.

        Raises TextError for an empty, overlong or unknown-word query; RegionCapError for bad ``by``/``top_k``.
        """
        if by not in ("images", "regions"):
            raise RegionCapError(f"by must be 'images' or 'regions', got {by!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise RegionCapError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
        if isinstance(text, str) and len(text) > MAX_QUERY_CHARS:
            raise TextError(f"the query is {len(text)} characters long; at most {MAX_QUERY_CHARS}, please")
        with self._lock:
            self._open()
            return self._images(text, top_k) if by == "images" else self._regions(text, top_k)

    def _images(self, text: str, top_k: int) -> list[ImageHit]:
        phrases = sentence_phrases(text, self.model)  # exactly align()'s phrases
        s = self.model.encode_text(phrases)  # [P, D]
        hits = []
        for payload, vectors in self.store.sentence_candidates(s.numpy(), top_k + RERANK_MARGIN, IMAGE_FIELDS):
            alignment = self._result(payload, vectors).align_encoded(phrases, s)
            w, h = payload["width"], payload["height"]
            matches = [Match(a.phrase, a.region.box if a.region else [0, 0, w, h], a.region.caption if a.region
                             else "", a.similarity, a.region_index) for a in alignment]
            hits.append(ImageHit(payload["paths"][0], alignment.score, matches, w, h, payload["hash"],
                                 list(payload["paths"]), payload.get("time")))
        hits.sort(key=lambda hit: -hit.score)
        return hits[:top_k]

    def _regions(self, text: str, top_k: int) -> list[RegionHit]:
        s = self.model.encode_text([text])[0]  # [D], as query() encodes its phrase
        limit = top_k + RERANK_MARGIN
        for _ in range(4):  # rows of no image's analysis (a killed run's, until repaired) take no place
            found = self.store.phrase_candidates(s.numpy(), limit)
            owners = self.store.get_images([digest for digest, _, _ in found], IMAGE_FIELDS)
            rows = list(dict.fromkeys((digest, i) for digest, i, token in found if digest in owners and
                                      ledger.is_current(owners[digest][0], token)
                                      and i < len(owners[digest][0]["regions"])))
            if len(rows) >= top_k + RERANK_MARGIN or len(found) < limit:
                break
            limit *= 4
        hits, sims = [], {}
        for digest, i in rows:
            payload, vectors = owners[digest]
            if digest not in sims:
                sims[digest] = (self._result(payload, vectors).vectors @ s).tolist()  # exactly query()'s product
            r = payload["regions"][i]
            hits.append(RegionHit(payload["paths"][0], r["box"], r["caption"], sims[digest][i], i,
                                  payload["width"], payload["height"], digest, payload.get("time")))
        hits.sort(key=lambda hit: -hit.similarity)
        return hits[:top_k]

    def _result(self, payload: dict, vectors: np.ndarray) -> AnalysisResult:
        """The stored image as the AnalysisResult it came from (regions, vectors, whole-image vector)."""
        vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))  # [1 + N, D]
        regions = [Region(**r) for r in payload["regions"]]
        return AnalysisResult(regions, vectors[1:], vectors[0], payload["width"], payload["height"], {}, self.model)

    def images(self) -> list[dict]:
        """Every indexed image: ``{"hash", "paths", "width", "height", "regions"}``."""
        with self._lock:
            self._open()
            return [dict(p) for p in self.store.scroll_images(IMAGE_FIELDS)]


class _Sized:
    """An iterator with a length (for a progress bar's total)."""

    def __init__(self, iterator, length: int):
        self.iterator, self.length = iterator, length

    def __iter__(self):
        return iter(self.iterator)

    def __len__(self) -> int:
        return self.length
