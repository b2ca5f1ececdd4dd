"""What a collection search returns: images (by sentence) and regions (by phrase)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    time: float | None = None  # a video's frame: its time in seconds

    def to_dict(self) -> dict:
        return {"path": self.path, **_time(self.time), "score": self.score,
                "matches": [m.to_dict() for m in self.matches]}


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
    time: float | None = None  # a video's frame: its time in seconds

    def to_dict(self) -> dict:
        return {"path": self.path, **_time(self.time), "box": self.box, "caption": self.caption,
                "similarity": self.similarity}


def _time(time: float | None) -> dict:
    """``{"time": t}`` for a video's frame, nothing for a photo."""
    return {} if time is None else {"time": time}
