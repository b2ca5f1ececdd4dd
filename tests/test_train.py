"""train.train end to end on a tiny synthetic set: checkpoints, resume, history, torchrun, bad losses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from regioncap.data.synthetic import generate
from train import engine
from train.train import get_args_parser, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--min-size", "96", "--max-size", "128", "--batch-size", "4", "--detector-batch-size", "2",
        "--workers", "0", "--log-every", "1", "--no-augment", "--vocab-min-count", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, images=10, seed=11)
    return root


def run(data, out, *extra):
    args = get_args_parser().parse_args(["--data", str(data), "--out", str(out), *TINY, *extra])
    return main(args)


def test_all_stages_write_a_loadable_model_and_history(data, tmp_path):
    out = tmp_path / "m"
    run(data, out, "--epochs", "1", "--max-steps", "2")
    for name in ("config.json", "model.safetensors", "vocab.json", "README.md", engine.CHECKPOINT_NAME,
                 engine.HISTORY_NAME, engine.PLOT_NAME):
        assert (out / name).is_file(), name
    records = json.loads((out / engine.HISTORY_NAME).read_text())["records"]
    assert {r["stage"] for r in records} == {"detector", "alignment", "captioner"}
    assert all(r["ms_per_step"] > 0 for r in records)
    from regioncap import RegionCaptioner

    model = RegionCaptioner.from_pretrained(out)
    state = engine.load_checkpoint(out / engine.CHECKPOINT_NAME)
    assert state[3].done_stages == ["detector", "alignment", "captioner"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[0][k]), k


def test_resume_continues_at_the_same_step(data, tmp_path):
    # One uninterrupted run versus the same run interrupted at step 3 and resumed: same step, same weights.
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--stages", "alignment", "--epochs", "3", "--batch-size", "4", "--checkpoint-every", "1"]
    run(data, full, *common)
    state_full = engine.load_checkpoint(full / engine.CHECKPOINT_NAME)
    run(data, part, *common, "--stop-after", "3")
    mid = engine.load_checkpoint(part / engine.CHECKPOINT_NAME)[3]
    assert mid.step == 3 and mid.done_stages == []
    run(data, part, *common, "--resume")
    state_part = engine.load_checkpoint(part / engine.CHECKPOINT_NAME)
    assert state_part[3].step == state_full[3].step == 6  # 8 images / 4 per batch x 3 epochs
    for k, v in state_full[0].items():
        torch.testing.assert_close(state_part[0][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_non_finite_loss_stops_with_a_clear_message(data, tmp_path, monkeypatch):
    from regioncap.models.model import RegionCaptioner

    real_forward = RegionCaptioner.forward

    def nan_forward(self, *a, **k):
        losses = real_forward(self, *a, **k)
        return {name: value * float("nan") for name, value in losses.items()}

    monkeypatch.setattr(RegionCaptioner, "forward", nan_forward)
    with pytest.raises(SystemExit, match="non-finite loss"):
        run(data, tmp_path / "nan", "--stages", "alignment", "--epochs", "1")


def test_unknown_stage_is_refused(data, tmp_path):
    with pytest.raises(SystemExit, match="unknown stage"):
        run(data, tmp_path / "x", "--stages", "detector,decoder")


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("RANK", None)
    return env


def test_torchrun_two_processes_on_cpu(data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "train.train", "--data", str(data), "--out", str(out), *TINY, "--stages", "alignment",
           "--epochs", "1", "--max-steps", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    state = engine.load_checkpoint(out / engine.CHECKPOINT_NAME)[3]
    assert state.step == 1  # 8 train images / (4 per batch x 2 ranks) = 1 step per epoch


def test_sigkill_leaves_a_loadable_checkpoint_and_resume_finishes(data, tmp_path):
    out = tmp_path / "kill"
    cmd = [sys.executable, "-m", "train.train", "--data", str(data), "--out", str(out), *TINY,
           "--stages", "alignment", "--epochs", "200", "--batch-size", "2", "--checkpoint-every", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / engine.CHECKPOINT_NAME
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and engine.load_checkpoint(ckpt)[3].step >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = engine.load_checkpoint(ckpt)[3]  # loads: the file is whole
    assert 3 <= state.step < 200 * 4
    done = subprocess.run([*cmd[:-6], "--stages", "alignment", "--epochs", str(state.epoch + 1),
                           "--batch-size", "2", "--resume"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming stage 'alignment'" in done.stdout
    final = engine.load_checkpoint(ckpt)[3]
    assert final.done_stages == ["alignment"] and final.step >= state.step
