"""Load test of the served app (issue 7): concurrent gradio_client users, good and bad requests mixed.

Starts ``python app.py`` as a subprocess on a free loopback port (``GRADIO_SERVER_PORT``), with
``REGIONCAP_MODEL`` pointing to a tiny random-weight model written to a temporary folder (or
``--model DIR``), ``GRADIO_ANALYTICS_ENABLED=False`` and ``HF_HUB_OFFLINE=1``. Then ``--users``
threads, each with its own ``gradio_client.Client`` (its own session), send ``--requests`` requests
each, round-robin over a plan that mixes:

* good: ``/caption`` of synthetic scenes (JPEG, RGBA PNG, EXIF-rotated JPEG, a 5x5 PNG, a 2400x1800
  JPEG) and ``/query`` with a known phrase. Each answer is compared with what the same model gives
  in this process (``analyze`` / ``query``): same regions, captions, labels, boxes;
* bad: a text file named .jpg, an empty file, a truncated JPEG, a PNG claiming 8000x8000 pixels,
  PostScript named .jpg; an empty phrase, a phrase in another script, a 300-character phrase.
  Each must come back as a Gradio error whose message says what is wrong.

Counted: answered correctly, refused cleanly, wrong (an answer that differs, or a refusal with the
wrong message), lost (no answer: connection error, timeout). After the run: the server still
answers, one more good request is right, the process is alive, its log holds no traceback, and an
upload over the app's size limit is refused with HTTP 413.

    python benchmarks/load_test.py                       # 8 users x 10 requests
    python benchmarks/load_test.py --users 4 --requests 3 --json load.json
    python benchmarks/load_test.py --url http://127.0.0.1:7860/ --model assets/demo-model  # a running app

Only loopback addresses are used. Exit code 0 when every check passes, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from PIL import Image  # noqa: E402

from _server import Server, alive, free_port, oversized_upload_refused  # noqa: E402,F401 (free_port: tests)
from regioncap.testing import make_tiny_model  # noqa: E402

PHRASE = "a red circle"


def make_inputs(folder: Path) -> tuple[dict[str, Path], dict[str, tuple[Path, str]]]:
    """(good image name -> path, bad image name -> (path, expected message regex)) written to ``folder``."""
    from regioncap.data.synthetic import make_example

    folder.mkdir(parents=True, exist_ok=True)
    scenes = [make_example(0, i, str(i))[0] for i in range(3)]
    good = {"scene.jpg": scenes[0], "alpha.png": scenes[1].convert("RGBA"), "tiny.png": scenes[2].resize((5, 5)),
            "large.jpg": scenes[2].resize((2400, 1800), Image.Resampling.BICUBIC)}
    paths = {}
    for name, im in good.items():
        paths[name] = folder / name
        im.save(paths[name], quality=90) if name.endswith(".jpg") else im.save(paths[name])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    paths["rotated.jpg"] = folder / "rotated.jpg"
    scenes[1].save(paths["rotated.jpg"], quality=90, exif=exif.tobytes())

    scenes[0].save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    huge = folder / "huge.png"
    Image.new("1", (8000, 8000)).save(huge)  # 64 Mpixel, a few kB
    bad = {"notes.jpg": (b"a shopping list, not a picture\n", "notes.jpg: not an image"),
           "empty.jpg": (b"", "empty.jpg: file is empty"),
           "truncated.jpg": (data[: len(data) // 3], "truncated.jpg: corrupt or truncated"),
           "postscript.jpg": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\nshowpage\n", "not an image")}
    out = {}
    for name, (content, message) in bad.items():
        (folder / name).write_bytes(content)
        out[name] = (folder / name, message)
    out["huge.png"] = (huge, "huge.png: image too large")
    return paths, out


@dataclass
class Request:
    """One planned request: ``endpoint`` with ``args``; ``expect`` None for a good one, else a message regex."""

    kind: str
    endpoint: str
    args: tuple
    expect: str | None = None
    check: object = None  # callable(answer) -> None | str (what is wrong)


@dataclass
class Outcome:
    kind: str
    good: bool
    status: str  # correct | refused | wrong | lost
    seconds: float
    detail: str = ""


def build_plan(model, good: dict[str, Path], bad: dict[str, tuple[Path, str]], settings=(10, 0.0)) -> list[Request]:
    """Requests with their expected answers, computed with ``model`` in this process."""
    from gradio_client import handle_file

    from regioncap.data.image import load_image

    max_regions, threshold = settings
    plan = []
    for name, path in good.items():
        expected = model.analyze(load_image(path), max_regions=max_regions, score_threshold=threshold)
        plan.append(Request(f"caption {name}", "/caption", (handle_file(str(path)), max_regions, threshold),
                            check=_caption_check([r.to_dict() for r in expected.regions],
                                                 (expected.width, expected.height))))
    scene = good["scene.jpg"]
    expected = model.analyze(load_image(scene), max_regions=max_regions, score_threshold=threshold)
    matches = [(r.caption, round(sim, 3), ", ".join(str(round(c)) for c in r.box))
               for r, sim in expected.query(PHRASE, top_k=3)]
    plan.append(Request("query scene.jpg", "/query", (PHRASE, 3, handle_file(str(scene)), max_regions, threshold),
                        check=_query_check(matches)))
    for name, (path, message) in bad.items():
        plan.append(Request(f"caption {name}", "/caption", (handle_file(str(path)), max_regions, threshold),
                            expect=message))
    for label, phrase, message in (("empty phrase", "  ", "empty phrase"),
                                   ("other script", "一只红色的圆", "vocabulary"),
                                   ("300 characters", "red " * 75, "too long")):
        plan.append(Request(f"query {label}", "/query", (phrase, 3, handle_file(str(scene)), max_regions, threshold),
                            expect=message))
    # interleave good and bad so that every user sends both
    goods, bads = [p for p in plan if p.expect is None], [p for p in plan if p.expect is not None]
    mixed = []
    for i in range(max(len(goods), len(bads))):
        mixed += ([goods[i]] if i < len(goods) else []) + ([bads[i]] if i < len(bads) else [])
    return mixed


def _caption_check(regions: list[dict], size: tuple[int, int]):
    def check(answer) -> str | None:
        data = json.loads(Path(answer[2]).read_text(encoding="utf-8"))
        if (data["width"], data["height"]) != size:
            return f"size {data['width']}x{data['height']}, expected {size[0]}x{size[1]}"
        got = data["regions"]
        if len(got) != len(regions) or len(answer[1]["data"]) != len(regions):
            return f"{len(got)} regions, expected {len(regions)}"
        for g, e in zip(got, regions):
            if g["caption"] != e["caption"] or g["label"] != e["label"]:
                return f"region {g['caption']!r}/{g['label']}, expected {e['caption']!r}/{e['label']}"
            if max(abs(a - b) for a, b in zip(g["box"], e["box"])) > 0.05 or abs(g["score"] - e["score"]) > 1e-3:
                return f"box {g['box']} score {g['score']}, expected {e['box']} {e['score']}"
        with Image.open(answer[0]) as im:  # the annotated picture arrives whole
            im.load()
        return None
    return check


def _query_check(matches: list[tuple]):
    def check(answer) -> str | None:
        got = [(row[2], row[3], row[4]) for row in answer[1]["data"]]
        if [(c, b) for c, _, b in got] != [(c, b) for c, _, b in matches] or any(
                abs(g[1] - e[1]) > 2e-3 for g, e in zip(got, matches)):
            return f"matches {got}, expected {matches}"
        return None
    return check


def run_user(url: str, requests: list[Request], downloads: str, timeout: float, results: list[Outcome]) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    try:
        client = Client(url, verbose=False, analytics_enabled=False, download_files=downloads)
    except Exception as e:  # the server did not even answer: every request of this user is lost
        results.extend(Outcome(r.kind, r.expect is None, "lost", 0.0, f"client: {e!r}") for r in requests)
        return
    for r in requests:
        start = time.perf_counter()
        try:
            answer = client.submit(*r.args, api_name=r.endpoint).result(timeout=timeout)
        except AppError as e:
            seconds = time.perf_counter() - start
            message = str(e)
            if r.expect is not None and re.search(r.expect, message):
                results.append(Outcome(r.kind, False, "refused", seconds))
            else:
                results.append(Outcome(r.kind, r.expect is None, "wrong", seconds, f"error {message!r}"))
            continue
        except Exception as e:  # connection dropped, timeout, truncated download: the request is lost
            results.append(Outcome(r.kind, r.expect is None, "lost", time.perf_counter() - start, repr(e)[:300]))
            continue
        seconds = time.perf_counter() - start
        if r.expect is not None:
            results.append(Outcome(r.kind, False, "wrong", seconds, "answered, but should have been refused"))
            continue
        try:
            problem = r.check(answer)
        except Exception as e:  # an output file that cannot be read counts as a wrong answer
            problem = f"unreadable answer: {e!r}"
        results.append(Outcome(r.kind, True, "wrong" if problem else "correct", seconds, problem or ""))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def run(users: int = 8, requests: int = 10, model: str | None = None, url: str | None = None,
        timeout: float = 180.0, workdir: str | None = None) -> dict:
    """Run the load test; returns the report (see ``main`` for what it holds)."""
    from regioncap.models.model import RegionCaptioner

    tmp = tempfile.TemporaryDirectory(prefix="regioncap-load-") if workdir is None else None
    work = Path(workdir or tmp.name)
    model_dir = Path(model) if model else make_tiny_model(work / "tiny-model")
    good, bad = make_inputs(work / "inputs")
    plan = build_plan(RegionCaptioner.from_pretrained(model_dir), good, bad)
    server = None if url else Server(model_dir, work)
    try:
        if server:
            server.wait()
            url = server.url
        per_user = [[plan[(u * 3 + j) % len(plan)] for j in range(requests)] for u in range(users)]
        results: list[Outcome] = []
        threads = [threading.Thread(target=run_user, args=(url, reqs, str(work / "downloads"), timeout, results))
                   for reqs in per_user]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        after: list[Outcome] = []
        run_user(url, [plan[0]], str(work / "downloads"), timeout, after)
        upload_413 = oversized_upload_refused(url, work)
        still_alive = alive(url) and (server is None or server.proc.poll() is None)
    finally:
        if server:
            server.stop()
    log = server.log.read_text(errors="replace") if server else ""
    report = summarise(results, users, requests, wall)
    report.update(server_alive_after=still_alive, good_request_after=after[0].status == "correct",
                  oversized_upload_413=upload_413, tracebacks_in_server_log=log.count("Traceback"),
                  model=str(model) if model else "tiny random model", url=url)
    report["ok"] = bool(report["all_answered_as_expected"] and still_alive and report["good_request_after"]
                        and upload_413 and not report["tracebacks_in_server_log"])
    if tmp is not None:
        tmp.cleanup()
    return report


def summarise(results: list[Outcome], users: int, requests: int, wall: float) -> dict:
    good = [r for r in results if r.good]
    bad = [r for r in results if not r.good]
    failures = [f"{r.kind}: {r.status}: {r.detail}" for r in results if r.status in ("wrong", "lost")]
    lat = {name: [r.seconds for r in rs if r.status in ("correct", "refused")] for name, rs in (("good", good),
                                                                                                  ("bad", bad))}
    return {
        "users": users, "requests_per_user": requests, "sent": users * requests, "answered": len(results),
        "good": len(good), "good_correct": sum(r.status == "correct" for r in good),
        "bad": len(bad), "bad_refused": sum(r.status == "refused" for r in bad),
        "wrong": sum(r.status == "wrong" for r in results), "lost": sum(r.status == "lost" for r in results),
        "wall_s": round(wall, 2), "requests_per_s": round(len(results) / wall, 2) if wall else None,
        "latency_s": {name: {"p50": round(statistics.median(v), 3) if v else None,
                             "p95": round(percentile(v, 0.95), 3) if v else None,
                             "max": round(max(v), 3) if v else None} for name, v in lat.items()},
        "all_answered_as_expected": len(results) == users * requests and not failures,
        "failures": failures[:20],
    }


def print_report(report: dict) -> None:
    lat = report["latency_s"]
    lines = [
        f"load test: {report['users']} users x {report['requests_per_user']} requests against {report['url']} "
        f"({report['model']})",
        f"  sent {report['sent']}, answered {report['answered']}, lost {report['lost']}, wrong {report['wrong']}",
        f"  good requests answered correctly: {report['good_correct']}/{report['good']}",
        f"  bad requests refused cleanly:     {report['bad_refused']}/{report['bad']}",
        f"  wall {report['wall_s']} s, {report['requests_per_s']} requests/s",
        f"  latency good  p50 {lat['good']['p50']} s  p95 {lat['good']['p95']} s  max {lat['good']['max']} s",
        f"  latency bad   p50 {lat['bad']['p50']} s  p95 {lat['bad']['p95']} s  max {lat['bad']['max']} s",
        f"  after: server alive {report['server_alive_after']}, good request correct {report['good_request_after']}, "
        f"21 MB upload refused (413) {report['oversized_upload_413']}, "
        f"tracebacks in server log {report['tracebacks_in_server_log']}",
        f"  {'PASS' if report['ok'] else 'FAIL'}",
    ]
    lines += [f"  ! {f}" for f in report["failures"]]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--requests", type=int, default=10, help="requests per user")
    p.add_argument("--model", default=None, help="model folder (default: a tiny random model in a temp folder)")
    p.add_argument("--url", default=None, help="drive an app already running here instead of starting one")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds one request may take")
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)
    if args.url and not re.match(r"^https?://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/", args.url):
        p.error("--url must be a loopback address (127.0.0.1, localhost, [::1]) ending in /")
    report = run(args.users, args.requests, args.model, args.url, args.timeout)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
