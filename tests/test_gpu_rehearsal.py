"""benchmarks/gpu_rehearsal.py --device cpu --smoke runs every section and writes its report."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_rehearsal.py"


def test_smoke_run_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["data", "train_detector", "train_alignment", "train_captioner", "analyze", "index",
                              "device_vs_cpu", "group_captions"]
    assert all(s["ok"] for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    assert sections["data"]["preset"] == "photo"
    for stage in ("detector", "alignment", "captioner"):
        assert sections[f"train_{stage}"]["steps"] == 2 and sections[f"train_{stage}"]["images_per_s"] > 0
    assert sections["analyze"]["batch_1_images_per_s"] > 0 and sections["analyze"]["batch_8_images_per_s"] > 0
    assert sections["index"]["images"] == 2 and sections["index"]["failed"] == 0  # 10 files, 8 of them the warm-up
    assert sections["index"]["images_per_s"] > 0 and sections["index"]["analysis_only_images_per_s"] > 0
    assert sections["device_vs_cpu"]["region_vector_max_diff"] == 0.0  # the "device" is the CPU itself
    groups = sections["group_captions"]
    assert groups["group_boxes"] >= 1 and groups["same_captions"] and groups["member_similarity_max_diff"] == 0.0
    table = (tmp_path / "report.md").read_text()
    assert "| train_captioner | yes |" in table and "gpu_rehearsal.py" in proc.stdout + table


def test_a_failing_section_is_reported_not_fatal(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_rehearsal

    args = gpu_rehearsal.get_args_parser().parse_args(["--device", "cpu", "--smoke", "--out", str(tmp_path)])
    rehearsal = gpu_rehearsal.Rehearsal(args)
    rehearsal.section("boom", 5, lambda: 1 / 0)
    rehearsal.section("fine", 5, lambda: {"value": 3})

    def slow():
        import time

        time.sleep(5)

    rehearsal.section("slow", 0.5, slow)
    sections = json.loads((tmp_path / "report.json").read_text())["sections"]
    assert not sections["boom"]["ok"] and "ZeroDivisionError" in sections["boom"]["error"]
    assert sections["fine"] == {"ok": True, "value": 3, "seconds": sections["fine"]["seconds"]}
    assert not sections["slow"]["ok"] and "time box" in sections["slow"]["error"]
