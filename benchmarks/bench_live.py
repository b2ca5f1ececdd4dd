"""The Live tab's frames per second on this machine (issue 24), per model, in two parts.

* handler: the tab's stream handler (``appui.live.LiveApp.frame``) called directly on a 640x480 video of
  synthetic scenes, with the time split into decode (Gradio's own preprocessing of the JPEG data URL a
  browser sends), reduce (to the live work size), analysis (``analyze``), draw (tracking, drawing the
  regions on the full frame, writing the JPEG) and postprocess (Gradio copying that file into its cache).
* end to end: ``python app.py`` in a subprocess and a client speaking the browser's stream protocol: it
  joins the queue with the ``live_frame`` event, posts a JPEG data URL to ``/gradio_api/stream/{event_id}``
  every 0.1 s (as the browser does, whether or not the last one was answered) and reads the answers from
  the SSE stream for ``--seconds``. Frames/s = answers per second; "transport" is the median time between
  answers minus the median handler time reported on each answer's status line (Gradio's decode and
  postprocess, the HTTP round trips and any wait for the next frame).

Models: ``assets/demo-model`` and a COCO-size ``mobilenet_v3_large_fpn`` built without weights (random,
with trained-like statistics from ``_common.calibrate_detector``; its decoder writes the longest captions,
a worst case for decoding), or ``--coco-model DIR`` for a trained one.

    python benchmarks/bench_live.py                       # both models, ~4 minutes on 2 cores
    python benchmarks/bench_live.py --models demo --seconds 10 --frames 20 --json live.json
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

    from appui.common import ModelHolder
    from appui.handlers import RegionApp
    from appui.live import LiveApp, work_size

    holder = ModelHolder(str(model_dir))
    holder.load()
    if holder.model is None:
        raise SystemExit(holder.error)
    live = LiveApp(RegionApp(holder))
    model = live.model()
    camera = gr.Image(sources=["webcam"], streaming=True, type="pil", render=False)
    shown = gr.Image(type="filepath", interactive=False, render=False)
    urls = [data_url(f) for f in frames]
    rows, session = [], None

    def one(url, session):
        t0 = time.perf_counter()
        image = camera.preprocess(ImageData(url=url))
        t1 = time.perf_counter()
        path, *_, session = live.frame(image, 10, 0.5, "", session)
        t2 = time.perf_counter()
        shown.postprocess(path)
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
def stream_answers(url: str, urls: list[str], seconds: float, every: float = EVERY) -> list[tuple[float, list]]:
    """Stream JPEG data URLs (looped) to the running app's Live tab as a browser does: join the queue with
    the ``live_frame`` event, post the next frame to ``/gradio_api/stream/{event_id}`` every ``every``
    seconds, answered or not, close after ``seconds``. Returns (seconds since the stream started,
    output data) for every answer."""
    import httpx

    config = httpx.get(url + "config", timeout=30).json()
    dep = next(d for d in config["dependencies"] if d.get("api_name") == "live_frame")
    session = uuid.uuid4().hex

    def body(i: int) -> dict:
        image = {"url": urls[i % len(urls)], "meta": {"_type": "gradio.FileData"}}
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


def bench_stream(url: str, frames: list[Image.Image], seconds: float, warmup: float) -> dict:
    """Answers per second after ``warmup`` seconds of the stream, and the handler time they report. Short
    streams run first until one is answered: the app loads its model (and the live twin) after it answers."""
    urls, deadline = [data_url(f) for f in frames], time.monotonic() + 600
    while not any(len(d) > 3 and "ms a frame" in str(d[3]) for _, d in stream_answers(url, urls, 2.0)):
        if time.monotonic() > deadline:
            raise RuntimeError("the app's Live tab did not answer within 10 minutes")
    answers = [(t, data) for t, data in stream_answers(url, urls, warmup + seconds) if t >= warmup]
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
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
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
            stream_answers(server.url, [data_url(frames[0])], 1.0)  # the model loads; the live twin is built
            settled = round(settle(server.proc.pid), 1)
            runs = [bench_stream(server.url, frames, args.seconds, args.warmup) for _ in range(args.repeats)]
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
