"""benchmarks/bench_data.py runs end to end on a tiny generated set (no timed assertions)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data.py"


def test_every_row_is_reported(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    report = bench.main(["--generate", "6", "--preset", "shapes", "--splits", "1,0,0", "--gen-workers", "1",
                         "--data", str(tmp_path / "d"), "--vocab-min-count", "1", "--workers", "0",
                         "--batch-size", "2", "--batches", "2", "--min-size", "300", "--max-size", "500",
                         "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows == report["rows"] and list(rows) == ["generate", "dataset", "vocabulary", "loader", "loader+resize"]
    assert rows["generate"]["images"] == 6 and rows["dataset"]["images"] == 6 and rows["dataset"]["sentences"] == 30
    assert rows["vocabulary"]["tokens"] > 4 and rows["dataset"]["peak_rss_mb"] > 0
    assert rows["loader"]["images"] == 4 and rows["loader"]["img_per_s"] > 0
    assert rows["loader+resize"]["mean_pixels"] > rows["loader"]["mean_pixels"]  # resized up to min side 300
    printed = capsys.readouterr().out
    assert all(name in printed for name in rows)
