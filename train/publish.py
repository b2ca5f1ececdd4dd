"""Publish a model folder to the Hugging Face Hub, or deploy the app as a Gradio Space.

    python -m train.publish --model DIR --repo-id USER/NAME [--private] [--metrics JSON] [--token T] [--dry-run]
    python -m train.publish --space USER/NAME [--model REPO_OR_DIR] [--token T] [--dry-run]

A model (``--repo-id``):

1. Checks DIR: it loads exactly as users load it (config.json, model.safetensors, vocab.json valid),
   holds no pickle file anywhere, and is calibrated (calibration.json, the match threshold: written by
   the last step of ``train.train`` or by ``python -m regioncap.calibrate ... --write``). Refused: exit 2
   with a one-line message, nothing written or uploaded.
2. (Re)writes DIR/README.md with ``regioncap.hub.write_model_card``: Hub metadata (with the training
   datasets), architecture from config.json, the training facts recorded in the previous card, the
   metrics of the last evaluation (``--metrics`` or DIR/eval.json, as written by
   ``python -m train.evaluate --json``), intended use and limitations.
3. Creates the repo if needed (``HfApi.create_repo(exist_ok=True)``) and uploads the folder's files of
   ``regioncap.hub.MODEL_FILES`` (weights, config, vocabulary, card, calibration, evaluation, training
   history and curves: whichever it has) in one commit.

A Space (``--space``): creates a Gradio Space if needed and uploads the app (app.py, appui/, regioncap/,
requirements.txt, packages.txt, README.md with its Spaces front matter, LICENSE, the example images) in
one commit; large files go to the Hub's LFS storage by themselves. Without ``--model`` the bundled demo
model goes with it; with a Hub repo id the Space variable ``REGIONCAP_MODEL`` names it; with a local
model folder (checked as above) its files go to ``model/`` in the Space and the variable names that.
``--dry-run`` prints the paths one a line and the variables as ``KEY=VALUE``, and touches nothing.

The token comes from --token, else huggingface_hub's usual sources (HF_TOKEN, ``hf auth login``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from regioncap import calibrate, hub
from regioncap.card import card_sections, section_items
from regioncap.errors import RegionCapError, fail

ROOT = Path(__file__).resolve().parents[1]  # the repository: what a Space deploys
EVAL_FILE = hub.EVAL_FILE
# Card order of the evaluation's keys (train.evaluate); the counts follow the scores.
METRIC_KEYS = ("det_ap50", "grounding_acc", "grounding_acc_any", "bleu1", "bleu2", "bleu3", "bleu4",
               "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
               "num_images", "num_sentences", "num_phrases", "num_regions_captioned")
# What the app needs on a Space, relative to the repository root.
SPACE_FILES = ("app.py", "requirements.txt", "packages.txt", "README.md", "LICENSE")
SPACE_FOLDERS = ("appui", "regioncap")
EXAMPLES_DIR = "assets/examples"  # appui.settings.EXAMPLES_DIR: the app's example pictures
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png")  # app.example_images
SPACE_MODEL_DIR = "model"  # where a local --model folder goes in the Space


def readme_pictures(readme: Path) -> list[str]:
    """The pictures ``readme`` shows from its own repository (``![alt](docs/images/x.png)``), existing ones."""
    names = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8"))
    return sorted({n for n in names if "://" not in n and (readme.parent / n).is_file()})


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Upload a model folder to the Hugging Face Hub (--repo-id), or deploy "
                                            "the app as a Gradio Space (--space).")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo-id", help="publish the model folder --model to this model repo, USER/NAME")
    target.add_argument("--space", metavar="USER/NAME", help="deploy the app to this Space")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="with --repo-id: the model folder (required); with --space: a Hub model repo id or a model "
                        "folder for the Space to serve (default: the bundled demo model)")
    p.add_argument("--private", action="store_true", help="create the repo (or Space) private")
    p.add_argument("--metrics", default=None, metavar="JSON",
                   help=f"evaluation JSON from train.evaluate (default: DIR/{EVAL_FILE} if present)")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--dataset", action="append", default=None, metavar="ID",
                   help="training data set for the card's metadata (repeatable; default: guessed from the "
                        "recorded training data: synthetic-scenes or flickr30k-entities)")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be uploaded (and write the model card); upload nothing")
    return p


def check_publishable(directory: Path):
    """Refuse a missing folder, one holding pickle files anywhere, one that does not load, or one without
    a calibrated match threshold -> its config.

    The load is exactly the users' (``RegionCaptioner.from_pretrained``: hub.read_model_folder's checks,
    strict weights), so a folder that would fail for them is never published. Stricter than loading,
    which only ignores a stray pickle file: a published repo holds none.
    """
    if not directory.is_dir():
        raise RegionCapError(f"{directory}: no such model folder")
    pickled = sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                     if p.is_file() and p.suffix.lower() in hub.PICKLE_SUFFIXES)
    if pickled:
        raise RegionCapError(f"{directory}: holds pickle-format file(s) {', '.join(pickled)}; refusing to publish "
                             "a folder with pickle files (remove them; regioncap uses model.safetensors)")
    from regioncap.models.model import RegionCaptioner

    model = RegionCaptioner.from_pretrained(directory)
    if model.match_threshold is None:
        raise RegionCapError(f"{directory}: no {hub.CALIBRATION_FILE} (the match threshold the app and the Space "
                             f"use); calibrate on held-out data first: {calibrate.command(directory)}")
    return model.config


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


# -- what goes up ----------------------------------------------------------------------------------------
def model_uploads(directory: Path, prefix: str = "") -> dict[str, Path]:
    """{path in the repo: local file} for a model folder's files of hub.MODEL_FILES."""
    return {prefix + name: directory / name for name in hub.model_files(directory)}


