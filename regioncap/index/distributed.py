"""Indexing on a Ray cluster with Ray Data: ``python -m regioncap index PATHS --index DIR --ray [ADDRESS]``.

    counts = index_with_ray(RegionIndex("photos.index", model), ["~/Pictures"], address="ray://head:10001")

The driver (this process) holds the index and does everything that needs no model: it expands the
paths, reads the index's state, hashes the files and records those whose bytes are stored already
(unchanged, or the same bytes under a new path). Only the files that need an analysis, one per distinct
content, go to Ray Data: ``from_items`` -> ``map_batches`` on a pool of actors, each of which loads the
model once (one GPU each where the cluster has GPUs), reads and decodes its files and analyses them in
batches. Results stream back as they are made and the driver records them with the very code of
:meth:`RegionIndex.add <regioncap.index.region_index.RegionIndex.add>` (``_record`` / ``_apply`` /
``write``), so an image's rows are written before its image point (:mod:`regioncap.index.ledger`) and a
driver killed mid-run is completed by running the same command again (content-hash ids: no image twice, none missing).

Every node must see the files at the paths the driver sees (a shared file system) and be able to load
the model by its name (a folder at the same path, or a Hub repo id). Ray is optional:
``pip install -r requirements-scale.txt``; this module imports it only when called.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from regioncap import batch
from regioncap.errors import RegionCapError
from regioncap.index.files import expand_paths
from regioncap.models.identity import model_identity
from regioncap.models.results import AnalysisResult, Region

logger = logging.getLogger(__name__)
INSTALL = "pip install -r requirements-scale.txt"
CPUS_PER_ACTOR = 1  # a CPU actor runs torch on one thread: N actors on N cores beat one process on N threads
BATCHES_PER_TASK = 4  # model batches per Ray Data batch (per call of an actor)


def require_ray(address: str | None = None):
    """The ``ray`` module (with Ray Data); RegionCapError saying how to install it when it is missing,
    or when ``address`` is given and nothing answers there (see :func:`check_reachable`)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RegionCapError(f"--ray needs Ray Data, which is not installed: {INSTALL}") from None
    if address:
        check_reachable(address)
    return ray


