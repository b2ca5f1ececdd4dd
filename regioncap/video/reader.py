"""A video as a stream of sampled frames: upright, reduced to the model's work size, timed by their timestamps.

    with VideoReader("clip.mp4", every=0.5, work_side=(144, 192)) as video:
        video.info.width, video.info.height, video.info.duration    # as shown upright (rotation applied)
        for frame in video:                                         # SampledFrame, one at a time
            frame.time, frame.image                                 # seconds, PIL RGB at the work size

PyAV (FFmpeg's libraries in its wheel) decodes; nothing holds more than the decoder's own few frames, so
memory does not grow with the video's length. Each sampled frame is scaled to the work size by FFmpeg's
scaler straight from the decoded YUV picture (an 8K video never becomes an 8K RGB array), then turned
upright by the display matrix phones write (``VideoFrame.rotation``: degrees counter-clockwise).
Frames are picked by their presentation time, not their index: variable-frame-rate phone videos and
videos with gaps are sampled at the times asked for. A frame is taken when its time reaches the next
multiple of ``every`` seconds (``every=0``: every frame).

Damage is reported after the frames before it: iterating raises :class:`VideoDamagedError` (with
``frames`` and ``time``) once the decoder fails, or when the frames stop well before the duration
the file declares (a file cut short often just ends).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from regioncap.errors import RegionCapError

logger = logging.getLogger(__name__)

# Suffixes a folder walk takes as videos (regioncap.index.files.READERS): containers FFmpeg reads whose
# files are nearly always video. A named file of any suffix is tried all the same.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".wmv", ".mpg", ".mpeg",
                            ".m2ts", ".mts", ".ts", ".3gp", ".3g2", ".flv", ".ogv", ".mxf"})


class VideoError(RegionCapError, ValueError):
    """A video that cannot be read: not a video, no video stream, no frames, an unknown codec."""


class VideoDamagedError(VideoError):
    """A video that is corrupt or cut short after ``frames`` good sampled frames (the last at ``time`` s)."""

    def __init__(self, message: str, frames: int, time: float | None):
        super().__init__(message)
        self.frames, self.time = frames, time


@dataclass
class VideoInfo:
    """What a video is, as shown: ``width`` x ``height`` upright (rotation applied), ``duration`` in seconds
    (None when the file does not say), the average ``fps`` (None when unknown), ``rotation`` in degrees
    counter-clockwise and the ``codec`` name."""

    path: Path
    width: int
    height: int
    duration: float | None
    fps: float | None
    rotation: int
    codec: str


@dataclass
class SampledFrame:
    """One sampled frame: its ``time`` in seconds from the start, ``image`` (PIL RGB, upright, at most the
    work size) and ``view`` (the same frame at the viewing size, when asked for; else None)."""

    index: int
    time: float
    image: Image.Image
    view: Image.Image | None = None


def work_size(width: int, height: int, min_side: int | None, max_side: int | None) -> tuple[int, int]:
    """(w, h) a ``width`` x ``height`` frame is reduced to: what a torchvision detector resizes to (short side
    ``min_side``, long side at most ``max_side``), never enlarged. Either limit None: not applied."""
    scale = 1.0
    if min_side:
        scale = min(scale, min_side / min(width, height))
    if max_side:
        scale = min(scale, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return tuple(max(2, s - s % 2) for s in size)


def _quarter_turns(rotation: float | None) -> int:
    """Counter-clockwise quarter turns that make a frame with this display rotation upright."""
    return round((rotation or 0) / 90) % 4


class VideoReader:
    """Sampled, upright, reduced frames of one video file (see the module docstring).

    Args:
        path: the video file.
        every: seconds between sampled frames (0: every frame).
        work_side: (min_side, max_side) the frames are reduced to (see :func:`work_size`); None: full size.
        view_side: also give each frame at this longest side (even sides; never enlarged), e.g. to draw an
            annotated copy; None: no view.

    Raises:
        VideoError: on opening: not a video, no video stream (audio only), no frames, unknown codec.
    """

    def __init__(self, path, every: float = 0.5, work_side: tuple[int | None, int | None] | None = None,
                 view_side: int | None = None):
        import av

        if not every >= 0 or math.isinf(every):
            raise VideoError(f"every must be a number of seconds >= 0, got {every}")
        self.path, self.every = Path(path), float(every)
        self.work_side, self.view_side = work_side, view_side
        self._av = av
        self._container = self._open()
        try:
            self.stream = self._video_stream()
            self.info = self._info()
        except BaseException:
            self._container.close()
            raise

    # -- opening ---------------------------------------------------------------------------------------
    def _open(self):
        av, path = self._av, self.path
        try:
            size = path.stat().st_size
        except OSError as e:
            raise VideoError(f"{path}: cannot read ({e.strerror or e})") from None
        if size == 0:
            raise VideoError(f"{path}: file is empty (0 bytes)")
        try:
            return av.open(str(path), metadata_errors="ignore")
        except av.error.EOFError:
            raise VideoError(f"{path}: zero-length video (no frames)") from None
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: not a video PyAV can read ({_reason(e)})") from None

    def _video_stream(self):
        container, path = self._container, self.path
        if not container.streams.video:
            if container.streams.audio:
                raise VideoError(f"{path}: audio only, no video stream")
            raise VideoError(f"{path}: zero-length video (no video stream or frames)")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise VideoError(f"{path}: unsupported video codec: this FFmpeg build has no decoder for it")
        stream.thread_type = "AUTO"
        return stream

    def _info(self) -> VideoInfo:
        stream, container = self.stream, self._container
        ctx = stream.codec_context
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        self._stream_duration = stream.duration is not None
        rate = stream.average_rate or stream.guessed_rate
        width, height = ctx.width, ctx.height
        if not width or not height:
            raise VideoError(f"{self.path}: zero-length video (no frame size recorded)")
        self._frames = container.decode(stream)
        self._first = self._first_frame()
        if self._first is None:
            raise VideoError(f"{self.path}: zero-length video (no frames could be decoded)")
        rotation = int(round(getattr(self._first, "rotation", 0) or 0))
        if _quarter_turns(rotation) % 2:
            width, height = height, width
        return VideoInfo(self.path, width, height, duration, float(rate) if rate else None, rotation, ctx.name)

    def _first_frame(self):
        """Decode the first frame now (its display matrix says how the video is turned); None when none."""
        av = self._av
        try:
            return next(self._frames, None)
        except av.error.FFmpegError as e:
            raise VideoDamagedError(f"{self.path}: corrupt video: its first frame cannot be decoded ({_reason(e)})",
                                    0, None) from None

    # -- reading ---------------------------------------------------------------------------------------
    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self):
        av, path = self._av, self.path
        start = self.stream.start_time * self.stream.time_base if self.stream.start_time is not None else 0
        rate = self.info.fps or 25.0
        next_time, taken, seen, decoded = 0.0, 0, None, 0
        frames, pending, self._first = self._frames, self._first, None
        if pending is None:
            raise VideoError(f"{path}: a video is read once; open it again to read it again")
        while True:
            try:
                frame, pending = (pending, None) if pending is not None else (next(frames), None)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                raise self._damaged(taken, seen, _reason(e)) from None
            decoded += 1
            t = float(frame.pts * frame.time_base - start) if frame.pts is not None else (decoded - 1) / rate
            t = seen = max(0.0, t)
            if self.every and t < next_time - 1e-6:
                continue
            if self.every:
                next_time = (math.floor(t / self.every + 1e-6) + 1) * self.every
            yield self._sample(frame, taken, t)
            taken += 1
        self._check_complete(taken, seen, rate)

    def _sample(self, frame, index: int, t: float) -> SampledFrame:
        turns = _quarter_turns(frame.rotation) if hasattr(frame, "rotation") else 0
        width, height = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
        image = self._scaled(frame, work_size(width, height, *(self.work_side or (None, None))), turns)
        view = None
        if self.view_side:
            view = self._scaled(frame, _even(work_size(width, height, None, self.view_side)), turns)
        return SampledFrame(index, round(t, 6), image, view)

    @staticmethod
    def _scaled(frame, size: tuple[int, int], turns: int) -> Image.Image:
        w, h = (size[1], size[0]) if turns % 2 else size  # the stored (unrotated) frame's sides
        interpolation = "AREA" if w < frame.width else "BILINEAR"
        arr = frame.reformat(width=w, height=h, format="rgb24", interpolation=interpolation).to_ndarray()
        if turns:
            arr = np.ascontiguousarray(np.rot90(arr, k=turns))
        return Image.fromarray(arr, "RGB")

    def _damaged(self, taken: int, last: float | None, why: str) -> VideoDamagedError:
        at = f"after {last:.1f} s" if last is not None else "at its start"
        kept = f"the {taken} sampled frame{'s' if taken != 1 else ''} before it kept" if taken else "nothing kept"
        return VideoDamagedError(f"{self.path}: corrupt or truncated video: decoding failed {at} ({why}); {kept}",
                                 taken, last)

    def _check_complete(self, taken: int, last: float, rate: float) -> None:
        """Frames that stop well before the declared duration: a file cut short (the demuxer just ends)."""
        duration = self.info.duration
        if duration is None:
            return
        # a container's duration also counts its audio, which may run on a little after the picture
        slack = max(3 / rate, self.every) + (0.5 if self._stream_duration else 1.0)
        if last + slack < duration:
            kept = f"the {taken} sampled frame{'s' if taken != 1 else ''} before it kept"
            raise VideoDamagedError(f"{self.path}: truncated video: frames end at {last:.1f} s of the "
                                    f"{duration:.1f} s it declares; {kept}", taken, last)


def frame_at(path, time: float, max_side: int | None = 2048) -> Image.Image:
    """The frame shown at ``time`` seconds (the first at or after it; the last one when ``time`` is past the
    end), upright, its longest side at most ``max_side``: e.g. a search hit's moment. Seeks to the keyframe
    before ``time`` first, so a moment late in a long video is not decoded from the start."""
    with VideoReader(path, every=0, work_side=(None, max_side)) as video:
        stream = video.stream
        if time > 1.0 and stream.time_base:
            start = stream.start_time or 0
            try:
                video._container.seek(start + int(time / stream.time_base), stream=stream, backward=True)
                video._first = next(video._frames, None)  # the decoder restarts at the keyframe
            except (video._av.error.FFmpegError, StopIteration):
                pass
        last = None
        for frame in video:
            last = frame
            if frame.time >= time - 1e-3:
                break
        if last is None:
            raise VideoError(f"{path}: no frame at {time:.1f} s")
        return last.image


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def video_time(seconds: float) -> str:
    """"12:30" or "1:02:03": a position in a video, as players show it."""
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def sampling_rate(every: float, fps: float | None) -> Fraction:
    """Frames per second of the sampled frames: 1/every, or the video's own rate when every frame is taken."""
    if every:
        return Fraction(1 / every).limit_denominator(1000)
    return Fraction(fps or 25.0).limit_denominator(1001)
