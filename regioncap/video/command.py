"""``python -m regioncap caption VIDEO …``: the video part of the ``caption`` command (regioncap/cli.py).

Each video's JSON Lines (:func:`regioncap.video.run.caption_video`: its frames, then its tracks) go to
stdout as they come, with a progress bar in the video's own time on stderr. ``--vtt FILE`` (one video)
writes its audio-description track there; ``--output-dir DIR`` writes each video's annotated copy
``NAME.SUFFIX.regions.mp4`` and its track ``NAME.SUFFIX.regions.vtt`` where ``caption`` puts a picture's
copy. A video that cannot be read is one ``{"path", "error"}`` line and the run goes on; a damaged one
gives its frames and tracks before the damage, then its error line. Ctrl-C leaves the lines, the
track and the annotated copy written so far, playable.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from regioncap.errors import RegionCapError
from regioncap.video.annotate import check_target
from regioncap.video.reader import VideoDamagedError, VideoError
from regioncap.video.run import caption_video

logger = logging.getLogger(__name__)


def check_vtt_option(args, videos: list[Path]) -> None:
    """``--vtt FILE`` names one video's track: RegionCapError (before any work) otherwise."""
    if getattr(args, "vtt", None) is None:
        return
    if len(videos) != 1:
        raise RegionCapError(f"--vtt is for one video ({len(videos)} found); for several use --output-dir DIR "
                             "(each video's track is written beside its annotated copy)")
    if Path(args.vtt).resolve() == videos[0].resolve():
        raise RegionCapError(f"--vtt {args.vtt}: is the input video; choose another name")


def outputs(path: Path, folder, vtt) -> tuple[Path | None, Path | None]:
    """(annotated copy, description track) of the video ``path``: in the ``--output-dir`` folder (an
    ``annotate.OutputFolder``) and/or ``--vtt``; checked never to replace an input or a stranger's file."""
    video = track = None
    if folder is not None:
        picture = folder.target(path)  # NAME.SUFFIX.regions.jpg: the same place, other suffixes
        video, track = picture.with_suffix(".mp4"), picture.with_suffix(".vtt")
        check_target(video, folder.inputs)
    if vtt is not None:
        track = Path(vtt)
    if track is not None and folder is not None and track.resolve() in folder.inputs:
        raise RegionCapError(f"{track}: is an input; an output never replaces an input")
    return video, track


def caption_videos(args, videos: list[Path], folder, model, line) -> int:
    """Caption each of ``videos`` (``args``: the caption command's), writing records with ``line``;
    returns how many were read (fully or up to damage)."""
    import torch

    device = str(getattr(model, "device", "cpu"))
    workers = 1
    if not device.startswith("cuda"):
        # two frames at once, one torch thread each: on busy cores torch's thread team waits for its
        # slowest thread (docs/video.md: 3-10x slower per frame than one thread at load 7-10)
        torch.set_num_threads(1)
        workers = min(2, os.cpu_count() or 1)
    done = 0
    for path in videos:
        try:
            video, track = outputs(path, folder, args.vtt)
            if folder is not None and (video or track):
                folder.prepare()
                video.parent.mkdir(parents=True, exist_ok=True)
            records = caption_video(model, path, args.every, args.max_regions, args.threshold, vtt=track,
                                    annotated=video, progress=True, workers=workers)
            with contextlib.closing(records):
                for record in records:
                    line(record)
            done += 1
        except VideoDamagedError as e:
            done += 1
            line({"path": str(path), "error": str(e)})
        except (VideoError, RegionCapError, OSError) as e:
            line({"path": str(path), "error": " ".join(str(e).split())})
    return done
