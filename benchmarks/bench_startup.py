"""App startup: ``python app.py`` from launch until its port answers, and until its model is loaded.

    python benchmarks/bench_startup.py                         # the demo model, 3 launches
    python benchmarks/bench_startup.py --model DIR --runs 5    # another model

The port must answer before the model is loaded (the model loads in a background thread; tests/test_app.py
checks that property); this script measures how long each takes. "model loaded" is the time of the app's own
log line (``regioncap.app: model ...: loaded``). Launches run one after another, each in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _server import ROOT, Server, alive

LOADED = re.compile(r"regioncap\.app: model .*: (loaded|.+)$", re.MULTILINE)


def launch(model: str, work: Path, timeout: float) -> tuple[float, float, str]:
    """(seconds until the port answers, seconds until the model-loaded log line, that line's outcome)."""
    start = time.monotonic()
    server = Server(model, work)
    answered = loaded = None
    outcome = ""
    try:
        while time.monotonic() - start < timeout:
            if server.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {server.proc.returncode}:\n{server.log.read_text()[-3000:]}")
            now = time.monotonic() - start
            if answered is None and alive(server.url):
                answered = now
            if loaded is None:
                match = LOADED.search(server.log.read_text(errors="replace"))
                if match:
                    loaded, outcome = now, match.group(1)
            if answered is not None and loaded is not None:
                return answered, loaded, outcome
            time.sleep(0.05)
        raise RuntimeError(f"app.py: no answer and loaded model within {timeout:.0f} s")
    finally:
        server.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "demo-model"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per launch before giving up")
    args = parser.parse_args(argv)
    print(f"model: {args.model} | runs {args.runs} | load average (1/5/15 min) at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    answers, loads = [], []
    for run in range(1, args.runs + 1):
        work = Path(tempfile.mkdtemp(prefix="regioncap-startup-"))
        try:
            answered, loaded, outcome = launch(args.model, work, args.timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        answers.append(answered)
        loads.append(loaded)
        print(f"run {run}: port answers {answered:6.2f} s | model {outcome} {loaded:6.2f} s")
    print(f"median: port answers {statistics.median(answers):.2f} s | model loaded {statistics.median(loads):.2f} s "
          f"| load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
