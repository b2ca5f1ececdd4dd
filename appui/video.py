"""The Video tab: caption an uploaded video, see its tracks on a timeline, find the moments a phrase matches.

A visitor uploads a video (at most ``MAX_VIDEO_MB`` MB and ``MAX_VIDEO_SECONDS`` seconds, said on the
page); ``regioncap.video.caption_video`` samples a frame every ``VIDEO_EVERY`` seconds, analyses and
tracks it, and writes the annotated copy (numbered boxes and captions) with its audio-description
track (WebVTT, shown as the player's captions and offered for download). The tracks become a timeline
table (number, caption, from, to). A phrase then lists the moments where a region matches it at least
as well as the model's calibrated match threshold (as the Search tab uses), each with its frame.

The analysis is kept per visitor (``gr.State``): each sampled frame's region vectors, and a small JPEG
of the frame, so a phrase needs no second pass over the video.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from regioncap.errors import RegionCapError, TextError  # noqa: E402
from regioncap.viz import draw_regions  # noqa: E402

from appui.inputs import parse_settings, user_errors  # noqa: E402
from appui import matching  # noqa: E402
from appui.matching import THRESHOLD_HOW  # noqa: E402
from appui.settings import MAX_PHRASE  # noqa: E402

logger = logging.getLogger("regioncap.app")
MAX_VIDEO_MB = 100
MAX_VIDEO_SECONDS = 180
VIDEO_EVERY = 0.5  # seconds between analysed frames
FRAME_SIDE = 480  # the kept frames' longest side (what the phrase's results show)
TIMELINE_HEADERS = ["#", "caption", "from", "to"]
MOMENT_GAP = 1.0  # matching frames closer than this (seconds) are one moment


@dataclass
class VideoAnalysis:
    """One visitor's analysed video: per sampled frame its time, AnalysisResult and a JPEG of the frame."""

    name: str
    frames: list = field(default_factory=list)  # [(time, AnalysisResult, jpeg bytes)]


def clock(seconds: float) -> str:
    """"1:05.5": a time in the video, to the half second the frames are sampled at."""
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{s:04.1f}"


def timeline_rows(tracks: list[dict]) -> list[list]:
    return [[t["track"], t["caption"], clock(t["first"]), clock(t["last"])] for t in tracks]


def moments(hits: list[tuple[float, float, int]], gap: float = MOMENT_GAP) -> list[list[tuple[float, float, int]]]:
    """Matching frames ``(time, similarity, frame index)`` in time order, grouped into moments: a new
    moment starts after a gap of more than ``gap`` seconds."""
    out: list[list] = []
    for hit in sorted(hits):
        if out and hit[0] - out[-1][-1][0] <= gap:
            out[-1].append(hit)
        else:
            out.append([hit])
    return out


