"""What a run leaves in `output_dir`, and the guard that keeps a finished run from being overwritten.

A run is finished when `metrics.json` exists: it is written last, atomically, so its presence means
every other output is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from . import paths
from .errors import RecipeError

FINISHED_MARKER = "metrics.json"
STATUS = "status.json"


def checkpoints(output_dir: str) -> list[Path]:
    return sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)


def check_output_dir(output_dir: str, overwrite: bool, resume: bool) -> None:
    """Refuse an output_dir that is unusable or holds a run the user did not say to replace or continue."""
    out = Path(output_dir)
    if overwrite and resume:
        raise RecipeError("--overwrite and --resume: choose one")
    if out.exists() and not out.is_dir():
        raise RecipeError(f"training.output_dir: {output_dir!r} is a file, not a folder")
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not can_create_in(ancestor):
        raise RecipeError(f"training.output_dir: {output_dir!r} is not writable ({ancestor} does not allow writing)")
    finished = (out / FINISHED_MARKER).exists()
    started = finished or bool(checkpoints(output_dir)) or (out / "recipe.yaml").exists() or (out / STATUS).exists()
    if resume and not checkpoints(output_dir):
        raise RecipeError(f"--resume: {output_dir!r} has no checkpoint-* folder to resume from")
    if started and not (overwrite or resume):
        state = "a finished run (metrics.json)" if finished else "an unfinished run"
        raise RecipeError(
            f"training.output_dir: {output_dir!r} holds {state}; pass --overwrite to replace it, "
            "--resume to continue from its last checkpoint, or choose another output_dir"
        )


def can_create_in(folder: Path) -> bool:
    """Try it: permission bits say nothing for root, and a read-only mount passes os.access."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".recipekit-probe-"))
        return True
    except OSError:
        return False


def check_resumable(output_dir: str, model_section: dict, labels: list[str]) -> None:
    """Refuse to resume a checkpoint trained from another model or on another label set.

    Trainer would load mismatched weights with a shape error deep in loading, or, with the same number of
    labels in another order, silently continue a model whose outputs mean something else.
    """
    out = Path(output_dir)
    last = checkpoints(output_dir)[-1]
    earlier = out / "recipe.yaml"
    if earlier.exists():
        before = (yaml.safe_load(earlier.read_text(encoding="utf-8")) or {}).get("model") or {}
        for key in ("name_or_path", "head", "peft"):
            if before.get(key) != model_section.get(key):
                raise RecipeError(
                    f"--resume: {last} was trained with model.{key} {before.get(key)!r}, this recipe has "
                    f"{model_section.get(key)!r}; resume with the original recipe, or use another output_dir"
                )
    config = last / "config.json"
    if config.exists():
        raw = json.loads(config.read_text(encoding="utf-8"))
        saved = raw.get("id2label") or {}
        # The head's own label list (a binary head's one output is named after its positive label only).
        saved_labels = (raw.get("recipekit") or {}).get("labels") or [saved[k] for k in sorted(saved, key=int)]
        if saved_labels and saved_labels != labels:
            raise RecipeError(
                f"--resume: {last} was trained on labels {', '.join(saved_labels)}; this recipe's data has "
                f"{', '.join(labels)}; resume with the original data, or use another output_dir"
            )


def start_run(output_dir: str, recipe_yaml: str, clear: bool) -> None:
    """Write the resolved recipe first, so even an unfinished run says what it was.

    With `clear` (--overwrite), first remove what an earlier run left, so its checkpoints cannot be
    resumed by mistake and its metrics.json cannot pass for this run's.
    """
    out = Path(output_dir)
    if clear:
        for ckpt in checkpoints(output_dir):
            shutil.rmtree(ckpt)
        for name in (FINISHED_MARKER, "predictions.csv", "predictions.jsonl", "trainer_state.json", "report.md", "README.md"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "plots", ignore_errors=True)
    write_atomic(out / "recipe.yaml", recipe_yaml)
    mark(output_dir, "running")


def mark(output_dir: str, status: str, **details) -> None:
    """status.json: running, interrupted or finished. Only a finished run also has metrics.json."""
    write_json(Path(output_dir) / STATUS, {"status": status, **details})


def manifest(recipe, data) -> dict:
    """What it takes to reproduce the run: code version, data identity, seed, machine."""
    files = [recipe.data.train_file, recipe.data.validation_file, recipe.data.test_file]
    files += [s.file for s in recipe.data.sources or []]
    return {
        "command": sys.argv,
        "git": git_state(),
        "seed": recipe.training.seed,
        "data_files": {spec: sha256(paths.resolve(spec)) for spec in files if spec},
        "dataset_fingerprints": {name: ds._fingerprint for name, ds in data.splits.items()},
        "hardware": hardware(),
    }


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_state() -> dict | None:
    """The commit of this project's checkout and whether it had uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(dirty.strip())}


def hardware() -> dict:
    import torch

    info = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_predictions(path: Path, frame) -> None:
    write_atomic(path, frame.to_csv(index=False))


def versions() -> dict[str, str]:
    import accelerate
    import datasets
    import sklearn
    import torch
    import transformers

    from . import __version__

    return {
        "recipekit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "scikit-learn": sklearn.__version__,
    }


def strip_prefix(metrics: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in metrics.items()}
