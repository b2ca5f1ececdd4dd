"""Caption a video: sampled frames through the model, regions followed across frames, records as they come.

    for record in caption_video(model, "clip.mp4", every=0.5, vtt="clip.vtt", annotated="out/clip.regions.mp4"):
        print(json.dumps(record))

yields one record per sampled frame, in time order::

    {"path", "time", "width", "height", "regions": [{"box", "caption", "score", "caption_score", "label",
     "track"}], "description"}

then one per track (a region followed while it stayed in view), in order of appearance::

    {"path", "track", "caption", "first", "last", "boxes": [{"time", "box", "score"}]}

Boxes are in the video's own upright pixels (``width`` x ``height``, rotation applied), though the model
saw each frame at its work size. ``track`` numbers are those drawn on the annotated copy; unlike the
Live tab's they are never reused within a video. ``caption`` is the caption the track kept
(:class:`~regioncap.track.RegionTracker`); ``description`` is the frame's narration.

Memory stays flat however long the video: a finished track's record goes to a temporary file until
the frames are done, and only the tracks in view are held.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from regioncap.narrate import came_into_view, describe
from regioncap.track import RegionTracker
from regioncap.video.annotate import AnnotatedVideo
from regioncap.video.reader import SampledFrame, VideoDamagedError, VideoReader, sampling_rate, video_time
from regioncap.video.vtt import VttWriter

logger = logging.getLogger(__name__)

ANNOTATED_SIDE = 960  # the annotated copy's longest side (never enlarged)
# A detector's NMS runs per entity type, so one shape can come back twice under two types ("people" 0.95 and
# "clothing" 0.59, IoU 0.9): on a photo a doubled box, in a video two tracks that trade the shape back and
# forth and two "comes into view" cues. A region overlapping a higher-scored one this much is dropped.
DUPLICATE_IOU = 0.7


class VideoTracker(RegionTracker):
    """A :class:`RegionTracker` whose numbers only grow: within one video a number names one track."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._next = 1

    def reset(self) -> None:
        super().reset()
        self._next = 1

    def _free_number(self) -> int:
        self._next += 1
        return self._next - 1


class TrackLog:
    """What each track did (first/last time, boxes), spooled to a temporary file once it leaves view."""

    def __init__(self, path: str):
        self.path = path
        self.open: dict[int, dict] = {}
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._offsets: dict[int, int] = {}

    def see(self, track, time: float) -> dict:
        entry = self.open.setdefault(track.number, {"path": self.path, "track": track.number, "caption": "",
                                                    "first": time, "last": time, "boxes": []})
        entry["caption"], entry["last"] = track.caption, time
        entry["boxes"].append({"time": time, "box": [round(c, 2) for c in track.box],
                               "score": round(float(track.extra.get("score", 0.0)), 4)})
        return entry

    def finish(self, numbers) -> None:
        for n in sorted(numbers):
            entry = self.open.pop(n)
            self._spool.seek(0, 2)
            self._offsets[n] = self._spool.tell()
            self._spool.write(json.dumps(entry) + "\n")

    def records(self) -> Iterator[dict]:
        """Every track (those still open finished first), in order of number = of appearance."""
        self.finish(list(self.open))
        for n in sorted(self._offsets):
            self._spool.seek(self._offsets[n])
            yield json.loads(self._spool.readline())
        self._spool.close()


def caption_video(model, path, every: float = 0.5, max_regions: int = 10, score_threshold: float = 0.5, *,
                  vtt=None, annotated=None, progress: bool = False, announce_after: int = 2,
                  tracker: RegionTracker | None = None, on_frame=None, workers: int = 1) -> Iterator[dict]:
    """Frame records, then track records, of the video at ``path`` (see the module docstring).

    Args:
        model: a ``RegionCaptioner``.
        every: seconds between sampled frames (0: every frame).
        vtt: also write the audio-description track (WebVTT) to this file.
        annotated: also write the annotated copy (.mp4) to this file.
        progress: a progress bar on stderr with the video's own time ("12:30 / 58:02").
        announce_after: a region is announced in the track when it has been seen in this many sampled
            frames (1: at once; 2 keeps a one-frame false detection out of the narration), at the time
            it was first seen.
        tracker: the tracker to use (default: a fresh :class:`VideoTracker`).
        on_frame: called with (SampledFrame, AnalysisResult with boxes in the video's pixels, the frame's
            tracks) for each sampled frame, e.g. to keep the region vectors for a search.
        workers: frames analysed at once, each in its own thread (in order all the same). With
            ``torch.set_num_threads(1)``, 2 workers use two cores without torch's thread team, which on
            busy cores waits for its slowest thread (docs/video.md: 1 thread ran 3-10x faster than 2 there).

    Raises:
        VideoError: before any record when the video cannot be read; VideoDamagedError after the records
        of the frames before the damage (and the tracks they hold).
    """
    path = Path(path)
    config = model.config.detector
    view_side = ANNOTATED_SIDE if annotated is not None else None
    tracker = tracker or VideoTracker()
    with VideoReader(path, every, (config.min_size, config.max_size), view_side) as reader:
        info = reader.info
        log = TrackLog(str(path))
        vtt_writer = VttWriter(vtt, path.name) if vtt is not None else None
        video = None
        bar = _progress(info.duration, path.name) if progress else None
        damage: list[VideoDamagedError] = []
        try:
            for frame, result in _analysed(model, reader, workers, max_regions, score_threshold, damage):
                record, result, tracks = _frame(result, frame, info, tracker)
                if on_frame is not None:
                    on_frame(frame, result, tracks)
                entries = [log.see(t, frame.time) for t in tracks]
                log.finish([n for n in log.open if n not in {t.number for t in tracker.tracks}])
                if vtt_writer is not None:
                    news = [(t, e) for t, e in zip(tracks, entries) if t.seen == announce_after]
                    if news:
                        vtt_writer.add(min(e["first"] for _, e in news),
                                       [came_into_view(t.caption, t.box, info.width, info.height, present=True)
                                        for t, _ in news])
                if annotated is not None:
                    if video is None:
                        video = AnnotatedVideo(annotated, frame.view.size, sampling_rate(every, info.fps), path.name)
                    video.add(frame.view, frame.time, tracks, frame.view.width / info.width)
                if bar is not None:
                    _advance(bar, frame.time, info.duration)
                yield record
            if bar is not None and info.duration and not damage:
                _advance(bar, info.duration, info.duration)  # the last frame is a sample short of the end
        finally:
            if bar is not None:
                bar.close()
            if vtt_writer is not None:
                vtt_writer.close()
            if video is not None:
                video.close()
        yield from log.records()
    if damage:
        raise damage[0]


