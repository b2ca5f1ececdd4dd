"""Collection search: index a folder of photos, find images by sentence (S_kl) and regions by phrase.

See :class:`~regioncap.index.region_index.RegionIndex`; Qdrant underneath: Qdrant Edge in the process
(``regioncap.index.edge``) or a Qdrant server (``regioncap.index.store``); ``regioncap.index.distributed``
runs the analysis on a Ray cluster.
"""

from regioncap.index.region_index import ImageHit, Match, RegionHit, RegionIndex, open_index
from regioncap.index.store import collection_prefix

__all__ = ["ImageHit", "Match", "RegionHit", "RegionIndex", "collection_prefix", "open_index"]
