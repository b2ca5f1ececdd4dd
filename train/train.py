"""Train a RegionCaptioner on a data root in the Flickr30k Entities layout.

    python -m train.train --data ROOT --out DIR [--stages detector,alignment,captioner] [--epochs ...]
    torchrun --nproc_per_node 2 -m train.train --data ROOT --out DIR      # DistributedDataParallel

Stages run in order, each on its own parameters and losses:
  detector   the Faster R-CNN (loss_detector);
  alignment  region encoder + text encoder (loss_align: Karpathy's image-sentence ranking loss plus a
             phrase-region ranking loss); with --finetune-backbone the detector trains on as well
             (loss_detector + loss_align), so the shared features learn what the phrases talk about;
  captioner  the caption decoder on the (frozen) aligned region embeddings (loss_caption); with
             --captioner-trains-encoders the region and text encoders train on as well
             (loss_caption + loss_align), so what a caption has to say shapes the region vectors.
--init-from MODEL starts from a model folder's weights and vocabulary (fine-tuning); parts that the
new configuration adds (a texture branch) start fresh.
The last step calibrates the match threshold on ROOT's val split (regioncap.calibrate) and writes
calibration.json. DIR ends up a model folder (config.json, model.safetensors, vocab.json, README.md,
calibration.json, history.json, loss_curves.png: regioncap.hub.MODEL_FILES) with checkpoint.safetensors
beside the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from regioncap import hub
from regioncap.data.dataset import Flickr30kEntities
from regioncap.data.flickr30k import ENTITY_TYPES
from regioncap.data.loader import make_train_loader
from regioncap.data.transforms import build_transforms
from regioncap.data.vocab import Vocabulary
from regioncap.errors import RegionCapError, fail
from regioncap.fileio import write_json_atomic
from regioncap.models.config import (REGION_ENCODERS, CaptionerConfig, DetectorConfig, RegionCaptionerConfig,
                                     RegionEncoderConfig, TextEncoderConfig)
from regioncap.models.model import PARTS, RegionCaptioner
from train.engine import (CHECKPOINT_NAME, HISTORY_NAME, PLOT_NAME, NonFiniteLossError, StopTraining,
                          TrainState, load_checkpoint, plot_history, save_checkpoint, train_one_epoch)

STAGES = ("detector", "alignment", "captioner")
# Parts of the model each stage trains, and the losses it optimises.
STAGE_MODULES = {"detector": ("detector",), "alignment": ("region_encoder", "text_encoder"),
                 "captioner": ("captioner",)}
STAGE_LOSSES = {"detector": ("detector",), "alignment": ("align",), "captioner": ("caption",)}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a RegionCaptioner (detector, alignment, captioner).")
    p.add_argument("--data", required=True, help="data root in the Flickr30k Entities layout")
    p.add_argument("--out", required=True, help="output model folder (checkpoint and history beside it)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="real-data defaults (docs/training.md: 'Training on Flickr30k'); explicit flags override them")
    p.add_argument("--epochs", default=None,
                   help="one number for every stage, or per stage: detector=12,alignment=8,captioner=6 "
                        f"(default {DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images per batch (alignment, captioner; default {DEFAULTS['batch_size']})")
    p.add_argument("--detector-batch-size", type=int, default=None,
                   help=f"images per batch (detector; default {DEFAULTS['detector_batch_size']})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (alignment, captioner; default {DEFAULTS['lr']})")
    p.add_argument("--detector-lr", type=float, default=None,
                   help=f"Adam learning rate (detector; default {DEFAULTS['detector_lr']})")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--clip-grad", type=float, default=10.0, help="max gradient norm (0: off)")
    p.add_argument("--detector", default=None, choices=["small", "mobilenet_v3_large_fpn", "resnet50_fpn_v2"],
                   help="detector architecture (default small: trains from scratch)")
    p.add_argument("--pretrained-detector", action=argparse.BooleanOptionalAction, default=None,
                   help="start the detector from torchvision's COCO weights (downloaded once, or found in "
                        "$TORCH_HOME/hub/checkpoints/)")
    p.add_argument("--encoder", default="roi", choices=list(REGION_ENCODERS),
                   help="region encoder: roi (the detector's features), vgg19 (Fast R-CNN-style: VGG-19 "
                        "once per image + RoIAlign), vgg19-crops (the seed's: VGG-19 per box crop)")
    p.add_argument("--pretrained-encoder", action="store_true",
                   help="--encoder vgg19 or vgg19-crops: start from torchvision's ImageNet VGG-19 (downloaded "
                        "once, or found in $TORCH_HOME/hub/checkpoints/)")
    p.add_argument("--rnn", default="gru", choices=["gru", "lstm"], help="caption decoder cell")
    p.add_argument("--joint-dim", type=int, default=256)
    p.add_argument("--min-size", type=int, default=None, help="detector input min side (default: the arch's)")
    p.add_argument("--max-size", type=int, default=None, help="detector input max side (default: the arch's)")
    g = p.add_argument_group("detector settings (default: torchvision's for its COCO archs, toy values for "
                             "'small'; see DetectorConfig.for_arch)")
    for name in DETECTOR_FLAGS:
        kind = float if name.endswith("thresh") else int
        g.add_argument("--" + name.replace("_", "-"), type=kind, default=None, metavar="N" if kind is int else "X")
    p.add_argument("--finetune-backbone", action="store_true",
                   help="alignment stage also trains the detector (loss_detector + loss_align)")
    p.add_argument("--captioner-trains-encoders", action="store_true",
                   help="captioner stage also trains the region and text encoders (loss_caption + loss_align)")
    p.add_argument("--texture-dim", type=int, default=0, metavar="N",
                   help="--encoder roi: add a texture branch of N features on each box's own pixels (0: none)")
    p.add_argument("--texture-layout", type=int, default=0, metavar="G",
                   help="--texture-dim: the branch also keeps its responses on a GxG grid over the box (outlines)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from this model folder's weights and vocabulary; new parts start fresh")
    p.add_argument("--init-parts", default=",".join(PARTS), metavar="PARTS",
                   help=f"--init-from: which parts take its weights, comma-separated from {', '.join(PARTS)} "
                        "(default all; the others start fresh)")
    p.add_argument("--phrase-negatives", default="image", choices=["image", "batch"],
                   help="phrase-region ranking against the regions of the phrase's own image (grounding) "
                        "or of every image in the batch (also collection search)")
    p.add_argument("--concept-loss-weight", type=float, default=0.0, metavar="W",
                   help="add W x a word-prediction loss on the region vectors to the alignment loss (0: none)")
    p.add_argument("--concept-singulars", action="store_true",
                   help="--concept-loss-weight: a plural also asks its region for its singular ('stars' -> 'star')")
    p.add_argument("--align-reduction", default="sum", choices=["sum", "mean"],
                   help="ranking losses summed over the batch (the seed's) or averaged per positive pair")
    p.add_argument("--vocab-min-count", type=int, default=None,
                   help="words seen fewer times become <unk> (default 5, as NeuralTalk)")
    p.add_argument("--no-augment", action="store_true", help="turn training augmentation off")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes per process (default: min(4, CPUs per process on the node))")
    p.add_argument("--pin-memory", action=argparse.BooleanOptionalAction, default=None,
                   help="page-locked batches for faster host-to-GPU copies (default: on with CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (0: epoch ends only)")
    p.add_argument("--max-steps", type=int, default=0, help="stop each stage after this many steps (smoke tests)")
    p.add_argument("--stop-after", type=int, default=0,
                   help="checkpoint and exit once the current stage reaches this step (an interruption; "
                        "continue with --resume)")
    p.add_argument("--max-images", type=int, default=0, help="use only the first N training images")
    p.add_argument("--calibration-images", type=int, default=0, metavar="N",
                   help="the last step, the match threshold (calibration.json) on the val split: use at most N "
                        "of its images (default 0: all)")
    p.add_argument("--strict", action="store_true", help="stop before training on any malformed data file")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.safetensors")
    return p


# Settings a preset may change; None in the parser means "not given".
DEFAULTS = dict(detector="small", pretrained_detector=False, epochs="detector=10,alignment=10,captioner=10",
                batch_size=64, detector_batch_size=8, lr=1e-4, detector_lr=1e-3,
                weight_decay=0.0, warmup_steps=100, vocab_min_count=5, workers=None, pin_memory=None)
# Real data (Flickr30k Entities, ~500x375 photos, 29,783 training images). Sources in docs/training.md,
# "Training on Flickr30k".
PRESETS = {
    "flickr30k": dict(
        detector="mobilenet_v3_large_fpn", pretrained_detector=True,
        min_size=800, max_size=1333,
        rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, box_detections_per_img=100,
        detector_batch_size=2, detector_lr=1e-4, warmup_steps=1000,
        batch_size=64, lr=1e-4, epochs="detector=6,alignment=10,captioner=10",
        vocab_min_count=5, workers=4,  # pinned memory: on by default whenever the device is CUDA
    ),
}
DETECTOR_FLAGS = ("trainable_backbone_layers", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train",
                  "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_batch_size_per_image",
                  "rpn_score_thresh", "box_batch_size_per_image", "box_score_thresh", "box_detections_per_img")


def resolve_defaults(args) -> argparse.Namespace:
    """Fill every setting not given on the command line (None): from ``--preset`` if it has it, else
    DEFAULTS. A flag given explicitly always wins."""
    for key, value in PRESETS.get(args.preset or "", {}).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def parse_epochs(text: str, stages: list[str]) -> dict[str, int]:
    text = text.strip()
    if "=" not in text:
        return {s: int(text) for s in stages}
    epochs = {s: 0 for s in stages}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in STAGES:
            fail(f"unknown stage {name!r} in --epochs (known: {', '.join(STAGES)})")
        epochs[name.strip()] = int(value)
    return epochs


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Set up DistributedDataParallel when launched by torchrun; return (rank, world_size, device)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device(device)
    use_cuda = device.startswith("cuda") and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def build_config(args, vocab_size: int) -> RegionCaptionerConfig:
    overrides = {k: getattr(args, k) for k in ("min_size", "max_size", *DETECTOR_FLAGS)
                 if getattr(args, k, None) is not None}
    det = DetectorConfig.for_arch(args.detector, pretrained=args.pretrained_detector, **overrides)
    if det.max_size < det.min_size:  # --min-size 96 on a COCO arch: keep the arch's aspect limit
        det.max_size = det.min_size
    return RegionCaptionerConfig(
        vocab_size=vocab_size, entity_types=list(ENTITY_TYPES), joint_dim=args.joint_dim, detector=det,
        region_encoder=RegionEncoderConfig(kind=args.encoder, texture_dim=args.texture_dim,
                                           texture_layout=args.texture_layout,
                                           pretrained=args.encoder != "roi" and args.pretrained_encoder),
        text_encoder=TextEncoderConfig(),
        captioner=CaptionerConfig(rnn=args.rnn, detach_regions=not args.captioner_trains_encoders),
        align_reduction=args.align_reduction, phrase_negatives=args.phrase_negatives,
        concept_loss_weight=args.concept_loss_weight, concept_singulars=args.concept_singulars)


def build_vocab(dataset: Flickr30kEntities, min_count: int) -> Vocabulary:
    return Vocabulary.build(dataset.phrase_texts(), min_count=min_count)


def make_optimizer(model: RegionCaptioner, stage: str, args, steps: int):
    """Adam over the stage's trainable parameters (frozen layers and parts left out) + LR schedule."""
    names = STAGE_MODULES[stage] + (("detector",) if stage == "alignment" and args.finetune_backbone else ())
    if _joint_captioner(stage, model.config):
        names += STAGE_MODULES["alignment"]
    params = model.set_trainable(names)  # the other parts stay in eval mode, frozen layers stay frozen
    lr = args.detector_lr if stage == "detector" else args.lr
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=args.weight_decay)
    warmup = min(args.warmup_steps, max(1, steps // 10))

    def schedule(step: int) -> float:  # linear warm-up, then cosine down to a tenth
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, t)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def names_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (--stages, --init-parts)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _joint_captioner(stage: str, config: RegionCaptionerConfig) -> bool:
    """The captioner stage trains the encoders too (config ``captioner.detach_regions`` false)."""
    return stage == "captioner" and not config.captioner.detach_regions


def stage_losses(stage: str, args, config: RegionCaptionerConfig) -> tuple[str, ...]:
    if stage == "alignment" and args.finetune_backbone:
        return ("detector", "align")
    if _joint_captioner(stage, config):
        return ("align", "caption")
    return STAGE_LOSSES[stage]


def _fresh_module(key: str, missing: set[str], keys) -> str:
    """The shortest prefix of ``key`` under which every weight is in ``missing`` ("region_encoder.texture"
    for a new branch, "region_encoder.texture.layout_norm" when only that part of it is new)."""
    parts = key.split(".")
    for n in range(1, len(parts)):
        prefix = ".".join(parts[:n])
        if all(k in missing for k in keys if k.startswith(prefix + ".")):
            return prefix
    return key


def init_weights(model: RegionCaptioner, source: RegionCaptioner, name: str, parts: list[str]) -> None:
    """Copy ``source``'s weights of ``parts`` into ``model`` where names match; the rest stays fresh."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        fail(f"--init-parts: unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    state = {k: v for k, v in source.state_dict().items() if k.split(".")[0] in parts}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # same name, other shape: another architecture
        fail(f"--init-from {name}: its weights do not fit this configuration ({str(e).splitlines()[-1].strip()})")
    if unexpected:
        fail(f"--init-from {name}: weights this configuration has no place for, e.g. {unexpected[0]}")
    missing, keys = {k for k in missing if k.split(".")[0] in parts}, list(model.state_dict())
    new = sorted({_fresh_module(k, missing, keys) for k in missing})
    print(f"initialised from {name}" + (f"; new: {', '.join(new)}" if new else ""))


def main(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = resolve_defaults(args)
    stages = names_list(args.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        fail(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    stages = [s for s in STAGES if s in stages]  # always in pipeline order
    epochs = parse_epochs(args.epochs, stages)
    rank, world, device = init_distributed(args.device)
    is_main = rank == 0
    out = Path(args.out)
    ckpt_path = out / CHECKPOINT_NAME
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    try:
        dataset = Flickr30kEntities(args.data, "train", strict=args.strict)
    except (RegionCapError, OSError) as e:
        fail(e)
    if dataset.skipped and is_main:
        print(f"skipped {len(dataset.skipped)} malformed file(s); first: {dataset.skipped[0][0]}: "
              f"{dataset.skipped[0][1]}", file=sys.stderr)
    if len(dataset) == 0:
        fail(f"no training images in {args.data}/train.txt")

    state, history = None, []
    if args.resume and ckpt_path.exists():
        vocab = Vocabulary.load(out / "vocab.json")
        try:
            model_state, optim_state, sched_state, state, config_dict = load_checkpoint(ckpt_path)
            config = RegionCaptionerConfig.from_dict(config_dict)
        except RegionCapError as e:
            fail(e)
        if (out / HISTORY_NAME).exists():
            history = json.loads((out / HISTORY_NAME).read_text())["records"]
            history = [r for r in history if not (r["stage"] == state.stage and r["step"] > state.step)]
        if is_main:
            print(f"resuming stage {state.stage!r} at epoch {state.epoch + 1}, step {state.step}")
    else:
        if args.resume and is_main:
            print(f"no checkpoint at {ckpt_path}; starting from scratch")
        if args.init_from:
            try:
                source = RegionCaptioner.from_pretrained(args.init_from)
            except (RegionCapError, OSError) as e:
                fail(f"--init-from {args.init_from}: {e}")
            vocab = source.vocab
        else:
            vocab = build_vocab(dataset, args.vocab_min_count)
        config = build_config(args, len(vocab))
        try:
            config.validate()
        except ValueError as e:  # options that do not go together (--texture-layout without --texture-dim)
            fail(f"these options do not go together: {e}")
    dataset.vocab = vocab
    if not args.no_augment:
        dataset.transforms = build_transforms(train=True)
    if args.max_images:
        dataset = torch.utils.data.Subset(dataset, range(min(args.max_images, len(dataset))))

    # A resumed run takes every weight from the checkpoint: never re-download COCO weights for it.
    model = RegionCaptioner(config, vocab, download=False if state is not None else None).to(device)
    if state is not None:
        model.load_state_dict(model_state, strict=True)
    elif args.init_from:
        init_weights(model, source.to(device), args.init_from, names_list(args.init_parts))
        del source
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        vocab.save(out / hub.VOCAB_FILE)
        hub.save_config(config, out / hub.CONFIG_FILE)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{len(dataset)} training images, vocabulary {len(vocab)}, {n_params / 1e6:.2f}M parameters, "
              f"device {device}, {world} process(es)")

    t_start = time.perf_counter()
    for stage in stages:
        if state is not None and stage in state.done_stages:
            continue
        resuming = state is not None and state.stage == stage
        if not resuming:
            state = TrainState(stage=stage, done_stages=state.done_stages if state else [])
        bs = args.detector_batch_size if stage == "detector" else args.batch_size
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        loader = make_train_loader(dataset, bs, sampler, args.workers, device, args.pin_memory)
        total_steps = epochs[stage] * len(loader)
        if args.max_steps:
            total_steps = min(total_steps, args.max_steps)
        optimizer, scheduler = make_optimizer(model, stage, args, total_steps)
        if resuming and optim_state is not None:
            optimizer.load_state_dict(optim_state)
            scheduler.load_state_dict(sched_state)
            optim_state = None
        train_model = model
        if world > 1:
            train_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)

        def checkpoint(optimizer=optimizer, scheduler=scheduler, state=state):
            if is_main:
                save_checkpoint(ckpt_path, model, optimizer, scheduler, state, config.to_dict())
                write_json_atomic(out / HISTORY_NAME, {"records": history}, indent=1)

        losses = stage_losses(stage, args, config)
        try:
            while state.epoch < epochs[stage] and not (args.max_steps and state.step >= args.max_steps):
                sampler.set_epoch(state.epoch)
                loader.batch_sampler.skip = state.batch_in_epoch  # a resumed epoch loads no skipped batch
                train_one_epoch(train_model, optimizer, loader, scheduler=scheduler, losses=losses,
                                device=device, state=state, history=history, args=args,
                                on_checkpoint=checkpoint, is_main=is_main)
                if not (args.max_steps and state.step >= args.max_steps):
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                checkpoint()
        except NonFiniteLossError as e:
            fail(e)
        except StopTraining as e:
            if is_main:
                print(f"{e}; continue with --resume")
            return 0
        state.done_stages = state.done_stages + [stage]
        checkpoint()
        if is_main:
            plot_history(history, out / PLOT_NAME)
            _save_model(model, out, history, args, time.perf_counter() - t_start)
    if world > 1:
        dist.destroy_process_group()
    if is_main:
        calibrate_model(model, out, args)
        print(f"done in {time.perf_counter() - t_start:.0f}s; model in {out}")
    return 0


def calibrate_model(model: RegionCaptioner, out: Path, args) -> None:
    """The last step of training: the match threshold on the val split of ``--data``, written as
    OUT/calibration.json (regioncap.calibrate). Without val phrases to measure on it says so and how to
    calibrate later; an earlier run's calibration.json (one regioncap wrote) is removed, since it belongs
    to other weights, and ``train.publish`` refuses the folder until it is calibrated."""
    from regioncap import calibrate

    try:
        result = calibrate.calibrate(model, args.data, "val", args.calibration_images or None)
    except (RegionCapError, OSError, ValueError) as e:
        if calibrate.written_by_us(out):
            (out / hub.CALIBRATION_FILE).unlink()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"not calibrated: the val split of {args.data} gave nothing to measure on ({first}); calibrate on "
              f"held-out data before publishing: {calibrate.command(out)}", file=sys.stderr)
        return
    path = calibrate.write_calibration(out, result)
    print(f"match threshold {result['match_threshold']} (TPR {result['tpr']}, FPR {result['fpr']}, "
          f"{result['positives']} val phrases) -> {path}")


def _save_model(model: RegionCaptioner, out: Path, history: list[dict], args, seconds: float) -> None:
    """Write the model folder (weights, config, vocab, model card) from the current weights."""
    training = {"data": str(args.data), "stages": args.stages, "epochs": args.epochs,
                "seconds": round(seconds), "command": " ".join(["python -m train.train"] + sys.argv[1:])}
    model.save_pretrained(out, training=training)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
