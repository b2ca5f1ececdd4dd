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


def test_non_finite_loss_stops_with_a_clear_message(data, tmp_path, monkeypatch, capsys):
    from regioncap.models.model import RegionCaptioner

    real_forward = RegionCaptioner.forward

    def nan_forward(self, *a, **k):
        losses = real_forward(self, *a, **k)
        return {name: value * float("nan") for name, value in losses.items()}

    monkeypatch.setattr(RegionCaptioner, "forward", nan_forward)
    with pytest.raises(SystemExit) as exc:
        run(data, tmp_path / "nan", "--stages", "alignment", "--epochs", "1")
    assert exc.value.code == 2 and "non-finite loss" in capsys.readouterr().err


def test_unknown_stage_is_refused(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run(data, tmp_path / "x", "--stages", "detector,decoder")
    assert exc.value.code == 2 and "error: unknown stage" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [(["--concept-singulars"], "concept_loss_weight > 0"),
                                              (["--texture-layout", "4"], "without texture_dim")])
def test_options_that_do_not_go_together_are_refused(data, tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exc:
        run(data, tmp_path / "x", "--stages", "captioner", "--epochs", "1", *options)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "these options do not go together" in err and message in err
    assert not (tmp_path / "x").exists()  # refused before anything is written


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


# -- COCO / ImageNet checkpoints found offline in $TORCH_HOME (DESIGN §6) ------------------------------
def _fake_coco_checkpoint(torch_home: Path) -> dict:
    """A random checkpoint with the real keys and file name of torchvision's COCO mobilenet detector."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    from regioncap.models.detector import COCO_CHECKPOINTS, _freeze_batchnorm

    torch.manual_seed(5)
    coco = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=91)
    _freeze_batchnorm(coco.backbone)  # the COCO model uses FrozenBatchNorm2d: no num_batches_tracked
    state = coco.state_dict()  # torchvision's random initialisation, with batch-norm statistics of some data
    state.update({k: torch.randn_like(v) * 0.1 for k, v in state.items() if k.endswith("running_mean")})
    state.update({k: torch.rand_like(v) * 0.5 + 0.75 for k, v in state.items() if k.endswith("running_var")})
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / COCO_CHECKPOINTS["mobilenet_v3_large_fpn"])
    return state


def test_pretrained_detector_keeps_the_frozen_coco_layers_bit_identical(data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from regioncap import RegionCaptioner

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    coco = _fake_coco_checkpoint(tmp_path / "torch")
    out = tmp_path / "coco"
    run(data, out, "--detector", "mobilenet_v3_large_fpn", "--pretrained-detector", "--stages", "detector",
        "--epochs", "1", "--max-steps", "2", "--rpn-post-nms-top-n-train", "300")
    trained = load_file(out / "model.safetensors")
    frozen = RegionCaptioner.from_pretrained(out).detector.frozen
    assert "backbone.body.0.0.weight" in frozen and len(frozen) > 20
    same = {k for k, v in coco.items() if "box_predictor" not in k and torch.equal(trained[f"detector.{k}"], v)}
    assert frozen <= same  # every layer torchvision freezes is the checkpoint's, bit for bit
    assert not {n for n in frozen if "weight" in n} - same
    changed = {k for k in coco if "box_predictor" not in k and k not in same}
    assert "backbone.fpn.inner_blocks.0.0.weight" in changed and "rpn.head.conv.0.0.weight" in changed
    assert any(k.startswith("backbone.body.16.") for k in changed)  # the trainable backbone stages train


def test_pretrained_vgg19_encoder_is_found_and_loaded(tmp_path, monkeypatch, vocab):
    from torchvision.models import vgg19

    from regioncap.models.model import RegionCaptioner
    from tests.conftest import tiny_config

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(3)
    # Random feature weights; the 400 MB classifier as stride-0 views (a few bytes on disk).
    state = {k: (torch.randn_like(v) if k.startswith("features.") else torch.zeros(()).expand(v.shape))
             for k, v in vgg19(weights=None).state_dict().items()}
    torch.save(state, folder / "vgg19-dcbb9e9d.pth")
    model = RegionCaptioner(tiny_config(len(vocab), region_encoder={"kind": "vgg19", "pretrained": True}), vocab)
    params = list(model.region_encoder.parameters())
    for key in ("features.0.weight", "features.34.weight"):
        assert any(p.shape == state[key].shape and torch.equal(p, state[key]) for p in params), key


# -- detector settings per architecture, presets -----------------------------------------------------
def test_detector_defaults_per_arch_and_flags_override_them():
    from train.train import build_config, resolve_defaults

    def config(*argv):
        args = resolve_defaults(get_args_parser().parse_args(["--data", "d", "--out", "o", *argv]))
        return build_config(args, 10).detector

    small = config()
    assert (small.rpn_pre_nms_top_n_train, small.rpn_post_nms_top_n_test, small.box_detections_per_img) == (
        600, 150, 50)
    mob = config("--detector", "mobilenet_v3_large_fpn")
    assert (mob.rpn_pre_nms_top_n_train, mob.rpn_post_nms_top_n_train, mob.rpn_pre_nms_top_n_test,
            mob.rpn_post_nms_top_n_test, mob.box_detections_per_img, mob.rpn_score_thresh,
            mob.min_size, mob.max_size) == (2000, 2000, 1000, 1000, 100, 0.05, 800, 1333)
    assert config("--detector", "resnet50_fpn_v2").rpn_score_thresh == 0.0
    tuned = config("--detector", "mobilenet_v3_large_fpn", "--rpn-post-nms-top-n-test", "300",
                   "--box-detections-per-img", "36", "--trainable-backbone-layers", "5", "--min-size", "96")
    assert (tuned.rpn_post_nms_top_n_test, tuned.box_detections_per_img, tuned.trainable_backbone_layers,
            tuned.min_size, tuned.max_size) == (300, 36, 5, 96, 1333)


def test_a_built_detector_uses_torchvisions_values():
    from regioncap.models.config import DetectorConfig
    from regioncap.models.detector import RegionDetector

    det = RegionDetector(DetectorConfig.for_arch("mobilenet_v3_large_fpn"), num_classes=9)
    assert det.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert det.rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    assert det.rpn.score_thresh == 0.05 and det.roi_heads.detections_per_img == 100


def test_flickr30k_preset_and_explicit_flags_win():
    from train.train import DEFAULTS, PRESETS, resolve_defaults

    def args(*argv):
        return resolve_defaults(get_args_parser().parse_args(["--data", "d", "--out", "o", *argv]))

    plain = args()
    assert all(getattr(plain, k) == v for k, v in DEFAULTS.items())
    preset = args("--preset", "flickr30k")
    assert all(getattr(preset, k) == v for k, v in PRESETS["flickr30k"].items())
    assert preset.vocab_min_count == 5 and preset.detector == "mobilenet_v3_large_fpn" and preset.pretrained_detector
    mine = args("--preset", "flickr30k", "--workers", "2", "--vocab-min-count", "1", "--detector", "small",
                "--no-pretrained-detector", "--no-pin-memory", "--epochs", "1")
    assert (mine.workers, mine.vocab_min_count, mine.detector, mine.pretrained_detector, mine.pin_memory,
            mine.epochs) == (2, 1, "small", False, False, "1")
    assert mine.batch_size == PRESETS["flickr30k"]["batch_size"]


# -- frozen parts during the stages ------------------------------------------------------------------
def test_frozen_parts_stay_in_eval_mode_and_out_of_the_optimizer(tiny_model):
    from train.train import make_optimizer, resolve_defaults

    args = resolve_defaults(get_args_parser().parse_args(["--data", "d", "--out", "o"]))
    for stage, trained in (("alignment", {"region_encoder", "text_encoder"}), ("captioner", {"captioner"})):
        optimizer, _ = make_optimizer(tiny_model, stage, args, steps=10)
        tiny_model.train()
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for part in ("detector", "region_encoder", "text_encoder", "captioner"):
            module = getattr(tiny_model, part)
            assert all(m.training == (part in trained) for m in module.modules()), (stage, part)
            assert all((id(p) in in_optimizer) == p.requires_grad == (part in trained) for p in module.parameters())


# -- DistributedDataParallel -------------------------------------------------------------------------
NAN_ON_RANK_1 = '''
import os, sys
from regioncap.models.model import RegionCaptioner
real = RegionCaptioner.forward
def forward(self, *a, **k):
    losses = real(self, *a, **k)
    return {n: v * float("nan") for n, v in losses.items()} if os.environ["RANK"] == "1" else losses
RegionCaptioner.forward = forward
from train.train import get_args_parser, main
sys.exit(main(get_args_parser().parse_args()))
'''


def test_torchrun_a_nan_on_one_rank_stops_every_rank_with_the_same_message(data, tmp_path):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
           str(script), "--data", str(data), "--out", str(tmp_path / "nan"), *TINY, "--stages", "alignment",
           "--epochs", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    message = "error: non-finite loss in stage 'alignment' at step 1: loss_align=nan"
    assert proc.stderr.count(message) == 2, proc.stderr[-3000:]  # both ranks, the same words


def test_init_from_a_model_then_captioner_trains_the_encoders(data, tmp_path, capsys):
    """--init-from copies the named parts (the rest start fresh, a texture branch included);
    --captioner-trains-encoders makes the captioner stage train the region and text encoders too."""
    from regioncap import RegionCaptioner

    source_dir = tmp_path / "source"
    run(data, source_dir, "--epochs", "1", "--max-steps", "1")
    source = RegionCaptioner.from_pretrained(source_dir).state_dict()
    out = tmp_path / "tuned"
    run(data, out, "--stages", "captioner", "--epochs", "1", "--max-steps", "2", "--init-from", str(source_dir),
        "--init-parts", "detector,region_encoder", "--texture-dim", "8", "--captioner-trains-encoders",
        "--concept-loss-weight", "1", "--concept-singulars", "--phrase-negatives", "batch")
    assert "; new: region_encoder.texture\n" in capsys.readouterr().out  # the branch, not its every layer
    tuned = RegionCaptioner.from_pretrained(out)
    cfg = tuned.config
    assert (cfg.region_encoder.texture_dim, cfg.captioner.detach_regions) == (8, False)
    assert (cfg.concept_loss_weight, cfg.concept_singulars, cfg.phrase_negatives) == (1.0, True, "batch")
    state = tuned.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source.items() if k.startswith("detector."))  # not trained
    changed = [k for k, v in source.items() if k.startswith("region_encoder.") and not torch.equal(state[k], v)]
    assert changed  # the captioner stage trained the region encoder
    assert not torch.equal(state["captioner.embed.weight"], source["captioner.embed.weight"])  # --init-parts: fresh


def test_init_from_refuses_a_model_of_another_shape(data, tmp_path, capsys):
    source_dir = tmp_path / "source"
    run(data, source_dir, "--stages", "detector", "--epochs", "1", "--max-steps", "1")
    with pytest.raises(SystemExit):
        run(data, tmp_path / "other", "--stages", "alignment", "--max-steps", "1", "--joint-dim", "32",
            "--init-from", str(source_dir))
    assert "do not fit this configuration" in capsys.readouterr().err


def test_fresh_module_names_the_largest_part_that_is_all_new():
    from train.train import _fresh_module

    keys = ["region_encoder.texture.convs.0.weight", "region_encoder.texture.layout_norm.weight",
            "region_encoder.texture.layout_norm.bias", "region_encoder.project.1.weight"]
    only_layout = {"region_encoder.texture.layout_norm.weight", "region_encoder.texture.layout_norm.bias"}
    assert {_fresh_module(k, only_layout, keys) for k in only_layout} == {"region_encoder.texture.layout_norm"}
    branch = only_layout | {"region_encoder.texture.convs.0.weight"}
    assert {_fresh_module(k, branch, keys) for k in branch} == {"region_encoder.texture"}
