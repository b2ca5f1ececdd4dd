"""Collection search: index a folder of photos, find images by sentence (S_kl) and regions by phrase.

See :class:`~regioncap.index.region_index.RegionIndex`; Qdrant underneath (``regioncap.index.store``).
"""

from regioncap.index.region_index import ImageHit, Match, RegionHit, RegionIndex

__all__ = ["ImageHit", "Match", "RegionHit", "RegionIndex"]
