"""Write a model folder's model card and upload the model to the Hugging Face Hub.

    python -m train.publish --model DIR --repo-id USER/NAME [--private] [--metrics JSON] [--token T] [--dry-run]

1. Checks DIR: config.json, model.safetensors and vocab.json present and valid, no pickle file
   anywhere in it (refused: exit 2 with a one-line message, nothing uploaded).
2. (Re)writes DIR/README.md with ``regioncap.hub.write_model_card``: Hub metadata (with the training
   datasets), architecture from config.json, the training facts recorded in the previous card, the
   metrics of the last evaluation (``--metrics`` or DIR/eval.json, as written by
   ``python -m train.evaluate --json``), intended use and limitations.
3. Creates the repo if needed (``HfApi.create_repo(exist_ok=True)``) and uploads exactly
   config.json, model.safetensors, vocab.json and README.md in one commit.

The token comes from --token, else huggingface_hub's usual sources (HF_TOKEN, ``hf auth login``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from regioncap import hub
from regioncap.card import card_sections, section_items
from regioncap.errors import RegionCapError, fail

UPLOAD_FILES = (hub.CONFIG_FILE, hub.WEIGHTS_FILE, hub.VOCAB_FILE, hub.CARD_FILE)
EVAL_FILE = "eval.json"
# Card order of the evaluation's keys (train.evaluate); the counts follow the scores.
METRIC_KEYS = ("det_ap50", "grounding_acc", "grounding_acc_any", "bleu1", "bleu2", "bleu3", "bleu4",
               "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
               "num_images", "num_sentences", "num_phrases", "num_regions_captioned")
def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write the model card and upload a model folder to the Hugging Face Hub.")
    p.add_argument("--model", required=True, help="model folder (config.json, model.safetensors, vocab.json)")
    p.add_argument("--repo-id", required=True, help="Hub repo, USER/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--metrics", default=None, metavar="JSON",
                   help=f"evaluation JSON from train.evaluate (default: DIR/{EVAL_FILE} if present)")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--dataset", action="append", default=None, metavar="ID",
                   help="training data set for the card's metadata (repeatable; default: guessed from the "
                        "recorded training data: synthetic-scenes or flickr30k-entities)")
    p.add_argument("--commit-message", default="Upload regioncap model")
    p.add_argument("--dry-run", action="store_true", help="write the card and list the files; upload nothing")
    return p


def check_publishable(directory: Path):
    """Refuse a missing folder, one holding pickle files anywhere, or one that does not load -> its config.

    The load is exactly the users' (``RegionCaptioner.from_pretrained``: hub.check_model_dir's files,
    strict config, vocabulary and weights), so a folder that would fail for them is never published.
    Stricter than loading, which only ignores a stray pickle file: a published repo holds none.
    """
    if not directory.is_dir():
        raise RegionCapError(f"{directory}: no such model folder")
    pickled = sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                     if p.is_file() and p.suffix.lower() in hub.PICKLE_SUFFIXES)
    if pickled:
        raise RegionCapError(f"{directory}: holds pickle-format file(s) {', '.join(pickled)}; refusing to publish "
                             "a folder with pickle files (remove them; regioncap uses model.safetensors)")
    from regioncap.models.model import RegionCaptioner

    return RegionCaptioner.from_pretrained(directory).config


def read_metrics(path: Path) -> dict:
    """The evaluation JSON -> ordered card metrics (scores, counts, then where it was measured)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegionCapError(f"{path}: not a readable metrics JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RegionCapError(f"{path}: metrics JSON must be an object")
    metrics = {k: data[k] for k in METRIC_KEYS if isinstance(data.get(k), (int, float))}
    if not metrics:
        raise RegionCapError(f"{path}: no metrics of train.evaluate in it ({', '.join(METRIC_KEYS[:3])}, ...)")
    if data.get("data"):
        metrics["evaluated on"] = f"{data['data']}, split {data.get('split', '?')}"
    return metrics


def recorded_training(card: Path) -> dict | None:
    """The "Training data" bullets (``- **key**: value``) of an existing card, to keep them on rewrite."""
    if not card.is_file():
        return None
    section = card_sections(card.read_text(encoding="utf-8", errors="replace")).get("Training data")
    return (section_items(section) or None) if section else None


def _default_datasets(training: dict | None, metrics: dict | None) -> list[str]:
    described = " ".join(str(v) for v in (training or {}).values()) + str((metrics or {}).get("evaluated on", ""))
    return ["synthetic-scenes"] if "synth" in described.lower() else ["flickr30k-entities"]


def main(args, api=None) -> int:
    """Check, write the card, upload. ``api``: an ``HfApi``-like client (tests pass a fake)."""
    directory = Path(args.model)
    try:
        try:
            hub.check_repo_id(args.repo_id)
        except RegionCapError as exc:
            raise RegionCapError(f"--repo-id {exc}") from None
        config = check_publishable(directory)
        metrics_path = Path(args.metrics) if args.metrics else directory / EVAL_FILE
        if args.metrics and not metrics_path.is_file():
            raise RegionCapError(f"{metrics_path}: no such metrics file")
        metrics = read_metrics(metrics_path) if metrics_path.is_file() else None
    except RegionCapError as exc:
        fail(exc)
    training = recorded_training(directory / hub.CARD_FILE)
    datasets = args.dataset or _default_datasets(training, metrics)
    hub.write_model_card(directory, config, metrics=metrics, training=training, datasets=datasets)
    print(f"wrote {directory / hub.CARD_FILE}; datasets: {', '.join(datasets)}"
          + ("" if args.dataset else " (guessed; set with --dataset)")
          + ("" if metrics else f"; no metrics (run train.evaluate --json {directory / EVAL_FILE} to add them)"))
    if args.dry_run:
        print("would upload: " + ", ".join(UPLOAD_FILES))
        return 0
    from huggingface_hub import CommitOperationAdd, HfApi

    api = api if api is not None else HfApi(token=args.token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(directory / name)) for name in UPLOAD_FILES]
    try:
        url = api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        api.create_commit(args.repo_id, operations, commit_message=args.commit_message, repo_type="model")
    except Exception as exc:  # auth, network, a bad repo id: all reported in one line
        first = (str(exc).strip().splitlines() or [""])[0]
        fail(f"upload to {args.repo_id} failed: {type(exc).__name__}: {first}")
    print(f"uploaded {', '.join(UPLOAD_FILES)} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
