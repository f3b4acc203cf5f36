"""What a run leaves in `output_dir`, and the guard that keeps a finished run from being overwritten.

A run is finished when `metrics.json` exists: it is written last, atomically, so its presence means
every other output is complete.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

from .errors import RecipeError

FINISHED_MARKER = "metrics.json"


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
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RecipeError(f"training.output_dir: {output_dir!r} is not writable ({ancestor} does not allow writing)")
    finished = (out / FINISHED_MARKER).exists()
    started = finished or bool(checkpoints(output_dir)) or (out / "recipe.yaml").exists()
    if resume and not checkpoints(output_dir):
        raise RecipeError(f"--resume: {output_dir!r} has no checkpoint-* folder to resume from")
    if started and not (overwrite or resume):
        state = "a finished run (metrics.json)" if finished else "an unfinished run"
        raise RecipeError(
            f"training.output_dir: {output_dir!r} holds {state}; pass --overwrite to replace it, "
            "--resume to continue from its last checkpoint, or choose another output_dir"
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
        for name in (FINISHED_MARKER, "predictions.csv", "trainer_state.json"):
            (out / name).unlink(missing_ok=True)
    write_atomic(out / "recipe.yaml", recipe_yaml)


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
