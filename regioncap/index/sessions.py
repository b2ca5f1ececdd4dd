"""Per-visitor photo collections for a server (the app's Collection tab), bounded in photos and visitors.

Each visitor (a session id) gets an in-memory :class:`RegionIndex` of at most ``max_photos`` photos; at
most ``max_sessions`` collections are kept (the least recently used is dropped first), and ``drop``
frees one at once (the app calls it when the visitor's browser tab closes). A visitor without photos
searches the shared collection: the index named by ``$REGIONCAP_INDEX`` (a folder, or with
``$REGIONCAP_QDRANT_URL`` the server's collections of that name, as ``--index`` names them), or the
example images.

An index handed out to a request (:meth:`own`, :meth:`searchable`) may be dropped or evicted while that
request still uses it: :meth:`RegionIndex.close` waits for the call in progress (an add, a search) to
end, and a later call gets a SearchIndexError, never a half-closed index.
"""

from __future__ import annotations

import collections
import logging
import os
import threading

from regioncap.errors import RegionCapError
from regioncap.index.region_index import RegionIndex, open_index
from regioncap.index.store import QDRANT_URL_ENV

logger = logging.getLogger(__name__)
INDEX_ENV = "REGIONCAP_INDEX"


class SessionCollections:
    def __init__(self, max_photos: int = 50, max_sessions: int = 64):
        self.max_photos, self.max_sessions = max_photos, max_sessions
        self._sessions: collections.OrderedDict[str, RegionIndex] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.shared: RegionIndex | None = None
        self.shared_error: str | None = None
        self.shared_name = ""
        self.ready = threading.Event()

    def open_shared(self, model, location: str | None, examples: list[str]) -> None:
        """Open ``location`` (an existing index) or index ``examples`` in memory; errors are kept to be shown."""
        try:
            if location:
                url = os.environ.get(QDRANT_URL_ENV) or None
                self.shared = open_index(location, model, url, create=False)
                self.shared_name = location
            else:
                index = RegionIndex(":memory:", model)
                index.add(examples)
                self.shared, self.shared_name = index, "the example images"
        except RegionCapError as e:
            self.shared_error = str(e)
        except Exception as e:  # the rest of the app must keep working
            logger.exception("opening the shared collection %s", location)
            self.shared_error = f"{location}: could not be opened ({type(e).__name__}: {e})"
        finally:
            self.ready.set()

    def own(self, session: str) -> RegionIndex | None:
        with self._lock:
            index = self._sessions.get(session)
            if index is not None:
                self._sessions.move_to_end(session)
            return index

    def add(self, session: str, model, paths: list[str], progress=None) -> tuple[dict, int]:
        """Add photos to the session's collection (created on first use). Returns (add()'s counts, photos
        left out because the collection is full). The room left is checked and taken under the
        collection's own lock, so two uploads at once cannot pass ``max_photos`` together."""
        evicted = []
        with self._lock:
            index = self._sessions.get(session)
            if index is None:
                index = self._sessions[session] = RegionIndex(":memory:", model)
                while len(self._sessions) > self.max_sessions:
                    evicted.append(self._sessions.popitem(last=False)[1])
            self._sessions.move_to_end(session)
        for oldest in evicted:  # closed once its visitor's call in progress ends, without making this one wait
            threading.Thread(target=oldest.close, name="regioncap-evict", daemon=False).start()
        with index._lock:  # RegionIndex's writer lock (re-entrant): add() takes it again inside
            room = max(0, self.max_photos - len(index))
            counts = index.add(paths[:room], progress=progress)
        return counts, max(0, len(paths) - room)

    def searchable(self, session: str) -> tuple[RegionIndex, str]:
        """(the index a search of this session uses, its description)."""
        own = self.own(session)
        if own is not None and len(own):
            return own, f"your {_photos(len(own))}"
        if not self.ready.wait(120):
            raise RegionCapError("The example collection is still being indexed; try again in a few seconds.")
        if self.shared is None:
            raise RegionCapError(f"No collection to search: {self.shared_error or 'none was opened'}. "
                                 "Add photos above to search your own.")
        return self.shared, f"{self.shared_name} ({_photos(len(self.shared))})"

    def drop(self, session: str) -> None:
        """Forget the session's collection: closed now, or when the call using it in another thread ends."""
        with self._lock:
            index = self._sessions.pop(session, None)
        if index is not None:
            index.close()

    def __len__(self) -> int:
        return len(self._sessions)


def _photos(count: int) -> str:
    return f"{count} photo{'s' * (count != 1)}"
