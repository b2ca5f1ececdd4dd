"""Video benchmark (issue 32): speed, memory, identity switches and "find the moment" recall.

    nice -n 10 python benchmarks/bench_video.py                      # everything (~15 min on 2 busy cores)
    python benchmarks/bench_video.py --only speed,tracking,search --seconds 180
    python benchmarks/bench_video.py --only memory --memory-minutes 10,60 --memory-every 4

On synthetic videos of moving shapes (``regioncap.video.synthetic``: shapes-preset objects coming into
view, drifting and leaving, ground truth of what is in view where and when), encoded with PyAV:

* **speed**: decode + analysis + tracking (``caption_video``, no outputs written) as a multiple of real
  time at the default sampling (``--every 0.5``), for the demo model on a 256x192 video (the size of its
  training scenes) and a COCO-size ``mobilenet_v3_large_fpn`` detector (random weights calibrated as in
  ``bench_photo.py``; torchvision's 800-px input) on a 640x480 one; decoding alone beside it.
* **tracking**: identity switches per minute (CLEAR-MOT: a ground-truth shape matched, IoU >= 0.5, to a
  track number other than the one it was last matched to), shapes found per frame, tracks per shape.
* **search**: sentences about "the moment" ("a small red circle", "a small red circle and a large blue
  square" for shapes seen together) ranked over the sampled frames by S_kl (``AnalysisResult.align``,
  the collection search's image score), against the truth of when the shapes are all in view: hit@1,
  precision@5, and moments found in the top 10 (distinct appearances, one per result). Candidates
  either every sampled frame or each track's best frame (its highest detector score).
* **memory**: peak RSS of a fresh process captioning a 10-minute and a 60-minute video (each in its own
  subprocess: peak RSS is per process); they should be equal within 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "assets" / "demo-model"
DEFAULT_THREADS = None  # torch's own default, read in main()


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_video(folder: Path, name: str, seconds: float, seed: int, size=(256, 192), fps: float = 10):
    from regioncap.video.synthetic import MovingScene, write_video

    scale = min(size) / 192
    scene = MovingScene.random(seed, seconds, size=size, speed=12.0 * scale)
    path = folder / name
    t0 = time.perf_counter()
    write_video(path, scene, fps=fps)
    return scene, path, time.perf_counter() - t0


def coco_model():
    import torch
    from torchvision.transforms.functional import to_tensor

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import calibrate_detector, synthetic_vocab
    from bench_photo import photos

    from regioncap.data.flickr30k import ENTITY_TYPES
    from regioncap.models.config import DetectorConfig, RegionCaptionerConfig
    from regioncap.models.model import RegionCaptioner

    torch.manual_seed(0)
    vocab = synthetic_vocab()
    config = RegionCaptionerConfig(vocab_size=len(vocab), entity_types=list(ENTITY_TYPES),
                                   detector=DetectorConfig.for_arch("mobilenet_v3_large_fpn"))
    model = RegionCaptioner(config, vocab, download=False).eval()
    calibrate_detector(model.detector, [to_tensor(im) for im in photos(2, seed=3)], logit_std=0.5)
    return model


def decode_only(path: Path, every: float, work_side) -> float:
    from regioncap.video.reader import VideoReader

    t0 = time.perf_counter()
    with VideoReader(path, every, work_side) as video:
        for _ in video:
            pass
    return time.perf_counter() - t0


def run_captions(model, path: Path, every: float, workers: int = 1):
    """(seconds taken, frame records, track records, [(time, result, track numbers)])."""
    from regioncap.video.run import caption_video

    kept = []
    t0 = time.perf_counter()
    records = list(caption_video(model, path, every, workers=workers, on_frame=lambda frame, r, tracks: kept.append(
        (frame.time, r, [tr.number for tr in tracks]))))
    took = time.perf_counter() - t0
    return took, [r for r in records if "time" in r], [r for r in records if "track" in r], kept


def speed_row(name: str, model, path: Path, seconds: float, every: float, setting: str) -> tuple[dict, tuple]:
    """One run at ``setting`` "THREADS:WORKERS" (torch threads, 0: torch's default; frames analysed at once)."""
    import torch

    threads, workers = (int(x) for x in setting.split(":"))
    default = torch.get_num_threads()
    torch.set_num_threads(threads or DEFAULT_THREADS)
    config = model.config.detector
    decode = decode_only(path, every, (config.min_size, config.max_size))
    took, frames, tracks, kept = run_captions(model, path, every, workers)
    torch.set_num_threads(default)
    row = {"model": name, "torch_threads": threads or DEFAULT_THREADS, "workers": workers, "video_s": seconds,
           "frames": len(frames), "wall_s": round(took, 1),
           "x_real_time": round(seconds / took, 2), "ms_per_frame": round(1000 * took / max(1, len(frames)), 1),
           "decode_s": round(decode, 2), "decode_x_real_time": round(seconds / decode, 1), "load": loadavg()}
    print(json.dumps(row), flush=True)
    return row, (frames, tracks, kept)


# -- tracking against the truth --------------------------------------------------------------------------
def identity_switches(scene, kept, seconds: float) -> dict:
    from regioncap.track import iou

    last: dict[int, int] = {}
    switches = matched = truths = 0
    per_mover: dict[int, set] = {}
    for t, result, numbers in kept:
        truth = scene.in_view(t)
        truths += len(truth)
        pairs = sorted(((iou(box, r.box), i, j) for i, box in truth for j, r in enumerate(result.regions)),
                       reverse=True)
        used_t, used_r = set(), set()
        for overlap, i, j in pairs:
            if overlap < 0.5:
                break
            if i in used_t or j in used_r:
                continue
            used_t.add(i)
            used_r.add(j)
            matched += 1
            if i in last and last[i] != numbers[j]:
                switches += 1
                if os.environ.get("BENCH_VIDEO_DEBUG"):
                    print(f"switch at {t}: mover {i} ({scene.movers[i].phrase}) {last[i]} -> {numbers[j]}")
            last[i] = numbers[j]
            per_mover.setdefault(i, set()).add(numbers[j])
    shown = [i for i in range(len(scene.movers)) if i in per_mover]
    return {"movers": len(scene.movers), "movers_found": len(shown), "truth_boxes": truths,
            "found_per_frame": round(matched / max(1, truths), 3), "id_switches": switches,
            "id_switches_per_min": round(switches / (seconds / 60), 2),
            "tracks_per_mover": round(sum(len(per_mover[i]) for i in shown) / max(1, len(shown)), 2)}


# -- "find the moment" -----------------------------------------------------------------------------------
def queries(scene, kept) -> list[tuple[str, set]]:
    """(sentence, the set of mover indices it names): each mover's phrase, and each pair seen together."""
    out = [(m.phrase, {i}) for i, m in enumerate(scene.movers)]
    pairs = set()
    for t, _, _ in kept:
        ids = sorted(i for i, _ in scene.in_view(t))
        pairs |= {(a, b) for k, a in enumerate(ids) for b in ids[k + 1:]}
    for a, b in sorted(pairs):
        out.append((f"{scene.movers[a].phrase} and {scene.movers[b].phrase}", {a, b}))
    return out


def moment_of(scene, t: float, ids: set) -> tuple | None:
    """Which moment ``t`` belongs to for ``ids`` (all in view): the start times of their appearances."""
    in_view = {i for i, _ in scene.in_view(t)}
    return tuple(sorted(scene.movers[i].start for i in ids)) if ids <= in_view else None


def search_scores(model, scene, kept, tracks) -> dict:
    """hit@1, precision@5, moments in the top 10, for each kind of candidate."""
    from regioncap.models.results import sentence_phrases

    qs = queries(scene, kept)
    encoded = {}
    for sentence, _ in qs:
        phrases = sentence_phrases(sentence, model)
        encoded[sentence] = (phrases, model.encode_text(phrases))
    by_time = {t: r for t, r, _ in kept}
    best: dict[int, tuple[float, float]] = {}  # track -> (score, time) of its best frame
    for t, result, numbers in kept:
        for region, n in zip(result.regions, numbers):
            if n not in best or region.score > best[n][0]:
                best[n] = (region.score, t)
    candidates = {"every_frame": sorted(by_time), "track_best_frame": sorted({t for _, t in best.values()})}
    out = {"queries": len(qs)}
    for kind, times in candidates.items():
        hit1 = p5 = moments10 = 0.0
        t0 = time.perf_counter()
        for sentence, ids in qs:
            ranked = sorted(times, key=lambda t: -by_time[t].align_encoded(*encoded[sentence]).score)
            hit1 += moment_of(scene, ranked[0], ids) is not None
            p5 += sum(moment_of(scene, t, ids) is not None for t in ranked[:5]) / 5
            found = {moment_of(scene, t, ids) for t in ranked[:10]} - {None}
            truth = {moment_of(scene, t, ids) for t in by_time} - {None}
            moments10 += len(found) / max(1, len(truth))
        n = len(qs)
        out[kind] = {"candidates": len(times), "hit@1": round(hit1 / n, 3), "precision@5": round(p5 / n, 3),
                     "moments_in_top10": round(moments10 / n, 3),
                     "ms_per_query": round(1000 * (time.perf_counter() - t0) / n, 1)}
    return out


# -- memory ----------------------------------------------------------------------------------------------
def memory_child(path: str, every: float, workers: int) -> None:
    """In a fresh process: caption ``path``; print the peak RSS, and the RSS after loading the model, after
    the first minute of video and at the end (growth with length shows between the last two)."""
    import torch

    from regioncap import RegionCaptioner
    from regioncap.video.run import caption_video

    torch.set_num_threads(1)
    model = RegionCaptioner.from_pretrained(DEMO)
    loaded = rss_mb()
    marks = {}
    t0 = time.perf_counter()
    n = 0
    for record in caption_video(model, path, every, workers=workers):
        n += 1
        if record.get("time", 0) >= 60 and "minute" not in marks:
            marks["minute"] = rss_mb()
    # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork + exec, so
    # a child of this (model-holding) benchmark would report the parent's peak
    print(json.dumps({"records": n, "wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": rss_mb("VmHWM"),
                      "rss_loaded_mb": loaded, "rss_after_1min_mb": marks.get("minute"), "rss_end_mb": rss_mb()}))


def rss_mb(field: str = "VmRSS") -> float:
    """``field`` of /proc/self/status (VmRSS: now; VmHWM: the peak) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def memory_rows(folder: Path, minutes: list[float], every: float, fps: float, workers: int) -> list[dict]:
    rows = []
    for m in minutes:
        _, path, made = make_video(folder, f"long-{m:g}min.mp4", m * 60, seed=11, fps=fps)
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(path), "--every", str(every),
                              "--memory-workers", str(workers)],
                             capture_output=True, text=True, check=True)
        row = {"minutes": m, "fps": fps, "every": every, "workers": workers,
               "size_mb": round(path.stat().st_size / 2**20, 1),
               "made_s": round(made, 1), **json.loads(out.stdout.strip().splitlines()[-1]), "load": loadavg()}
        print(json.dumps(row), flush=True)
        rows.append(row)
        path.unlink()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="speed,tracking,search,coco,memory")
    p.add_argument("--seconds", type=float, default=120, help="length of the demo model's video (default 120)")
    p.add_argument("--settings", default="0:1,1:1,1:2",
                   help="speed runs as THREADS:WORKERS (torch threads, 0: its default; frames analysed at once); "
                   "tracking and search use the first run (default 0:1,1:1,1:2)")
    p.add_argument("--coco-seconds", type=float, default=30, help="length of the COCO model's video (default 30)")
    p.add_argument("--every", type=float, default=0.5)
    p.add_argument("--memory-minutes", default="10,60")
    p.add_argument("--memory-every", type=float, default=4.0,
                   help="sampling of the memory runs (default 4 s: 900 analyses for an hour on busy cores)")
    p.add_argument("--memory-fps", type=float, default=2.0)
    p.add_argument("--memory-workers", type=int, default=2)
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.every, args.memory_workers)
        return 0
    import torch

    global DEFAULT_THREADS
    DEFAULT_THREADS = torch.get_num_threads()
    only = set(args.only.split(","))
    report = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "threads": torch.get_num_threads(),
              "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        folder = Path(tmp)
        if only & {"speed", "tracking", "search"}:
            from regioncap import RegionCaptioner

            scene, path, made = make_video(folder, "scene.mp4", args.seconds, seed=7)
            print(f"video: {args.seconds:g} s 256x192 10 fps, {len(scene.movers)} shapes, made in {made:.1f} s",
                  flush=True)
            model = RegionCaptioner.from_pretrained(DEMO)
            settings = args.settings.split(",")
            report["demo"], runs = [], []
            for setting in settings:
                row, run = speed_row("demo model", model, path, args.seconds, args.every, setting)
                report["demo"].append(row)
                runs.append(run)
            frames, tracks, kept = runs[0]
            if "tracking" in only:
                report["tracking"] = identity_switches(scene, kept, args.seconds)
                print(json.dumps(report["tracking"]), flush=True)
            if "search" in only:
                report["search"] = search_scores(model, scene, kept, tracks)
                print(json.dumps(report["search"]), flush=True)
        if "coco" in only:
            _, path, _ = make_video(folder, "scene640.mp4", args.coco_seconds, seed=8, size=(640, 480))
            coco = coco_model()
            report["coco"] = [speed_row("mobilenet_v3_large_fpn (800 px)", coco, path, args.coco_seconds, args.every,
                                        setting)[0] for setting in args.settings.split(",")]
        if "memory" in only:
            minutes = [float(m) for m in args.memory_minutes.split(",")]
            report["memory"] = memory_rows(folder, minutes, args.memory_every, args.memory_fps, args.memory_workers)
            peaks = [r["peak_rss_mb"] for r in report["memory"]]
            report["memory_ratio"] = round(max(peaks) / min(peaks), 3)
            print(f"peak RSS ratio (longest / shortest): {report['memory_ratio']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
