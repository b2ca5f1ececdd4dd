"""RegionIndex: a searchable collection of photos (Karpathy & Fei-Fei's image-sentence retrieval, on Qdrant).

    index = RegionIndex("photos.index", model)           # a folder (embedded Qdrant), ":memory:" or a URL
    index.add(["~/Pictures"])                             # {"added": .., "updated": .., "unchanged": .., ...}
    index.search("a red circle next to a blue square")    # [ImageHit], best S_kl first
    index.search("a red circle", by="regions")            # [RegionHit], best similarity first

Qdrant ranks the candidates; their scores are then recomputed in torch from the stored vectors with
the very code of ``AnalysisResult.align`` / ``query``, so an image's ``score`` *is* ``align(text).score``
on the stored regions and a region's ``similarity`` *is* ``query()``'s (not merely close in float32).

Keys and crash safety: an image is keyed by the sha256 of its bytes; its regions are written first and
its image point last, so an image counts as indexed only once complete. A killed run leaves at most
regions without an image point (removed on the next ``add``) and the next run redoes that image.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from regioncap.data.image import load_image
from regioncap.errors import ImageError, RegionCapError, SearchIndexError, TextError
from regioncap.index.files import expand_paths, point_id, read_file
from regioncap.models.identity import model_identity
from regioncap.index.store import SCHEMA, Collections, is_url, open_client
from regioncap.models.results import AnalysisResult, Region, sentence_phrases

logger = logging.getLogger(__name__)
MAX_QUERY_CHARS = 1000
MAX_TOP_K = 1000
RERANK_MARGIN = 3  # extra candidates re-scored: Qdrant's and torch's float rounding may order near-ties apart
IMAGE_FIELDS = ["hash", "paths", "width", "height", "regions", "max_regions", "threshold"]


@dataclass
class Match:
    """A phrase of the query and its best region (``region_index`` None: the whole image won)."""

    phrase: str
    box: list[float]
    caption: str
    similarity: float
    region_index: int | None

    def to_dict(self) -> dict:
        return {"phrase": self.phrase, "box": self.box, "caption": self.caption, "similarity": self.similarity}


@dataclass
class ImageHit:
    path: str
    score: float  # S_kl
    matches: list[Match]
    width: int
    height: int
    hash: str
    paths: list[str] = field(default_factory=list)  # every indexed file with these bytes

    def to_dict(self) -> dict:
        return {"path": self.path, "score": self.score, "matches": [m.to_dict() for m in self.matches]}


@dataclass
class RegionHit:
    path: str
    box: list[float]
    caption: str
    similarity: float
    region_index: int
    width: int
    height: int
    hash: str

    def to_dict(self) -> dict:
        return {"path": self.path, "box": self.box, "caption": self.caption, "similarity": self.similarity}


class RegionIndex:
    """A collection of analysed photos in Qdrant, searchable by sentence (images) or phrase (regions).

    Args:
        location: an index folder (embedded Qdrant; created by :meth:`add`), ``":memory:"``, or the
            ``http(s)://`` URL of a Qdrant server.
        model: the RegionCaptioner that analyses the photos and encodes queries. An index remembers the
            model that built it (:func:`~regioncap.models.identity.model_identity`) and refuses another.
        max_regions, score_threshold: the ``analyze`` settings of newly indexed images.
        create: False opens an existing index only (SearchIndexError when there is none).
        prefix: collection-name prefix (several indexes can share one server).
    """

    def __init__(self, location, model, max_regions: int = 10, score_threshold: float = 0.5,
                 create: bool = True, prefix: str = "regioncap"):
        self.location, self.model = str(location), model
        self.max_regions, self.score_threshold = max_regions, float(score_threshold)
        self.model_id = model_identity(model)
        self.model_name = str(getattr(model, "name_or_path", "an unsaved model"))
        self._lock = threading.RLock()  # embedded Qdrant is not thread-safe; the app calls from threads
        self.client = open_client(self.location, create)
        self.store = Collections(self.client, prefix, local=not is_url(self.location))
        meta = self.store.read_meta()
        if meta is None and not create:
            self.close()
            raise SearchIndexError(f"{self.location}: no index there (build one with `python -m regioncap index`)")
        if meta is not None:
            self._check_model(meta)
        else:
            self.store.create(model.config.joint_dim, {"model": self.model_name, "model_id": self.model_id,
                                                       "dim": model.config.joint_dim, "schema": SCHEMA})

    def _check_model(self, meta: dict) -> None:
        if meta.get("model_id") != self.model_id:
            name = meta.get("model", "an unknown model")
            self.close()
            raise SearchIndexError(
                f"{self.location} was built by the model {name} (id {str(meta.get('model_id'))[:12]}), not by "
                f"{self.model_name} (id {self.model_id[:12]}): search or extend it with {name}, or build a new "
                "index (vectors from another model are meaningless here)")

    def close(self) -> None:
        """Release the index (the folder lock of embedded mode)."""
        try:
            self.client.close()
        except Exception:  # closing twice, or after a failed open
            logger.debug("closing %s", self.location, exc_info=True)

    def __enter__(self) -> RegionIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return self.client.count(self.store.images, exact=True).count

    def len(self) -> int:
        """Number of distinct images (by content) in the index."""
        return len(self)

    # -- writing ------------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, dict], dict[str, set[str]]]:
        """(hash -> image payload, path -> hashes listing it) for every indexed image."""
        images, by_path = {}, {}
        for p in self.store.scroll(self.store.images, ["hash", "paths", "max_regions", "threshold", "regions"]):
            images[p.payload["hash"]] = p.payload
            for path in p.payload["paths"]:
                by_path.setdefault(path, set()).add(p.payload["hash"])
        return images, by_path

    def _drop_orphans(self, images: dict[str, dict]) -> None:
        """Remove regions whose image point was never written (a run killed between the two writes)."""
        expected = sum(len(p["regions"]) for p in images.values())
        if self.client.count(self.store.regions, exact=True).count == expected:
            return
        orphans = {p.payload["hash"] for p in self.store.scroll(self.store.regions, ["hash"])} - set(images)
        self.store.delete_regions_of(sorted(orphans))

    def _write(self, digest: str, result: AnalysisResult, paths: list[str], replace: bool) -> dict:
        from qdrant_client import models

        if replace:  # other settings: the image point goes first, so a kill leaves only orphans (see add)
            self.client.delete(self.store.images, points_selector=[point_id(digest)], wait=True)
            self.store.delete_regions_of([digest])
        regions = [r.to_dict() | {"score": r.score, "caption_score": r.caption_score} for r in result.regions]
        points = [models.PointStruct(id=point_id(f"{digest}:{i}"), vector=v.tolist(),
                                     payload={"hash": digest, "index": i, "path": paths[0], **regions[i]})
                  for i, v in enumerate(result.vectors)]
        if points:
            self.client.upsert(self.store.regions, points, wait=True)
        payload = {"hash": digest, "paths": paths, "width": result.width, "height": result.height,
                   "regions": regions, "max_regions": self.max_regions, "threshold": self.score_threshold}
        multivector = torch.cat([result.image_vector[None], result.vectors]).tolist()  # row 0: whole image
        self.client.upsert(self.store.images, [models.PointStruct(id=point_id(digest), vector=multivector,
                                                                  payload=payload)], wait=True)
        return payload

    def _set_paths(self, images: dict, digest: str, paths: list[str]) -> None:
        """Give image ``digest`` these paths; with none left, the image and its regions are deleted."""
        if paths:
            self.client.set_payload(self.store.images, {"paths": paths}, points=[point_id(digest)], wait=True)
            images[digest]["paths"] = paths
        else:
            self.client.delete(self.store.images, points_selector=[point_id(digest)], wait=True)
            self.store.delete_regions_of([digest])
            images.pop(digest, None)

    def add(self, paths, progress=None) -> dict:
        """Index image files and folders (recursive); returns ``{"added", "updated", "unchanged", "failed"}``
        (``failed``: ``[{"path", "error"}]``). ``progress``: optional wrapper of the file list (e.g. tqdm).

        A file whose bytes are already indexed (under this path, with these settings) is unchanged; a known
        path with new bytes is updated; a new path is added (the same bytes under two paths are stored once).
        """
        files, missing = expand_paths(paths)
        counts = {"added": 0, "updated": 0, "unchanged": 0,
                  "failed": [{"path": p, "error": f"{p}: {why}"} for p, why in missing]}
        with self._lock:
            images, by_path = self._state()
            self._drop_orphans(images)
            for path in progress(files) if progress else files:
                key = str(path)
                try:
                    status = self._add_one(path, images, by_path.get(key, set()))
                except ImageError as e:
                    counts["failed"].append({"path": key, "error": str(e)})
                    continue
                by_path[key] = {status[1]}
                counts[status[0]] += 1
        return counts

    def _add_one(self, path: Path, images: dict, old: set[str]) -> tuple[str, str]:
        key = str(path)
        data, digest = read_file(path)
        info = images.get(digest)
        current = info is not None and (info["max_regions"], info["threshold"]) == (self.max_regions,
                                                                                    self.score_threshold)
        if current and key in info["paths"]:
            status = "unchanged"
        elif current:
            self._set_paths(images, digest, info["paths"] + [key])
            status = "updated" if old - {digest} else "added"
        else:
            try:
                image = load_image(data)
            except ImageError as e:
                raise ImageError(str(e).replace("image data", key, 1)) from None
            result = self.model.analyze(image, max_regions=self.max_regions, score_threshold=self.score_threshold)
            keep = info["paths"] if info else []
            images[digest] = self._write(digest, result, keep + ([key] if key not in keep else []), info is not None)
            status = "updated" if info or old - {digest} else "added"
        for stale in old - {digest}:  # the file's earlier content (or a run killed mid-update)
            if stale in images:
                self._set_paths(images, stale, [p for p in images[stale]["paths"] if p != key])
        return status, digest

    def remove(self, paths) -> int:
        """Forget these files (folders: every indexed file under them); returns the images removed."""
        targets = [str(Path(p).expanduser().resolve()) for p in paths]
        with self._lock:
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
        with self._lock:
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
            return self._images(text, top_k) if by == "images" else self._regions(text, top_k)

    def _images(self, text: str, top_k: int) -> list[ImageHit]:
        phrases = sentence_phrases(text, self.model)  # exactly align()'s phrases
        s = self.model.encode_text(phrases)  # [P, D]
        found = self.client.query_points(self.store.images, query=s.tolist(), limit=top_k + RERANK_MARGIN,
                                         with_payload=IMAGE_FIELDS, with_vectors=True).points
        hits = []
        for p in found:
            alignment = self._result(p).align_encoded(phrases, s)
            w, h = p.payload["width"], p.payload["height"]
            matches = [Match(a.phrase, a.region.box if a.region else [0, 0, w, h], a.region.caption if a.region
                             else "", a.similarity, a.region_index) for a in alignment]
            hits.append(ImageHit(p.payload["paths"][0], alignment.score, matches, w, h, p.payload["hash"],
                                 list(p.payload["paths"])))
        hits.sort(key=lambda hit: -hit.score)
        return hits[:top_k]

    def _regions(self, text: str, top_k: int) -> list[RegionHit]:
        s = self.model.encode_text([text])[0]  # [D], as query() encodes its phrase
        found = self.client.query_points(self.store.regions, query=s.tolist(), limit=top_k + RERANK_MARGIN,
                                         with_payload=["hash", "index"]).points
        owners = {p.id: p for p in self.client.retrieve(
            self.store.images, list({point_id(f.payload["hash"]) for f in found}), with_payload=IMAGE_FIELDS,
            with_vectors=True)}
        hits, sims = [], {}
        for f in found:
            owner = owners.get(point_id(f.payload["hash"]))
            if owner is None:  # a region whose image is being rewritten
                continue
            if owner.id not in sims:
                sims[owner.id] = (self._result(owner).vectors @ s).tolist()  # exactly query()'s product
            i, payload = f.payload["index"], owner.payload
            r = payload["regions"][i]
            hits.append(RegionHit(payload["paths"][0], r["box"], r["caption"], sims[owner.id][i], i,
                                  payload["width"], payload["height"], payload["hash"]))
        hits.sort(key=lambda hit: -hit.similarity)
        return hits[:top_k]

    def _result(self, point) -> AnalysisResult:
        """The stored image as the AnalysisResult it came from (regions, vectors, whole-image vector)."""
        vectors = torch.tensor(point.vector, dtype=torch.float32)  # [1 + N, D]
        regions = [Region(**r) for r in point.payload["regions"]]
        return AnalysisResult(regions, vectors[1:], vectors[0], point.payload["width"], point.payload["height"],
                              {}, self.model)

    def images(self) -> list[dict]:
        """Every indexed image: ``{"hash", "paths", "width", "height", "regions"}``."""
        with self._lock:
            return [dict(p.payload) for p in self.store.scroll(self.store.images, IMAGE_FIELDS)]
