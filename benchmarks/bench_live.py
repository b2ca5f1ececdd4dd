"""The Live tab's frames per second on this machine (issue 24), per model, in two parts; and what a stream
leaves on disk (issue 29).

* handler: the tab's stream handler (``appui.live.LiveApp.frame``) called directly on a 640x480 video of
  synthetic scenes, with the time split into decode (Gradio's own preprocessing of the JPEG data URL a
  browser sends), reduce (to the live work size), analysis (``analyze``), draw (tracking, drawing the
  regions on the display-size frame, encoding it as an inline JPEG) and postprocess (Gradio's own, of that
  HTML: nothing is copied into its cache).
* end to end: ``python app.py`` in a subprocess and a client speaking the browser's stream protocol: it
  joins the queue with the ``live_frame`` event, posts a JPEG data URL to ``/gradio_api/stream/{event_id}``
  every 0.1 s (as the browser does, whether or not the last one was answered) and reads the answers from
  the SSE stream for ``--seconds``. Frames/s = answers per second; "transport" is the median time between
  answers minus the median handler time reported on each answer's status line (Gradio's decode and
  postprocess, the HTTP round trips and any wait for the next frame).

* disk (``--disk 60,120``, instead of the two parts above): the same server and client, a drifting 1280x720
  fake camera whose every frame is distinct (the view slides 1 px a frame and each frame carries its number in
  a corner), streamed as a visitor does for the given seconds (back-to-back streams of the tab's 30 s, as
  pressing Record again); after each checkpoint the bytes, files and folders in Gradio's cache
  (``GRADIO_TEMP_DIR``) and in the app's own output files. A Live tab whose disk use is bounded shows the
  same figures at 60 s and at 120 s.

Models: ``assets/demo-model`` and a COCO-size ``mobilenet_v3_large_fpn`` built without weights (random,
with trained-like statistics from ``_common.calibrate_detector``; its decoder writes the longest captions,
a worst case for decoding), or ``--coco-model DIR`` for a trained one.

    python benchmarks/bench_live.py                       # both models, ~4 minutes on 2 cores
    python benchmarks/bench_live.py --models demo --seconds 10 --frames 20 --json live.json
    python benchmarks/bench_live.py --disk 60,120                 # demo model, what 1 and 2 minutes leave on disk
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from PIL import Image  # noqa: E402

from _common import loadavg  # noqa: E402
from _server import Server  # noqa: E402

SIZE = (640, 480)
EVERY = 0.1  # seconds between posted frames, as appui.live.LIVE_EVERY tells the browser


def video(n: int, scenes: int = 4) -> list[Image.Image]:
    """``n`` 640x480 frames: shapes-preset scenes, each panned 16 px right and back (``regioncap.testing``)."""
    from regioncap.testing import scene_frames

    frames = [f for k in range(scenes) for f in scene_frames(2026, 81 + k, SIZE)[0]]
    return [frames[i % len(frames)] for i in range(n)]


def data_url(frame: Image.Image) -> str:
    """The frame as a browser sends it: ``canvas.toDataURL("image/jpeg")`` (quality 0.92)."""
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def coco_model(folder: Path) -> Path:
    """mobilenet_v3_large_fpn at torchvision's defaults, random weights with trained-like statistics."""
    import torch
    from torchvision.transforms.functional import to_tensor

    from _common import calibrate_detector, synthetic_vocab
    from regioncap.data.flickr30k import ENTITY_TYPES
    from regioncap.models.config import DetectorConfig, RegionCaptionerConfig
    from regioncap.models.model import RegionCaptioner

    torch.manual_seed(0)
    vocab = synthetic_vocab()
    config = RegionCaptionerConfig(vocab_size=len(vocab), entity_types=list(ENTITY_TYPES),
                                   detector=DetectorConfig.for_arch("mobilenet_v3_large_fpn"))
    model = RegionCaptioner(config, vocab, download=False).eval()
    calibrate_detector(model.detector, [to_tensor(f) for f in video(2)], logit_std=0.5)
    model.save_pretrained(folder, training={"data": "none (random weights with calibrated statistics, benchmark)"})
    return folder


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