def _tree(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted, but none in a hidden folder or ``__pycache__``."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts))


def space_uploads(model: str | None, root: Path = ROOT) -> tuple[dict[str, Path], dict[str, str]]:
    """({path in the Space: local file}, {variable: value}) of a Space deployment (see the module docstring).

    Raises:
        RegionCapError: a file the app needs is missing, or ``model`` is neither a publishable model folder
            nor a Hub repo id.
    """
    files: dict[str, Path] = {}
    for name in SPACE_FILES:
        if not (root / name).is_file():
            raise RegionCapError(f"{root / name}: missing; a Space needs {', '.join(SPACE_FILES)}")
        files[name] = root / name
    for folder, suffixes in [*((f, (".py",)) for f in SPACE_FOLDERS), (EXAMPLES_DIR, EXAMPLE_SUFFIXES)]:
        for path in _tree(root / folder):
            if path.suffix.lower() in suffixes:  # the code and the pictures, no stray file beside them
                files[path.relative_to(root).as_posix()] = path
    for name in readme_pictures(root / "README.md"):  # the README is the Space's page: its pictures go too
        files[name] = root / name
    variables: dict[str, str] = {}
    if model is None:
        demo = root / hub.DEFAULT_MODEL
        if not (demo / hub.WEIGHTS_FILE).is_file():
            raise RegionCapError(f"{demo}: the bundled demo model is missing; pass --model REPO_OR_DIR")
        files.update(model_uploads(demo, hub.DEFAULT_MODEL + "/"))
    elif Path(model).is_dir():
        check_publishable(Path(model))
        files.update(model_uploads(Path(model), SPACE_MODEL_DIR + "/"))
        variables[hub.MODEL_ENV] = SPACE_MODEL_DIR
    else:
        try:
            hub.check_repo_id(model)
        except RegionCapError as exc:
            raise RegionCapError(f"--model {exc} (and not a model folder)") from None
        variables[hub.MODEL_ENV] = model
    return files, variables


def _operations(files: dict[str, Path]):
    from huggingface_hub import CommitOperationAdd

    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]


def _hub_call_failed(repo_id: str, exc: Exception):
    first = (str(exc).strip().splitlines() or [""])[0]
    fail(f"upload to {repo_id} failed: {type(exc).__name__}: {first}")


# -- the two commands ------------------------------------------------------------------------------------
def publish_model(args, api=None) -> int:
    """Check, write the card, upload the model folder in one commit."""
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
    files = model_uploads(directory)
    if args.dry_run:
        print(f"would upload to model repo {args.repo_id}, in one commit:", file=sys.stderr)
        print("\n".join(files))
        return 0
    from huggingface_hub import HfApi

    api = api if api is not None else HfApi(token=args.token)
    try:
        url = api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        api.create_commit(args.repo_id, _operations(files), repo_type="model",
                          commit_message=args.commit_message or "Upload regioncap model")
    except Exception as exc:  # auth, network, a bad repo id: all reported in one line
        _hub_call_failed(args.repo_id, exc)
    print(f"uploaded {', '.join(files)} to {url}")
    return 0


def deploy_space(args, api=None, root: Path = ROOT) -> int:
    """Create the Space if needed, set (or clear) REGIONCAP_MODEL, upload the app in one commit."""
    try:
        try:
            hub.check_repo_id(args.space)
        except RegionCapError as exc:
            raise RegionCapError(f"--space {exc}") from None
        files, variables = space_uploads(args.model, root)
    except RegionCapError as exc:
        fail(exc)
    if args.dry_run:
        print(f"would deploy Space {args.space} (Gradio SDK), {len(files)} files in one commit, and set "
              f"{len(variables)} variable(s):", file=sys.stderr)
        print("\n".join([*files, *(f"{k}={v}" for k, v in variables.items())]))
        return 0
    from huggingface_hub import HfApi

    api = api if api is not None else HfApi(token=args.token)
    try:
        url = api.create_repo(args.space, repo_type="space", space_sdk="gradio", private=args.private,
                              exist_ok=True)
        for key, value in variables.items():
            api.add_space_variable(args.space, key, value)
        if hub.MODEL_ENV not in variables and hub.MODEL_ENV in api.get_space_variables(args.space):
            api.delete_space_variable(args.space, hub.MODEL_ENV)  # an earlier deployment's model: serve the demo
        api.create_commit(args.space, _operations(files), repo_type="space",
                          commit_message=args.commit_message or "Deploy the regioncap app")
    except Exception as exc:  # auth, network, a bad repo id: all reported in one line
        _hub_call_failed(args.space, exc)
    print(f"deployed {len(files)} files to {url}" + "".join(f"; {k}={v}" for k, v in variables.items()))
    if args.model and hub.MODEL_ENV in variables and not Path(args.model).is_dir():
        print(f"if {args.model} is private, the Space also needs an HF_TOKEN secret (its settings page)")
    return 0


def main(args, api=None, root: Path = ROOT) -> int:
    """``api``: an ``HfApi``-like client (tests pass a recorder); ``root``: the repository a Space deploys."""
    if args.space:
        return deploy_space(args, api, root)
    if not args.model:
        fail("--repo-id needs --model DIR (the model folder to publish)")
    return publish_model(args, api)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
