"""A WebVTT audio-description track: a cue each time regions come into view, worded as the narration does.

    WEBVTT - regioncap audio description

    NOTE kind: descriptions (load it with <track kind="descriptions" src="clip.vtt">)

    00:00:02.000 --> 00:00:05.000
    a red triangle comes into view at the left

A player reads each cue aloud (or shows it) at its start, so someone who cannot see the picture hears
what appears and where. Cues are written as they happen and flushed, so an interrupted run leaves a
valid track of what was seen so far. The file carries our header line: a file without it is never
overwritten (:func:`is_ours`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from regioncap.errors import RegionCapError

logger = logging.getLogger(__name__)

HEADER = "WEBVTT - regioncap audio description"
CUE_SECONDS = 3.0  # how long a cue stays: long enough to read "a small red circle comes into view at the top left"


def timestamp(seconds: float) -> str:
    """WebVTT's "hh:mm:ss.ttt"."""
    ms = round(max(0.0, seconds) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def is_ours(path: Path) -> bool:
    """True when ``path`` is a track this module wrote (its first line is :data:`HEADER`)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\r\n") == HEADER
    except OSError:
        return False


class VttWriter:
    """Writes cues to ``path`` as they come. Cues must come in order of start time (a later start is moved
    up to the last one's: WebVTT wants them sorted).

    Raises:
        RegionCapError: ``path`` exists and is not a track this module wrote (it is never overwritten).
    """

    def __init__(self, path, source: str = ""):
        self.path = Path(path)
        if self.path.exists() and not is_ours(self.path):
            raise RegionCapError(f"{self.path}: exists and is not a regioncap audio-description track; "
                                 f"not overwriting it (choose another --vtt file)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8", newline="\n")
        self._last = 0.0
        self.cues = 0
        note = f" of {source}" if source else ""
        self._file.write(f"{HEADER}\n\nNOTE kind: descriptions{note} "
                         f"(load it with <track kind=\"descriptions\">)\n\n")
        self._file.flush()

    def add(self, start: float, lines: list[str], end: float | None = None) -> None:
        """One cue from ``start`` (seconds) to ``end`` (default ``start`` + :data:`CUE_SECONDS`)."""
        if not lines:
            return
        start = max(start, self._last)
        end = max(end if end is not None else start + CUE_SECONDS, start + 0.001)
        self._last = start
        text = "\n".join(" ".join(line.replace("-->", "->").split()) for line in lines)
        self._file.write(f"{timestamp(start)} --> {timestamp(end)}\n{text}\n\n")
        self._file.flush()
        self.cues += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> VttWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_cues(path) -> list[tuple[float, float, list[str]]]:
    """(start, end, lines) of each cue of a WebVTT file (enough of the format to check ours)."""
    cues, block = [], []
    text = Path(path).read_text(encoding="utf-8")
    for chunk in text.replace("\r\n", "\n").split("\n\n"):
        block = [line for line in chunk.split("\n") if line]
        timing = next((i for i, line in enumerate(block) if "-->" in line), None)
        if timing is None:
            continue
        start, end = (_seconds(part.split()[0]) for part in block[timing].split("-->"))
        cues.append((start, end, block[timing + 1:]))
    return cues


def _seconds(stamp: str) -> float:
    parts = [float(p) for p in stamp.strip().split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