def _analysed(model, frames, workers: int, max_regions: int, score_threshold: float, damage: list):
    """(frame, AnalysisResult) for each of ``frames``, in order, ``workers`` analysed at once (a window of
    2 x workers frames in flight). A VideoDamagedError of ``frames`` ends the run after the frames before
    it, and is put in ``damage``."""
    def analyze(frame):
        return model.analyze(frame.image, max_regions=max_regions, score_threshold=score_threshold)

    frames = iter(frames)
    if workers <= 1:
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except VideoDamagedError as e:
                damage.append(e)
                return
            yield frame, analyze(frame)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="regioncap-video") as pool:
        pending: collections.deque = collections.deque()
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except VideoDamagedError as e:
                damage.append(e)
                break
            pending.append((frame, pool.submit(analyze, frame)))
            if len(pending) >= 2 * workers:
                frame, future = pending.popleft()
                yield frame, future.result()
        while pending:
            frame, future = pending.popleft()
            yield frame, future.result()


def _frame(result, frame: SampledFrame, info, tracker: RegionTracker):
    """(frame record, result, its tracks): ``result`` (the frame analysed at its work size) without duplicate
    regions and with boxes scaled to the video's pixels (in the record and the result), then tracked."""
    result = distinct(result)
    sx, sy = info.width / frame.image.width, info.height / frame.image.height
    regions = [dataclasses.replace(r, box=[round(r.box[0] * sx, 2), round(r.box[1] * sy, 2),
                                           round(r.box[2] * sx, 2), round(r.box[3] * sy, 2)])
               for r in result.regions]
    result.regions, result.width, result.height = regions, info.width, info.height
    tracks = tracker.update([r.box for r in regions], [r.caption for r in regions], result.vectors.tolist(),
                            [{"score": r.score, "label": r.label} for r in regions])
    record = {"path": str(info.path), "time": round(frame.time, 3), "width": info.width, "height": info.height,
              "regions": [{**r.to_dict(), "track": t.number} for r, t in zip(regions, tracks)],
              "description": describe(regions, info.width, info.height)}
    return record, result, tracks


def distinct(result, threshold: float = DUPLICATE_IOU):
    """``result`` without the regions that overlap a higher-scored region by ``threshold`` IoU or more
    (whatever their entity types), order kept; the vectors and caption candidates follow."""
    import torch
    from torchvision.ops import nms

    if len(result.regions) < 2:
        return result
    boxes = torch.tensor([r.box for r in result.regions], dtype=torch.float32)
    scores = torch.tensor([r.score for r in result.regions], dtype=torch.float32)
    keep = sorted(nms(boxes, scores, threshold).tolist())
    if len(keep) < len(result.regions):
        result.regions = [result.regions[i] for i in keep]
        result.vectors = result.vectors[keep]
        result.candidates = [result.candidates[i] for i in keep]
    return result


def _progress(duration: float | None, name: str):
    """A bar on stderr that reads "clip.mp4 12:30 / 58:02  21%|██        | [01:02<03:50]"."""
    from tqdm import tqdm

    total = round(duration, 1) if duration else None
    bar = tqdm(total=total, file=sys.stderr, unit="s", dynamic_ncols=True,
               bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    bar.name = name
    _advance(bar, 0.0, duration)
    return bar


def _advance(bar, time: float, duration: float | None) -> None:
    shown = min(time, duration) if duration else time
    bar.update(round(shown - bar.n, 1) if bar.total else 0)
    bar.set_description_str(f"{bar.name} {video_time(time)} / {video_time(duration) if duration else '?'}")
