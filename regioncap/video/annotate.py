"""An annotated copy of a video: each sampled frame with its tracks' numbered boxes and kept captions.

The copy plays at the sampling rate (``--every 0.5``: 2 frames a second), each frame at its own time,
so it lines up with the JSON's times and the audio-description track. It is H.264 (libx264) when the
PyAV wheel has it, else MPEG-4 Part 2, in an .mp4 whose ``comment`` says regioncap wrote it: an
existing file without it is never overwritten, nor is an input (:func:`check_target`). The file is
finished properly when the run stops early (Ctrl-C): what was written plays.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

from regioncap import annotate
from regioncap.viz import draw_regions

logger = logging.getLogger(__name__)

COMMENT = "regioncap annotated video"


def encoder_name() -> str:
    """The best video encoder the installed PyAV wheel offers for .mp4."""
    import av

    return next((c for c in ("libx264", "h264", "mpeg4") if c in av.codecs_available), "mpeg4")


def is_ours(path: Path) -> bool:
    """True when ``path`` is a video this module wrote (its container comment is :data:`COMMENT`)."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment", "").startswith(COMMENT)
    except (av.error.FFmpegError, OSError):
        return False


def check_target(target: Path, inputs) -> None:
    """RegionCapError when writing ``target`` would replace an input (one of ``inputs``) or a file this module
    did not write: :func:`regioncap.annotate.check_target`'s rule, with :func:`is_ours` for videos."""
    annotate.check_target(Path(target), {Path(p).resolve() for p in inputs}, ours=is_ours)


class AnnotatedVideo:
    """Writes frames with their tracks drawn to ``path`` at ``rate`` frames a second (frame times kept).

    Args:
        path: the .mp4 to write (checked first with :func:`check_target`).
        size: (width, height) of the frames given to :meth:`add` (even sides).
        rate: the sampling rate (frames a second).
        source: the input's name, recorded in the container's comment.
    """

    def __init__(self, path, size: tuple[int, int], rate: Fraction, source: str = ""):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rate = Fraction(rate)
        self._container = av.open(str(self.path), "w", format="mp4")
        self._container.metadata["comment"] = f"{COMMENT} of {source}" if source else COMMENT
        codec = encoder_name()
        options = {"crf": "23", "preset": "veryfast"} if codec == "libx264" else {}
        self._stream = self._container.add_stream(codec, rate=self.rate, options=options)
        self._stream.width, self._stream.height = size
        self._stream.pix_fmt = "yuv420p"
        self._last_pts = -1
        self.frames = 0

    def add(self, image, time: float, tracks, scale: float = 1.0) -> None:
        """Draw ``tracks`` (``.box`` in the video's pixels, ``.caption``, ``.number``) on ``image`` (the
        frame at the size given, ``scale`` = its width / the video's) and encode it at ``time`` seconds."""
        import av

        boxes = [{"box": [c * scale for c in t.box], "caption": t.caption} for t in tracks]
        drawn = draw_regions(image, boxes, numbers=[t.number for t in tracks]) if tracks else image
        frame = av.VideoFrame.from_image(drawn.convert("RGB"))
        pts = max(self._last_pts + 1, round(time * self.rate))  # in the stream's 1/rate time base
        frame.pts, frame.time_base = pts, Fraction(1) / self.rate
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> AnnotatedVideo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
