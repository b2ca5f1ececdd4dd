"""The app as a benchmark's subject: ``python app.py`` in a subprocess on a free loopback port.

Used by load_test.py (and tests/test_load.py through it): start, wait until it answers, stop;
``alive`` and ``oversized_upload_refused`` probe a running app.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python app.py`` in a subprocess on a free loopback port; its output goes to ``log``."""

    def __init__(self, model_dir: Path, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = workdir / "server.log"
        (workdir / "gradio-tmp").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "REGIONCAP_MODEL": str(model_dir), "GRADIO_SERVER_PORT": str(self.port),
               "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               "GRADIO_TEMP_DIR": str(workdir / "gradio-tmp"), "PYTHONUNBUFFERED": "1"}
        env.pop("REGIONCAP_MODEL_REVISION", None)
        self._log_file = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if alive(self.url):
                return
            time.sleep(0.25)
        raise RuntimeError(f"app.py did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def oversized_upload_refused(url: str, folder: Path, megabytes: int = 21) -> bool:
    """POST a file over the app's 20 MB limit straight to Gradio's upload route: 413 expected."""
    import httpx

    big = folder / "big.jpg"
    big.write_bytes(b"\xff\xd8" + b"\0" * (megabytes * 1024 * 1024))
    with big.open("rb") as f:
        answer = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.jpg", f, "image/jpeg")}, timeout=60)
    return answer.status_code == 413
