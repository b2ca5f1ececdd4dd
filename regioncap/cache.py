"""A small thread-safe LRU cache of analyses, keyed by file content and settings (used by the app)."""

from __future__ import annotations

import collections
import hashlib
import threading
from pathlib import Path


def content_key(path, *settings) -> tuple:
    """``(sha256 of the file's bytes, *settings)``; OSError when the file cannot be read. The same hash keys
    an image in a collection index (:func:`regioncap.index.files.read_file`)."""
    return (hashlib.sha256(Path(path).read_bytes()).hexdigest(), *settings)


class ResultCache:
    """``get(key)`` / ``put(key, value)``; at most ``size`` entries, the least recently used dropped first."""

    def __init__(self, size: int = 32):
        self.size, self._items, self._lock = size, collections.OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