def index_with_ray(index, paths, address: str | None = None, progress=None, batch_size: int | None = None,
                   workers: int | None = None, actors: int | None = None, revision: str | None = None) -> dict:
    """:meth:`RegionIndex.add` with the analysis on a Ray cluster; returns the same counts.

    Args:
        index: the RegionIndex to add to (written from this process, which holds its lock).
        address: the cluster's address (``ray.init(address=...)``); None: a local Ray (an already
            connected one, one started with ``ray start`` on this machine, or a new one).
        batch_size: images per model call in an actor (default: 8 with GPUs, 1 on CPUs).
        workers: threads that read and hash files here and read and decode them in each actor.
        actors: actors in the pool (default: one per GPU of the cluster, else one per CPU).
        revision: the Hub revision the model was loaded at (the actors load the same).
    """
    ray = require_ray()
    name = model_source(index.model, revision)
    if address and not ray.is_initialized():
        check_reachable(address)
    files, missing = expand_paths(paths)
    counts = {"added": 0, "updated": 0, "unchanged": 0,
              "failed": [{"path": p, "error": f"{p}: {why}"} for p, why in missing]}
    analyse = _Pool(index, name, address, revision, batch_size, workers, actors)
    try:
        with index._writing():
            images, by_path = index._state()
            index._repair(images)
            todo: dict[str, list[str]] = {}  # content hash -> the files with those bytes that need it analysed
            records = _records(index, files, images, todo, workers, analyse)
            index._record(records, counts, images, by_path, progress, len(files))
            index.store.optimize()
    finally:
        analyse.close()
    return counts


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """RegionCapError unless ``host:port`` (or ``ray://host:port``) accepts a connection: ``ray.init``
    would retry an address that does not answer for minutes. ``auto`` and other forms are Ray's to judge."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if match is None:
        return
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout).close()
    except OSError as e:
        raise RegionCapError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                             "`ray start --head` or give the address it printed") from None


def model_source(model, revision: str | None = None) -> str:
    """What an actor loads the model from: its saved folder (absolute) or Hub repo id, checked to hold
    this very model (the files' identity, see :mod:`regioncap.models.identity`)."""
    from regioncap.models.text_model import TextModel

    name = getattr(model, "name_or_path", None)
    if not name:
        raise RegionCapError("--ray: each Ray actor loads the model by name, and this model was never saved: "
                             "save it with save_pretrained(DIR) (or push it to the Hub) and load it from there")
    name = str(Path(name).resolve()) if Path(name).is_dir() else str(name)
    if TextModel.from_pretrained(name, revision=revision).identity != model_identity(model):
        raise RegionCapError(f"--ray: the files of {name} are not this model (changed since it was loaded, or "
                             "the model was modified in memory): save it again and load it from there")
    return name


def _records(index, files, images: dict, todo: dict, workers, analyse):
    """``(path, digest, result, error)`` for RegionIndex._record: files that need no analysis as they are
    hashed (recorded before the next is judged, so ``images`` is current), then the analysed ones as
    the cluster returns them."""
    for item in batch.load_files(files, workers, decode=lambda path, digest: False):
        if item.error is not None:
            yield str(item.path), None, None, item.error
        elif index._current(images.get(item.digest)):
            yield str(item.path), item.digest, None, None
        else:
            todo.setdefault(item.digest, []).append(str(item.path))
    yield from analyse(todo)


class _Pool:
    """Runs the analysis of ``todo`` (hash -> paths) on Ray Data; yields records for each path. Joins
    (or starts) Ray only when there is something to analyse, and leaves what it joined on :meth:`close`."""

    def __init__(self, index, name, address, revision, batch_size, workers, actors):
        self.index, self.name, self.address, self.revision = index, name, address, revision
        self.batch_size, self.workers, self.actors = batch_size, workers, actors
        self.connected = False

    def close(self) -> None:
        if self.connected:
            require_ray().shutdown()
            self.connected = False

    def __call__(self, todo: dict[str, list[str]]):
        if not todo:
            return
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(address=self.address or None, log_to_driver=False, logging_level=logging.WARNING)
            self.connected = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        per_actor = {"num_gpus": 1} if gpus else {"num_cpus": CPUS_PER_ACTOR}
        size = min(len(todo), self.actors or gpus or max(1, int(resources.get("CPU", 1)) // CPUS_PER_ACTOR))
        batch_size = self.batch_size or (8 if gpus else 1)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours is the bar; Ray Data's would interleave with it
        # its notes on each execution, and on a failure a traceback (the message ends ours): with -v only
        logging.getLogger("ray.data").setLevel(logging.INFO if logger.isEnabledFor(logging.INFO) else
                                               logging.CRITICAL)
        settings = {"model": self.name, "revision": self.revision, "identity": self.index.model_id,
                    "device": "cuda" if gpus else "cpu", "threads": None if gpus else CPUS_PER_ACTOR,
                    "max_regions": self.index.max_regions, "threshold": self.index.score_threshold,
                    "batch_size": batch_size, "workers": self.workers}
        logger.info("analysing %d images on %d Ray actors (%s)", len(todo), size, per_actor)
        ds = ray.data.from_items([{"digest": d, "path": paths[0]} for d, paths in todo.items()])
        ds = ds.map_batches(Analyzer, fn_constructor_kwargs=settings, batch_size=batch_size * BATCHES_PER_TASK,
                            compute=ray.data.ActorPoolStrategy(size=size), **per_actor)
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for i, digest in enumerate(out["digest"]):
                    yield from self._file_records(todo, str(digest), str(out["path"][i]), out["vectors"][i],
                                                  str(out["regions"][i]), int(out["width"][i]),
                                                  int(out["height"][i]), str(out["error"][i]))
        except ray.exceptions.RayError as e:
            lines = [line for line in str(e).splitlines() if line.strip()]
            last = re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1]) if lines else type(e).__name__
            raise RegionCapError(f"the Ray job failed: {last}") from None

    def _file_records(self, todo, digest, path, vectors, regions, width, height, error):
        keys = todo[digest]
        if error:  # the same bytes fail the same way under every path
            for key in keys:
                yield key, digest, None, error.replace(path, key)
            return
        vectors = torch.from_numpy(np.array(vectors, dtype=np.float32))  # [1 + N, D]; a copy: Ray's is read-only
        result = AnalysisResult([Region(**r) for r in json.loads(regions)], vectors[1:], vectors[0], width, height,
                                {}, self.index.model)
        for key in keys:
            yield key, digest, result, None


class Analyzer:
    """A Ray Data actor: loads the model once, then analyses batches of ``{"digest", "path"}`` rows.

    Returns per file ``digest``, ``path``, ``vectors`` (FloatArray[1 + N, D]: the whole image, then its N
    regions), ``regions`` (JSON: the N regions' fields), ``width``, ``height`` and ``error`` ("" when
    analysed; else the reason, naming the file, and no vectors).
    """

    def __init__(self, model: str, revision: str | None, identity: str, device: str, threads: int | None,
                 max_regions: int, threshold: float, batch_size: int, workers: int | None):
        from regioncap.models.model import RegionCaptioner

        if threads:
            torch.set_num_threads(threads)
        self.model = RegionCaptioner.from_pretrained(model, revision=revision, device=device)
        if model_identity(self.model) != identity:  # the folder changed, or the driver's model was modified
            raise RegionCapError(f"{model} on this node is not the model the index is built with "
                                 f"(id {model_identity(self.model)[:12]}, not {identity[:12]})")
        self.max_regions, self.threshold = max_regions, threshold
        self.batch_size, self.workers = batch_size, workers
        self.dim = self.model.config.joint_dim

    def __call__(self, rows: dict) -> dict:
        digests = [str(d) for d in rows["digest"]]
        loaded = batch.load_files([Path(p) for p in rows["path"]], self.workers)
        out = {key: [] for key in ("digest", "path", "vectors", "regions", "width", "height", "error")}
        for digest, (item, result) in zip(digests, batch.analyze_loaded(self.model, loaded, self.batch_size,
                                                                         self.max_regions, self.threshold)):
            error = item.error
            if error is None and item.digest != digest:
                error = f"{item.path}: the file changed while it was being indexed; index it again"
            ok = error is None and result is not None
            out["digest"].append(digest)
            out["path"].append(str(item.path))
            out["vectors"].append(torch.cat([result.image_vector[None], result.vectors]).numpy().astype(np.float32)
                                  if ok else np.zeros((0, self.dim), np.float32))
            out["regions"].append(json.dumps([asdict(r) for r in result.regions]) if ok else "[]")
            out["width"].append(result.width if ok else 0)
            out["height"].append(result.height if ok else 0)
            out["error"].append("" if ok else error or f"{item.path}: not analysed")
        return out
