"""GPU rehearsal (issue 12): one command, no network, a few minutes on one GPU.

    python benchmarks/gpu_rehearsal.py [--out DIR] [--device cuda] [--images 480]
    python benchmarks/gpu_rehearsal.py --device cpu --smoke          # under a minute on a CPU

It generates a synthetic data set (the photo preset, ~500x375, when this checkout has it), trains each
stage (detector, alignment, captioner) for a bounded number of steps with AMP (bf16 autocast on CUDA;
the model keeps box arithmetic in fp32), and reports images/s per stage, peak GPU memory, ``analyze()``
images/s at batch 1 and 8, images/s into an embedded collection index at batch 8, and the largest
difference between the device's and the CPU's outputs on the same batch (detections, region vectors,
caption log-probs), and the bundled demo model's captions of
boxes made up of two detected objects on both (group captions). Every section is time-boxed and a
failure is reported, not fatal. ``report.json`` and ``report.md`` go to ``--out`` (default ``$OUT``).

Only regioncap's core and train modules are imported (no Gradio; qdrant-edge-py only by the index
section); the APIs used exist in torch 2.11 / torchvision 0.26.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regioncap.data.dataset import Flickr30kEntities, collate_fn  # noqa: E402
from regioncap.models.model import RegionCaptioner  # noqa: E402
from train.engine import move_batch  # noqa: E402
from train import train as train_script  # noqa: E402

STAGES = ("detector", "alignment", "captioner")
T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {message}", flush=True)


class SectionTimeout(Exception):
    """A section ran past its time box."""


@contextlib.contextmanager
def time_box(seconds: float):
    """Raise SectionTimeout in the main thread after ``seconds`` (SIGALRM; a no-op where it is missing)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise SectionTimeout(f"ran past its time box of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Rehearsal:
    """Runs the sections in order; each result (or error) lands in ``self.report`` and on disk at once."""

    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        self.device = torch.device(args.device)
        self.report = {"setup": environment(args), "sections": {}}
        self.data_root = self.model = None

    def section(self, name: str, seconds: float, fn) -> None:
        log(f"{name}: start (time box {seconds:.0f} s)")
        t0 = time.perf_counter()
        try:
            with time_box(seconds):
                result = fn() or {}
            entry = {"ok": True, **result}
        except (Exception, SectionTimeout) as exc:  # report and go on: one broken section must not cost the rest
            entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500],
                     "traceback": traceback.format_exc().splitlines()[-6:]}
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        self.report["sections"][name] = entry
        log(f"{name}: {'ok' if entry['ok'] else 'FAILED ' + entry['error']} ({entry['seconds']} s)")
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.report["setup"]["total_seconds"] = round(time.perf_counter() - T0, 1)
        (self.out / "report.json").write_text(json.dumps(self.report, indent=2))
        (self.out / "report.md").write_text(markdown(self.report))

    # -- sections ----------------------------------------------------------------------------------
    def data(self) -> dict:
        self.data_root = self.out / "data"
        shutil.rmtree(self.data_root, ignore_errors=True)
        preset = "photo" if has_photo_preset() and not self.args.default_preset else "default"
        generate(self.data_root, self.args.images, preset, self.args.workers)
        n = len((self.data_root / "train.txt").read_text().split())
        return {"preset": preset, "images": self.args.images, "train_images": n}

    def train(self, stage: str) -> dict:
        a = self.args
        if self.model is None:
            self.model, self.dataset = build_model(a, self.data_root, self.device)
        model, device = self.model, self.device
        bs = a.detector_batch if stage == "detector" else a.batch
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=bs, shuffle=True, collate_fn=collate_fn,
                                             num_workers=a.workers, drop_last=len(self.dataset) >= bs,
                                             persistent_workers=False)
        targs = train_args(["--data", str(self.data_root), "--out", "x", "--detector", a.arch])
        optimizer, _ = train_script.make_optimizer(model, stage, targs, a.steps)
        losses = train_script.stage_losses(stage, targs, model.config)
        amp = device.type == "cuda"
        model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        steps, images, warm_t, warm_images, last = 0, 0, None, 0, {}
        deadline = time.perf_counter() + a.stage_seconds
        while steps < a.steps and time.perf_counter() < deadline:
            for batch in loader:
                imgs, targets, text = move_batch(batch, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss_dict = model(imgs, targets, text, losses=losses)
                loss = sum(loss_dict.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 10.0)
                optimizer.step()
                steps, images = steps + 1, images + len(imgs)
                if steps == a.warmup_steps:  # time from here: the first steps pay cuDNN autotuning and allocation
                    sync(device)
                    warm_t, warm_images = time.perf_counter(), images
                if steps % a.log_every == 0 or steps == 1:
                    last = {k: round(float(v.detach()), 4) for k, v in loss_dict.items()}
                    log(f"  {stage} step {steps}: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items()))
                if steps >= a.steps or time.perf_counter() >= deadline:
                    break
        sync(device)
        last = {k: round(float(v.detach()), 4) for k, v in loss_dict.items()}
        timed = images - warm_images if warm_t else 0
        out = {"steps": steps, "batch_size": bs, "images": images, "losses_last": last,
               "images_per_s": round(timed / (time.perf_counter() - warm_t), 2) if timed else None,
               "stopped_by": "steps" if steps >= a.steps else "time limit"}
        if device.type == "cuda":
            out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out

    def analyze_speed(self) -> dict:
        model, device, a = self._eval_model(), self.device, self.args
        images = test_images(self.data_root, 8, device)
        out = {}
        for batch in (1, 8):
            chunk = (images * 8)[:batch]
            model(chunk)  # warm-up
            sync(device)
            t0, n = time.perf_counter(), 0
            while n < a.analyze_images:
                model(chunk)
                n += batch
            sync(device)
            out[f"batch_{batch}_images_per_s"] = round(n / (time.perf_counter() - t0), 2)
        if device.type == "cuda":
            out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out

    def index_speed(self) -> dict:
        """Images/s into an embedded collection index (Qdrant Edge) at batch 8, the files read and decoded
        by worker threads: what ``python -m regioncap index --batch-size 8`` does on this device; beside it
        the same files read, decoded and analysed with nothing written (``regioncap.batch.analyze_files``)."""
        import tempfile

        from regioncap import batch
        from regioncap.index import RegionIndex

        model = self._eval_model()
        files = sorted((self.data_root / "Images").glob("*.jpg"))[:self.args.index_images]
        t0 = time.perf_counter()
        analysed = sum(result is not None for _, result in batch.analyze_files(model, files[8:], 8))
        sync(self.device)
        alone = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as folder, RegionIndex(Path(folder) / "index", model) as index:
            index.add(files[:8], batch_size=8)  # warm-up, and the index's creation
            t0 = time.perf_counter()
            counts = index.add(files[8:], batch_size=8)
            seconds = time.perf_counter() - t0
        return {"images": counts["added"], "failed": len(counts["failed"]), "batch_size": 8,
                "images_per_s": round(counts["added"] / seconds, 2),
                "analysis_only_images_per_s": round(analysed / alone, 2), "workers": batch.default_workers()}

    def device_vs_cpu(self) -> dict:
        model = self._eval_model()
        cpu_model = copy.deepcopy(model).cpu()
        images = test_images(self.data_root, 2 if self.args.smoke else 4, torch.device("cpu"))
        with torch.inference_mode():
            dev = model.detector([im.to(self.device) for im in images])
            ref = cpu_model.detector(images)
        box_diff, score_diff, same_count = 0.0, 0.0, True
        for d, r in zip(dev, ref):
            n = min(len(d["boxes"]), len(r["boxes"]))
            same_count &= len(d["boxes"]) == len(r["boxes"])
            if n:
                box_diff = max(box_diff, float((d["boxes"][:n].cpu() - r["boxes"][:n]).abs().max()))
                score_diff = max(score_diff, float((d["scores"][:n].cpu() - r["scores"][:n]).abs().max()))
        # region vectors and captions on the same (given) boxes: no dependence on detection ties
        vec_diff, logp_diff, same_captions = 0.0, 0.0, True
        for im in images:
            h, w = im.shape[1:]
            boxes = [[0, 0, w / 2, h / 2], [w / 4, h / 4, w, h], [w * 0.1, h * 0.5, w * 0.6, h * 0.9]]
            rd = model.analyze(im.to(self.device), boxes=boxes)
            rc = cpu_model.analyze(im, boxes=boxes)
            vec_diff = max(vec_diff, float((rd.vectors - rc.vectors).abs().max()))
            for x, y in zip(rd.regions, rc.regions):
                logp_diff = max(logp_diff, abs(x.caption_score - y.caption_score))
                same_captions &= x.caption == y.caption
        return {"images": len(images), "detections_same_count": same_count, "box_max_diff_px": round(box_diff, 4),
                "score_max_diff": score_diff, "region_vector_max_diff": vec_diff,
                "caption_logprob_max_diff": logp_diff, "same_captions": same_captions,
                "note": "fp32 inference on both; the device is the CPU itself" if self.device.type == "cpu" else
                        "fp32 inference on both"}

    def group_captions(self) -> dict:
        """The bundled demo model's captions of boxes made up of two detected objects (``analyze(...,
        objects=)``, captioner.group_weight) on the device and on the CPU: the example photos, every box
        around two of the CPU's confident detections, the CPU's detections as the objects for both."""
        from PIL import Image

        from regioncap.models.rerank import find_groups

        demo = ROOT / "assets" / "demo-model"
        model, cpu_model = (RegionCaptioner.from_pretrained(demo, device=d) for d in (self.device, "cpu"))
        groups, boxes_seen, same, sim_diff, score_diff = 0, 0, True, 0.0, 0.0
        for path in sorted((ROOT / "assets" / "examples").glob("*.jpg")):
            image = Image.open(path).convert("RGB")
            found = cpu_model.analyze(image, max_regions=20, score_threshold=0.5, captions=False)
            det = torch.tensor([r.box for r in found.regions]).reshape(-1, 4)
            pairs = [torch.cat([torch.min(det[i, :2], det[j, :2]), torch.max(det[i, 2:], det[j, 2:])]).tolist()
                     for i in range(len(det)) for j in range(i + 1, len(det))]
            if not pairs:
                continue
            member = find_groups(torch.tensor(pairs), det, torch.tensor([r.score for r in found.regions]))
            rd = model.analyze(image, boxes=pairs, objects=found)
            rc = cpu_model.analyze(image, boxes=pairs, objects=found)
            boxes_seen += len(pairs)
            groups += int(member.any(1).sum())
            for x, y, cx, cy in zip(rd.regions, rc.regions, rd.candidates, rc.candidates):
                same &= x.caption == y.caption and len(cx) == len(cy)
                score_diff = max(score_diff, abs(x.caption_score - y.caption_score))
                for a, b in zip(cx, cy):
                    if a.caption == b.caption and a.member_similarity is not None:
                        sim_diff = max(sim_diff, abs(a.member_similarity - b.member_similarity))
        return {"boxes": boxes_seen, "group_boxes": groups, "same_captions": bool(same),
                "caption_score_max_diff": score_diff, "member_similarity_max_diff": sim_diff,
                "group_weight": model.config.captioner.group_weight}

    def _eval_model(self) -> RegionCaptioner:
        if self.model is None:
            self.model, self.dataset = build_model(self.args, self.data_root, self.device)
        return self.model.eval()

    def run(self) -> dict:
        a = self.args
        self.section("data", a.data_seconds, self.data)
        if self.data_root is None or not (self.data_root / "train.txt").exists():
            log("no data: the remaining sections are skipped")
            return self.report
        for stage in STAGES:
            self.section(f"train_{stage}", a.stage_seconds + 60, lambda stage=stage: self.train(stage))
        self.section("analyze", a.analyze_seconds, self.analyze_speed)
        self.section("index", a.analyze_seconds, self.index_speed)
        self.section("device_vs_cpu", a.analyze_seconds, self.device_vs_cpu)
        self.section("group_captions", a.analyze_seconds, self.group_captions)
        self.report["setup"]["total_seconds"] = round(time.perf_counter() - T0, 1)
        self.write()
        return self.report


# -- helpers ------------------------------------------------------------------------------------------
def environment(args) -> dict:
    env = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "python": platform.python_version(),
           "torch": torch.__version__, "cpu_count": os.cpu_count(), "device": args.device, "smoke": args.smoke,
           "arch": args.arch}
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    if args.device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def has_photo_preset() -> bool:
    proc = subprocess.run([sys.executable, "-m", "regioncap.data.synthetic", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return "--preset" in proc.stdout and "photo" in proc.stdout


def generate(root: Path, images: int, preset: str, workers: int) -> None:
    """``images`` synthetic images in ``root`` (Flickr30k layout) with regioncap's own generator command."""
    cmd = [sys.executable, "-m", "regioncap.data.synthetic", str(root), "--images", str(images), "--seed", "1000"]
    if preset != "default":
        cmd += ["--preset", preset, "--workers", str(max(1, workers))]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"synthetic generation failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def train_args(flags: list[str]):
    """train.train's settings for these command-line flags, defaults filled in as its main() does."""
    args = train_script.get_args_parser().parse_args(flags)
    resolve = getattr(train_script, "resolve_defaults", None)
    return resolve(args) if resolve else args


def build_model(a, data_root: Path, device: torch.device):
    dataset = Flickr30kEntities(data_root, "train")
    vocab = train_script.build_vocab(dataset, 1)
    dataset.vocab = vocab
    flags = ["--data", str(data_root), "--out", "x", "--detector", a.arch]
    if a.smoke:
        flags += ["--min-size", "96", "--max-size", "128"]
    config = train_script.build_config(train_args(flags), len(vocab))
    torch.manual_seed(0)
    model = RegionCaptioner(config, vocab, download=False).to(device)
    log(f"model: {a.arch}, input {config.detector.min_size}-{config.detector.max_size} px, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {len(dataset)} training images")
    return model, dataset


def test_images(root: Path, n: int, device: torch.device) -> list[torch.Tensor]:
    import numpy as np

    from regioncap.data.image import load_image

    ids = (root / "test.txt").read_text().split() or (root / "train.txt").read_text().split()
    out = []
    for k in range(n):
        arr = torch.from_numpy(np.asarray(load_image(root / "Images" / f"{ids[k % len(ids)]}.jpg")).copy())
        out.append(arr.permute(2, 0, 1).float().div(255).to(device))
    return out


def markdown(report: dict) -> str:
    s = report["setup"]
    lines = [f"# GPU rehearsal: {s.get('gpu', s['device'])}", "",
             f"`{s['command']}` — Python {s['python']}, torch {s['torch']}, torchvision {s.get('torchvision')}, "
             f"{s['cpu_count']} CPU cores, detector {s['arch']}, {s.get('total_seconds')} s in all", "",
             "| section | ok | s | result |", "|---|---|---|---|"]
    for name, r in report["sections"].items():
        detail = r.get("error") or ", ".join(f"{k} {v}" for k, v in r.items()
                                             if k not in ("ok", "seconds", "traceback"))
        lines.append(f"| {name} | {'yes' if r['ok'] else 'NO'} | {r['seconds']} | {detail} |")
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-rehearsal", help="report folder (default $OUT)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny everything: checks the script, measures nothing")
    p.add_argument("--arch", default=None, help="detector (default mobilenet_v3_large_fpn; small with --smoke)")
    p.add_argument("--images", type=int, default=480, help="synthetic images to generate")
    p.add_argument("--default-preset", action="store_true", help="the small default scenes even if photo exists")
    p.add_argument("--steps", type=int, default=100, help="optimisation steps per stage")
    p.add_argument("--warmup-steps", type=int, default=10, help="steps before img/s timing starts")
    p.add_argument("--batch", type=int, default=32, help="batch size of the alignment and captioner stages")
    p.add_argument("--detector-batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loader / generator processes")
    p.add_argument("--analyze-images", type=int, default=48, help="images per analyze() timing")
    p.add_argument("--index-images", type=int, default=200, help="files indexed by the index section")
    p.add_argument("--data-seconds", type=float, default=90)
    p.add_argument("--stage-seconds", type=float, default=60, help="each training stage stops after this")
    p.add_argument("--analyze-seconds", type=float, default=60)
    p.add_argument("--log-every", type=int, default=20)
    return p


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    if args.smoke:
        args.images, args.steps, args.warmup_steps, args.batch, args.detector_batch = 10, 2, 1, 4, 2
        args.workers, args.analyze_images, args.log_every, args.index_images = 0, 2, 1, 10
    args.arch = args.arch or ("small" if args.smoke else "mobilenet_v3_large_fpn")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU (use --device cpu --smoke to check the script)")
    torch.backends.cuda.matmul.allow_tf32 = False  # the device/CPU comparison measures fp32, not TF32
    torch.backends.cudnn.allow_tf32 = False
    log(f"gpu rehearsal: device {args.device}, out {args.out}")
    report = Rehearsal(args).run()
    print(Path(args.out, "report.md").read_text(), flush=True)
    return report


if __name__ == "__main__":
    main()
