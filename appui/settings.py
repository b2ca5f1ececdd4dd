"""The web app's settings: where things are, the limits on what a visitor sends, the tables' headers."""

from __future__ import annotations

from pathlib import Path

from regioncap.viz import PALETTE

ROOT = Path(__file__).resolve().parents[1]  # the repository (app.py, assets/)
EXAMPLES_DIR, DEMO_MODEL = ROOT / "assets" / "examples", ROOT / "assets" / "demo-model"
MAX_FILE_SIZE = "20mb"
DISPLAY_MIN, DISPLAY_MAX = 960, 1280  # long side of drawn pictures: small images enlarged, large ones reduced
DEFAULTS = {"max_regions": 10, "threshold": 0.5, "top_k": 3}
MAX_USER_BOXES, MAX_PHRASE, MAX_SENTENCE = 20, 200, 1000
MAX_COLLECTION = 50  # photos in one visitor's collection (kept in memory until the browser tab closes)
TABLE_HEADERS = ["#", "caption", "entity type", "detector score", "caption score", "box (x1, y1, x2, y2)"]
MATCH_HEADERS = ["rank", "region #", "caption", "similarity", "box (x1, y1, x2, y2)"]
CANDIDATE_HEADERS = ["region #", "candidate caption", "log-prob", "similarity", "objects' similarity", "score",
                     "chosen"]
PHRASE_COLOURS = {str(i + 1): "#" + "".join(f"{c:02x}" for c in PALETTE[i % len(PALETTE)]) for i in range(64)}