# -- part 1: the handler ------------------------------------------------------------------------
def bench_handler(model_dir: Path, frames: list[Image.Image], warmup: int = 5) -> dict:
    import gradio as gr
    from gradio.data_classes import ImageData

    from appui.model import ModelHolder
    from appui.handlers import RegionApp
    from appui.live import LiveApp, work_size

    holder = ModelHolder(str(model_dir))
    holder.load()
    if holder.model is None:
        raise SystemExit(holder.error)
    live = LiveApp(RegionApp(holder))
    model = live.model()
    camera = gr.Image(sources=["webcam"], streaming=True, type="pil", render=False)
    shown = gr.HTML(render=False)
    urls = [data_url(f) for f in frames]
    rows, session = [], None

    def one(url, session):
        t0 = time.perf_counter()
        image = camera.preprocess(ImageData(url=url))
        t1 = time.perf_counter()
        picture, *_, session = live.frame(image, 10, 0.5, "", session)
        t2 = time.perf_counter()
        shown.postprocess(picture)
        t3 = time.perf_counter()
        return session, {"decode": (t1 - t0) * 1e3, **session.timings_ms, "postprocess": (t3 - t2) * 1e3,
                         "total": (t3 - t0) * 1e3, "regions": sum(t.missed == 0 for t in session.tracker.tracks)}

    # In a worker thread, as Gradio runs a handler. (The main thread, which built the ONNX Runtime sessions
    # here, ran the COCO-size model's frames 3.5x slower on a busy machine: 460-466 ms against 121-132 ms
    # at load 3.7, interleaved; with REGIONCAP_ONNXRUNTIME=0 both took 118-203 ms.)
    with ThreadPoolExecutor(1) as worker:
        for i, url in enumerate(urls[:warmup] + urls):
            session, row = worker.submit(one, url, session).result()
            if i >= warmup:
                rows.append(row)
    out = {k: round(median([r[k] for r in rows]), 1) for k in rows[0]}
    out["frames"], out["work_size"] = len(rows), "x".join(map(str, work_size(model, *SIZE)))
    out["frames_per_s"] = round(1e3 / out["total"], 2)
    return out


# -- part 2: end to end ---------------------------------------------------------------------------
def stream_answers(url: str, urls, seconds: float, every: float = EVERY, session: str | None = None
                   ) -> list[tuple[float, list]]:
    """Stream JPEG data URLs (a list, looped, or a function of the frame number) to the running app's Live
    tab as a browser does: join the queue with the ``live_frame`` event, post the next frame to
    ``/gradio_api/stream/{event_id}`` every ``every`` seconds, answered or not, close after ``seconds``.
    ``session``: the browser tab's session hash (default: a new one). Returns (seconds since the stream
    started, output data) for every answer."""
    import httpx

    config = httpx.get(url + "config", timeout=30).json()
    dep = next(d for d in config["dependencies"] if d.get("api_name") == "live_frame")
    session = session or uuid.uuid4().hex
    frame_url = urls if callable(urls) else (lambda i: urls[i % len(urls)])

    def body(i: int) -> dict:
        image = {"url": frame_url(i), "meta": {"_type": "gradio.FileData"}}
        return {"data": [image, 10, 0.5, "", None], "event_data": None, "fn_index": dep["id"],
                "trigger_id": dep["targets"][0][0], "session_hash": session}

    started, event = threading.Event(), {}

    def post_frames():
        with httpx.Client(timeout=30) as c:
            started.wait()
            i, t0 = 1, time.monotonic()
            while time.monotonic() - t0 < seconds:
                time.sleep(every)
                c.post(f"{url}gradio_api/stream/{event['id']}", json=body(i))
                i += 1
            c.post(f"{url}gradio_api/stream/{event['id']}/close")

    poster, answers, t_start = threading.Thread(target=post_frames, daemon=True), [], None
    with httpx.Client(timeout=60) as c:
        event["id"] = c.post(url + "gradio_api/queue/join", json=body(0)).json()["event_id"]
        poster.start()
        with c.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}) as r:
            for line in r.iter_lines():
                msg = json.loads(line[5:]) if line.startswith("data:") else {}
                if msg.get("msg") == "process_starts":
                    t_start = time.monotonic()
                    started.set()
                elif msg.get("msg") == "process_streaming":
                    answers.append((time.monotonic() - t_start, (msg.get("output") or {}).get("data") or []))
                elif msg.get("msg") == "process_completed":  # the last answer, unless already streamed
                    data = (msg.get("output") or {}).get("data") if msg.get("success") else None
                    if data and (not answers or answers[-1][1] != data):
                        answers.append((time.monotonic() - t_start, data))
                    break
    poster.join(timeout=10)
    return answers


