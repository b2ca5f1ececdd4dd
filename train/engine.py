"""One epoch of training, checkpoints and the loss history (torchvision references/detection style)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from regioncap.errors import ModelFileError
from regioncap.fileio import atomic_path
from regioncap.hub import HISTORY_FILE as HISTORY_NAME, PLOT_FILE as PLOT_NAME  # noqa: F401 (a model folder's files)

CHECKPOINT_NAME = "checkpoint.safetensors"


class StopTraining(Exception):
    """Raised after the checkpoint when --stop-after is reached (an interruption that --resume continues)."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite: training stops rather than write garbage."""


@dataclass
class TrainState:
    """Where training is: which stage, epoch and step (steps are counted within the stage)."""

    stage: str
    epoch: int = 0
    step: int = 0  # optimisation steps done in this stage
    batch_in_epoch: int = 0  # batches of `epoch` already done (resume skips them)
    done_stages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def move_batch(batch, device: torch.device):
    """Move a collated (images, targets, text) batch to `device`."""
    images, targets, text = batch
    images = [im.to(device, non_blocking=True) for im in images]
    # Tensors only: the per-image phrase lists stay behind, the model reads phrases from `text`.
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    text = {k: v.to(device) for k, v in text.items()}
    return images, targets, text


def reduce_loss_dict(loss_dict: dict[str, torch.Tensor]) -> dict[str, float]:
    """The losses averaged over all ranks (torchvision references' ``reduce_dict``), as floats.

    Every rank gets the same values, so a NaN on one rank is a NaN on all of them and they all stop at
    the same step, instead of one leaving while the others wait in the gradient all-reduce.
    """
    names = sorted(loss_dict)
    if not names:
        return {}
    values = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return dict(zip(names, values.tolist()))


def train_one_epoch(model, optimizer, loader, *, losses, device, state: TrainState, history, args,
                    on_checkpoint, is_main: bool = True, scheduler=None) -> None:
    """Train `model` for one epoch over `loader` on the named `losses`; `scheduler` steps after every
    optimizer step.

    Skips the first `state.batch_in_epoch` batches (a resumed run continues at the same step),
    logs a one-line summary every `args.log_every` steps, checkpoints every `args.checkpoint_every`
    steps through `on_checkpoint()`, and raises NonFiniteLossError on a NaN/inf loss.
    """
    model.train()
    use_amp = device.type == "cuda" and args.amp
    skip = state.batch_in_epoch
    total = len(loader)
    bar = tqdm(total=total, initial=skip, desc=f"{state.stage} epoch {state.epoch + 1}", disable=not is_main,
               dynamic_ncols=True, leave=False)
    window: dict[str, list[float]] = {}
    t_last = time.perf_counter()
    for i, batch in enumerate(loader):
        if i < skip:
            continue
        images, targets, text = move_batch(batch, device)
        # Seed every step from its number, so a resumed run draws the same dropout masks as an uninterrupted one.
        torch.manual_seed(args.seed * 1_000_003 + state.step)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss_dict = model(images, targets, text, losses=losses)
        loss = sum(loss_dict.values())
        values = reduce_loss_dict(loss_dict)  # the same on every rank
        if not all(math.isfinite(v) for v in values.values()):
            raise NonFiniteLossError(
                f"non-finite loss in stage {state.stage!r} at step {state.step + 1}: "
                + ", ".join(f"{k}={v}" for k, v in values.items())
                + " — stopping; the last checkpoint is intact (lower --lr or check the data)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], args.clip_grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state.step += 1
        state.batch_in_epoch = i + 1
        for k, v in values.items():
            window.setdefault(k, []).append(v)
        bar.update(1)
        bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in values.items()})
        last = i + 1 == total
        if state.step % args.log_every == 0 or last:
            now = time.perf_counter()
            n = len(next(iter(window.values())))
            record = {"stage": state.stage, "epoch": state.epoch + 1, "step": state.step,
                      **{k: sum(v) / len(v) for k, v in window.items()},
                      "lr": optimizer.param_groups[0]["lr"], "ms_per_step": 1000 * (now - t_last) / n}
            history.append(record)
            if is_main:
                tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            window, t_last = {}, now
        if args.max_steps and state.step >= args.max_steps:
            break
        if args.stop_after and state.step >= args.stop_after:
            on_checkpoint()
            raise StopTraining(f"stopped at step {state.step} of stage {state.stage!r} (--stop-after)")
        if args.checkpoint_every and state.step % args.checkpoint_every == 0 and not last:
            on_checkpoint()
    bar.close()


# ----------------------------------------------------------------------------- checkpoints

def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able metadata."""
    tensors, scalars = {}, {}
    for pid, st in opt_state["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, state: TrainState,
                    config: dict) -> None:
    """Write {model, optimizer, scheduler, stage/epoch/step, config} to one safetensors file, atomically.

    The file is written beside its destination and moved into place with os.replace, so a
    crash or a kill at any moment leaves either the old checkpoint or the new one, never half of one.
    """
    tensors = {f"model.{k}": v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    metadata = {
        "state": json.dumps(state.to_dict()),
        "optimizer": json.dumps(opt_meta),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None),
        "config": json.dumps(config),
        "format": "regioncap-checkpoint-1",
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint(path: Path) -> tuple[dict, dict, dict | None, TrainState, dict]:
    """Read a checkpoint written by save_checkpoint -> (model_state, optimizer_state, scheduler, state, config)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"cannot read checkpoint {path}: {e}") from None
    if metadata.get("format") != "regioncap-checkpoint-1":
        raise ModelFileError(f"{path} is not a regioncap checkpoint")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim_state = _unflatten_optimizer(tensors, json.loads(metadata["optimizer"]))
    state = TrainState(**json.loads(metadata["state"]))
    return model_state, optim_state, json.loads(metadata["scheduler"]), state, json.loads(metadata["config"])


def plot_history(records: list[dict], path: Path) -> None:
    """Plot every loss of every stage against its step into one PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r["stage"] for r in records))
    if not stages:
        return
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [r for r in records if r["stage"] == stage]
        for key in sorted({k for r in rows for k in r if k.startswith("loss_")}):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key.removeprefix("loss_"))
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
