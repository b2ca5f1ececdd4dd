"""The order in which an index's points are written and deleted: the one place that decides what a kill leaves.

An image is stored as one image point (id: its content hash; payload: paths, size, regions, settings and
``analysis``, a token new with every analysis) and 1 + N rows in the regions shard or collection (the whole
image, then each region), whose ids derive from (hash, analysis token, row). A new analysis of an image
therefore never overwrites the rows of the analysis its image point names:

* :func:`write` stores an analysis: its rows under their new ids, then the image point (the switch: from
  here on the image is the new analysis, with its paths), then the rows of the analysis it replaced;
* :func:`delete` forgets images: the image points first, then their rows;
* :func:`repair` deletes the rows of no image point's analysis (left by a write or a delete killed between
  its steps); every writer runs it before it writes.

So after a kill at any step each image point's rows are all there and hold its analysis's vectors; rows of
no image are ignored by a search (:func:`is_current`) until the next writer removes them, and an image whose
new analysis was never switched to keeps its old one (its settings differ, so the next run redoes it).

Indexes written before the tokens (schema 2) have no ``analysis``: token "", rows at the ids
``hash:row`` they were written under; they keep working, and their next analysis gets a token.
"""

from __future__ import annotations

import uuid

import numpy as np

from regioncap.index.files import point_id

SCHEMA = 3  # of the index records (both engines): 3 = rows keyed by analysis token
READ_SCHEMAS = (2, 3)  # 2: rows without tokens; its record is upgraded to 3 before the first write
TOKEN = "analysis"  # the payload key of an image point's (and each of its rows') analysis token


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def token_of(payload: dict) -> str:
    return payload.get(TOKEN) or ""


def row_ids(digest: str, token: str, regions: int) -> list[str]:
    """The point ids of an analysis's rows: the whole image (-1), then regions 0..N-1."""
    prefix = f"{digest}:{token}:" if token else f"{digest}:"
    return [point_id(f"{prefix}{i}") for i in range(-1, regions)]


def rows_of(payload: dict) -> list[str]:
    """The row ids of a stored image point (payload with ``hash``, ``regions`` and ``analysis``)."""
    return row_ids(payload["hash"], token_of(payload), len(payload["regions"]))


def row_points(digest: str, multivector: np.ndarray, payload: dict) -> list[tuple[str, np.ndarray, dict]]:
    """``(id, vector, payload)`` of each row of an image ``(hash, multivector [1 + N, D], payload)``."""
    token = token_of(payload)
    ids = row_ids(digest, token, len(multivector) - 1)
    return [(pid, multivector[i], {"hash": digest, "index": i - 1, TOKEN: token}) for i, pid in enumerate(ids)]


def is_current(payload: dict, token: str) -> bool:
    """Whether a row of analysis ``token`` belongs to the image point ``payload`` (else: an orphan)."""
    return token_of(payload) == token


def write(store, digest: str, multivector: np.ndarray, payload: dict, old: dict | None = None) -> dict:
    """Store an analysis (``multivector`` [1 + N, D]: the whole image, then its regions) as image ``digest``;
    ``old``: the image point it replaces (None: a new image). Returns the payload stored."""
    payload = {**payload, TOKEN: new_token()}
    store.put_rows([(digest, multivector, payload)])  # 1. new rows, new ids: nothing of the old analysis moves
    store.put_images([(digest, multivector, payload)])  # 2. the switch
    if old is not None:
        store.delete_rows(rows_of(old))  # 3. the old analysis's rows (a kill before: orphans, see repair)
    return payload


def delete(store, payloads: list[dict]) -> None:
    """Forget these stored images: the image points, then their rows."""
    if payloads:
        store.delete_images([p["hash"] for p in payloads])
        store.delete_rows([pid for p in payloads for pid in rows_of(p)])


def repair(store, images: dict[str, dict]) -> int:
    """Delete every row that is not one of the rows of an image of ``images`` (hash -> payload with
    ``hash``, ``regions``, ``analysis``: every stored image). Returns the rows deleted."""
    expected = {pid for payload in images.values() for pid in rows_of(payload)}
    if store.count_regions() == len(expected):  # rows are written before and deleted after their image
        return 0
    orphans = [pid for pid in store.region_ids() if pid not in expected]
    store.delete_rows(orphans)
    return len(orphans)