def bench_stream(url: str, frames: list[Image.Image], seconds: float, warmup: float, tab: str | None = None
                 ) -> dict:
    """Answers per second after ``warmup`` seconds of the stream, and the handler time they report. Short
    streams run first until one is answered: the app loads its model (and the live twin) after it answers.
    ``tab``: the browser tab's session hash (the camera stays a tab's own from one stream to its next)."""
    urls, deadline = [data_url(f) for f in frames], time.monotonic() + 600
    while not any(len(d) > 3 and "ms a frame" in str(d[3]) for _, d in stream_answers(url, urls, 2.0, session=tab)):
        if time.monotonic() > deadline:
            raise RuntimeError("the app's Live tab did not answer within 10 minutes")
    answers = [(t, data) for t, data in stream_answers(url, urls, warmup + seconds, session=tab) if t >= warmup]
    times, handler_ms, errors = [t for t, _ in answers], [], []
    for _, data in answers:
        status = data[3] if len(data) > 3 and isinstance(data[3], str) else ""
        found = re.search(r"(\d+) ms a frame", status)
        handler_ms.append(float(found.group(1)) if found else None)
        if status and not found:
            errors.append(status)
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    # each gap between answers = the later frame's handler time + the rest (Gradio's decode and postprocess,
    # HTTP, SSE, waiting for a frame to arrive)
    pairs = [(b - a, h) for a, b, h in zip(times, times[1:], handler_ms[1:]) if h is not None]
    out = {"answers": len(times), "frames_per_s": round((len(times) - 1) / span, 2) if len(times) > 1 else 0.0,
           "handler_ms": round(median([h for h in handler_ms if h is not None]), 1),
           "gap_ms": round(median([g for g, _ in pairs]) * 1e3, 1),
           "transport_ms": round(median([g * 1e3 - h for g, h in pairs]), 1)}
    if errors:
        out["status_errors"] = errors[:3]
    return out


# -- part 3: what a stream leaves on disk ------------------------------------------------------------
class DriftingCamera:
    """A 1280x720 camera slowly panning over a synthetic scene, every frame distinct: the view slides 1 px a
    frame (back and forth over ``pan`` px) and frame ``i`` carries ``i`` in binary as 20 black/white squares
    along its bottom edge. ``camera(i)`` is frame ``i`` as the browser sends it (a JPEG data URL)."""

    def __init__(self, size=(1280, 720), pan: int = 400):
        from regioncap.testing import scene_frames

        self.size, self.pan = size, pan
        wide = scene_frames(2026, 81, (size[0] + pan, size[1]), pan=1)[0][0]
        self.wide = wide

    def frame(self, i: int) -> Image.Image:
        from PIL import ImageDraw

        x = i % (2 * self.pan)
        x = x if x < self.pan else 2 * self.pan - x
        frame = self.wide.crop((x, 0, x + self.size[0], self.size[1]))
        draw, side = ImageDraw.Draw(frame), 8
        for bit in range(20):
            y0 = self.size[1] - side
            draw.rectangle((bit * side, y0, bit * side + side - 1, y0 + side - 1),
                           fill=(255, 255, 255) if i >> bit & 1 else (0, 0, 0))
        return frame

    def __call__(self, i: int) -> str:
        return data_url(self.frame(i))