class VideoApp:
    """The Video tab's handlers; ``app`` is the page's RegionApp (its model holder, files and threshold)."""

    def __init__(self, app):
        self.app = app

    def _check(self, path: str):
        from regioncap.video.reader import VideoReader

        size = os.path.getsize(path)
        if size > MAX_VIDEO_MB * 2**20:
            raise RegionCapError(f"This video is {size / 2**20:.0f} MB; at most {MAX_VIDEO_MB} MB, please.")
        with VideoReader(path) as video:
            info = video.info
        if info.duration is not None and info.duration > MAX_VIDEO_SECONDS + 0.5:
            raise RegionCapError(f"This video lasts {info.duration:.0f} s; at most {MAX_VIDEO_SECONDS} s here "
                                 f"(the command line takes any length: python -m regioncap caption VIDEO).")
        return info

    @user_errors
    def caption(self, video, max_regions, threshold, progress=gr.Progress()):
        """(annotated video with its description track, timeline rows, the .vtt file, status, analysis)."""
        from pathlib import Path

        from regioncap.video.run import caption_video

        if not video:
            raise RegionCapError("Upload a video first.")
        path = video if isinstance(video, str) else video.get("path") if isinstance(video, dict) else str(video)
        info = self._check(path)
        settings, model = parse_settings(max_regions, threshold), self.app.holder.get()
        stem = Path(path).stem or "video"
        annotated, vtt = self.app.files.path(f"{stem}.regions.mp4"), self.app.files.path(f"{stem}.vtt")
        analysis = VideoAnalysis(Path(path).name)

        def keep(frame, result, _tracks):
            picture = (frame.view or frame.image).copy()
            picture.thumbnail((FRAME_SIDE, FRAME_SIDE))
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=85)
            analysis.frames.append((frame.time, result, buffer.getvalue()))
            if info.duration:
                progress(min(1.0, frame.time / info.duration), desc=f"{clock(frame.time)} / {clock(info.duration)}")

        records = list(caption_video(model, path, VIDEO_EVERY, *settings, vtt=vtt, annotated=annotated,
                                     on_frame=keep))
        tracks = [r for r in records if "track" in r]
        status = (f"{len(analysis.frames)} frames analysed (one every {VIDEO_EVERY} s), {len(tracks)} "
                  f"region{'s' if len(tracks) != 1 else ''} followed. The player's captions read each region "
                  f"as it comes into view (the audio-description track, below).")
        shown = gr.update(value=str(annotated), subtitles=str(vtt))  # the track as the player's captions
        return shown, timeline_rows(tracks), str(vtt), status, analysis

    @user_errors
    def find(self, phrase: str, analysis: VideoAnalysis | None):
        """(gallery of each moment's best frame with the match drawn, a text list of the moments)."""
        if analysis is None or not analysis.frames:
            raise RegionCapError("Caption a video first, then search it with a phrase.")
        phrase = matching.check_phrase(phrase)  # the Search tab's rules: length, threshold, wording
        if not phrase:
            raise TextError("Type a phrase, e.g. a red circle.")
        floor = self.app.match_threshold()  # appui.matching.match_threshold of the loaded model
        hits, best = [], {}
        for i, (time, result, _) in enumerate(analysis.frames):
            if not result.regions:
                continue
            found = matching.phrase_matches(result, phrase, 1, floor).matches
            if found:
                hits.append((time, found[0][1], i))
                best[i] = found[0][0]
        groups = moments(hits)
        if not groups:
            return [], (f"No moment matches “{phrase}” (no region reaches the match threshold {floor:.2f}, "
                        f"{THRESHOLD_HOW}).")
        gallery, lines = [], []
        for group in groups:
            time, sim, i = max(group, key=lambda h: h[1])
            region = best[i]
            picture = Image.open(io.BytesIO(analysis.frames[i][2])).convert("RGB")
            scale = picture.width / analysis.frames[i][1].width
            drawn = draw_regions(picture, [{"box": [c * scale for c in region.box], "caption": region.caption}])
            span = f"{clock(group[0][0])}–{clock(group[-1][0])}" if len(group) > 1 else clock(time)
            text = f"{span}: {region.caption} (similarity {sim:.2f}, best at {clock(time)})"
            gallery.append((self.app.files.image(drawn, f"moment-{i}"), text))
            lines.append(f"- {text}")
        head = (f"{len(groups)} moment{'s match' if len(groups) != 1 else ' matches'} “{phrase}” "
                f"(threshold {floor:.2f}):")
        return gallery, "\n".join([head, *lines])

    def layout(self, max_regions, threshold) -> None:
        """The tab's contents and events (inside ``gr.Tab``); ``max_regions``/``threshold``: the page's sliders."""
        gr.Markdown(f"Upload a video (at most **{MAX_VIDEO_MB} MB** and **{MAX_VIDEO_SECONDS // 60} minutes**; "
                    f"mp4, mov, mkv, webm or avi). A frame every {VIDEO_EVERY} s is analysed: you get the video "
                    f"with numbered regions and captions, an audio-description track that says when each region "
                    f"comes into view, a timeline of the regions, and a phrase search over the moments.")
        analysis = gr.State(None, time_to_live=3600)
        with gr.Row():
            with gr.Column(scale=3, min_width=280):
                video = gr.Video(label="Video", sources=["upload"], elem_id="video-input", height=260)
                run = gr.Button("Caption the video", variant="primary", elem_id="video-run")
                shown = gr.Video(label="Regions over time (captions: the audio description)", interactive=False,
                                 elem_id="video-output", height=300)
                status = gr.Markdown(elem_id="video-status")
                vtt = gr.File(label="Audio-description track (WebVTT, kind: descriptions)", elem_id="video-vtt")
            with gr.Column(scale=2, min_width=240):
                timeline = gr.Dataframe(headers=TIMELINE_HEADERS, label="Timeline of the regions",
                                        interactive=False, elem_id="video-timeline", wrap=True,
                                        column_widths=["10%", "40%", "25%", "25%"])
                phrase = gr.Textbox(label="Find the moments matching a phrase", placeholder="a red circle",
                                    max_length=MAX_PHRASE, elem_id="video-phrase")
                find = gr.Button("Find", elem_id="video-find")
                listed = gr.Markdown(elem_id="video-moments")
                frames = gr.Gallery(label="Moments", columns=2, height=300, elem_id="video-frames")
        private = {"api_visibility": "private"}  # UI-only events, as the Live tab's
        # named: an unnamed event takes its function's name, and "caption" is the page's public endpoint
        run.click(self.caption, [video, max_regions, threshold], [shown, timeline, vtt, status, analysis],
                  concurrency_id="model", api_name="video_caption", **private)  # the page's one model limit
        find.click(self.find, [phrase, analysis], [frames, listed], api_name="video_find", **private)
        phrase.submit(self.find, [phrase, analysis], [frames, listed], api_name="video_find_enter", **private)
