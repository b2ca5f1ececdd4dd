"""The app's output files: unique files in one private temp folder (Gradio copies them into its cache)."""

from __future__ import annotations

import atexit
import collections
import json
import shutil
import tempfile
import threading
from pathlib import Path

from PIL import Image


class OutputFiles:
    """Unique files in one private temp folder; the oldest are removed once Gradio has long copied them."""

    def __init__(self, keep: int = 256):
        self.root, self.keep = Path(tempfile.mkdtemp(prefix="regioncap-app-")), keep
        self.dirs, self.lock = collections.deque(), threading.Lock()
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def path(self, name: str) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self.lock:
            self.dirs.append(folder)
            old = self.dirs.popleft() if len(self.dirs) > self.keep else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return folder / name

    def image(self, image: Image.Image, stem: str) -> str:
        path = self.path(f"{stem}.jpg")
        image.save(path, quality=92, subsampling=0)  # 4:4:4 keeps coloured label text crisp
        return str(path)

    def json(self, data: dict, stem: str) -> str:
        path = self.path(f"{stem}.json")
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return str(path)