def disk_use(folder: Path, pattern: str = "*") -> dict:
    """Files, folders, their bytes and the disk blocks all of it takes (folders included) under ``folder``
    (only in its entries matching ``pattern``)."""
    files = dirs = size = blocks = 0
    for path in (p for top in folder.glob(pattern) for p in [top, *top.rglob("*")]):
        st = path.lstat()
        blocks += st.st_blocks * 512
        if path.is_dir():
            dirs += 1
        else:
            files, size = files + 1, size + st.st_size
    return {"files": files, "folders": dirs, "bytes": size, "disk_bytes": blocks}


APP_FILES = "regioncap-app-*"  # the app's own output files (appui.files.OutputFiles)


def bench_disk(model_dir: Path, work: Path, checkpoints: list[float], every: float = EVERY) -> dict:
    """What streaming a distinct frame every ``every`` s leaves on disk after each checkpoint (seconds of
    streaming, as back-to-back streams of the app's time limit): Gradio's cache and the app's own temporary
    output files (``APP_FILES``), both under ``work`` (the server's GRADIO_TEMP_DIR and TMPDIR)."""
    from appui.live import LIVE_TIME_LIMIT

    tmp, old = work / "tmp", os.environ.get("TMPDIR")
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)  # the server's tempfile.mkdtemp lands here
    try:
        server = Server(model_dir, work)
    finally:
        os.environ.pop("TMPDIR") if old is None else os.environ.__setitem__("TMPDIR", old)
    camera, cache, rows = DriftingCamera(), work / "gradio-tmp", []
    try:
        server.wait()
        deadline, tab = time.monotonic() + 600, uuid.uuid4().hex  # one browser tab pressing Record again and again
        while not any(len(d) > 3 and "ms a frame" in str(d[3])
                      for _, d in stream_answers(server.url, camera, 2.0, session=tab)):
            if time.monotonic() > deadline:  # the model loads first
                raise RuntimeError("the app's Live tab did not answer within 10 minutes")
        settle(server.proc.pid)
        start = {"gradio_cache": disk_use(cache), "app_tmp": disk_use(tmp, APP_FILES)}
        streamed = answered = 0.0
        offset = 0
        for checkpoint in checkpoints:
            while streamed < checkpoint:
                seconds = min(LIVE_TIME_LIMIT - 1, checkpoint - streamed)
                answers = stream_answers(server.url, lambda i, o=offset: camera(o + i), seconds, every, session=tab)
                statuses = [d[3] for _, d in answers if len(d) > 3 and isinstance(d[3], str)]
                answered += sum("ms a frame" in s for s in statuses)
                offset, streamed = offset + int(seconds / every) + 2, streamed + seconds
            rows.append({"seconds": round(streamed), "answered": int(answered),
                         "gradio_cache": disk_use(cache), "app_tmp": disk_use(tmp, APP_FILES)})
    finally:
        server.stop()
    return {"start": start, "checkpoints": rows}


def print_disk(report: dict) -> None:
    mb = 1e6
    print("\n## What a Live stream leaves on disk (drifting 1280x720 camera, every frame distinct)")
    print("| streamed | frames answered | Gradio cache: files / folders / MB (disk MB) | app's files: files / MB |")
    print("|---|---|---|---|")
    for row in [{"seconds": 0, "answered": 0, **report["start"]}, *report["checkpoints"]]:
        g, a = row["gradio_cache"], row["app_tmp"]
        print(f"| {row['seconds']} s | {row['answered']} | {g['files']} / {g['folders']} / {g['bytes'] / mb:.2f} "
              f"({g['disk_bytes'] / mb:.2f}) | {a['files']} / {a['bytes'] / mb:.2f} |")


def settle(pid: int, idle: float = 0.1, timeout: float = 180) -> float:
    """Wait until process ``pid`` uses under ``idle`` of a core over two seconds in a row (the app warms its
    examples and collection after it answers); returns the seconds waited."""
    ticks, t0 = os.sysconf("SC_CLK_TCK"), time.monotonic()

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    quiet, last = 0, cpu()
    while quiet < 2 and time.monotonic() - t0 < timeout:
        time.sleep(1)
        now = cpu()
        quiet, last = (quiet + 1 if now - last < idle else 0), now
    return time.monotonic() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="demo,coco", help="comma-separated: demo, coco")
    p.add_argument("--demo-model", default=str(HERE.parent / "assets" / "demo-model"))
    p.add_argument("--coco-model", default=None, help="a trained COCO-size model (default: built without weights)")
    p.add_argument("--frames", type=int, default=40, help="frames timed through the handler")
    p.add_argument("--seconds", type=float, default=15, help="seconds of the end-to-end stream measured")
    p.add_argument("--warmup", type=float, default=4, help="seconds of the stream before measuring")
    p.add_argument("--repeats", type=int, default=3, help="end-to-end streams per model (medians printed)")
    p.add_argument("--disk", default=None, metavar="SECONDS,...",
                   help="only measure what streaming a distinct frame every 0.1 s leaves on disk after these "
                        "seconds (demo model, or --demo-model)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    if args.disk:
        report = {"load_before": loadavg(), "disk": bench_disk(Path(args.demo_model), work / "disk",
                                                               [float(s) for s in args.disk.split(",")])}
        report["load_after"] = loadavg()
        print_disk(report["disk"])
        print(f"(load {report['load_before']} -> {report['load_after']})")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return report
    frames = video(max(args.frames, 64))
    report = {"load_before": loadavg(), "size": "x".join(map(str, SIZE)), "models": {}}
    for name in args.models.split(","):
        if name == "demo":
            model_dir, label = Path(args.demo_model), "demo model"
        else:
            model_dir = Path(args.coco_model) if args.coco_model else coco_model(work / "coco")
            label = "mobilenet_v3_large_fpn" + ("" if args.coco_model else " (no weights)")
        handler = bench_handler(model_dir, frames[:args.frames])
        server = Server(model_dir, work / f"server-{name}")
        try:
            server.wait()
            tab = uuid.uuid4().hex  # one browser tab: no stream waits for the camera its last one held
            stream_answers(server.url, [data_url(frames[0])], 1.0, session=tab)  # the model loads; the twin is built
            settled = round(settle(server.proc.pid), 1)
            runs = [bench_stream(server.url, frames, args.seconds, args.warmup, tab) for _ in range(args.repeats)]
            stream = {"settled_s": settled, "runs": runs, "frames_per_s_runs": [r["frames_per_s"] for r in runs]}
            stream.update({k: median([r[k] for r in runs]) for k in ("frames_per_s", "handler_ms", "transport_ms")})
        finally:
            server.stop()
        report["models"][label] = {"handler": handler, "end_to_end": stream}
        print(f"\n## {label}: {report['size']} frames analysed at {handler['work_size']} (load {loadavg()})")
        print("| part | decode | reduce | analysis | draw | postprocess | handler total | frames/s |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| handler, {handler['frames']} frames (median ms) | {handler['decode']} | {handler['reduce']} | "
              f"{handler['analysis']} | {handler['draw']} | {handler['postprocess']} | {handler['total']} | "
              f"{handler['frames_per_s']} |")
        print(f"| end to end through app.py, median of {args.repeats} streams of {args.seconds:.0f} s "
              f"({', '.join(map(str, stream['frames_per_s_runs']))} frames/s) | | | | | | {stream['handler_ms']} "
              f"(+ {stream['transport_ms']} transport) | **{stream['frames_per_s']}** |")
        if stream.get("status_errors"):
            print("status errors:", stream["status_errors"])
    report["load_after"] = loadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
