"""What produced a run: the recipe's inputs hashed, the launch, the machine, the library versions, the git state."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

from ..core import paths
from ..core.safety import redact
from ..data.streaming import shard_paths
from .folder import FINISHED_MARKER


def manifest(recipe, data, padding: str) -> dict:
    """What it takes to reproduce the run: code version, data identity, seed, machine, and how its batches were
    computed (`padding`: flatten, length_split or dynamic, as run, after any fallback)."""
    files = [recipe.data.train_file, recipe.data.validation_file, recipe.data.test_file]
    files += [s.file for s in recipe.data.sources or []]
    return {
        # Secrets given as overrides (training.hub_token=...) never reach a file.
        "command": redact(sys.argv),
        "launch": launch_info(),
        "git": git_state(),
        "seed": recipe.training.seed,
        "batch": batch_size(recipe.training),
        "padding": padding,
        "data_files": {spec: sha256(paths.resolve(spec)) for spec in files if spec and not (recipe.data.streaming and spec == recipe.data.train_file)},
        **({"streamed_shards": shards(recipe.data.train_file)} if recipe.data.streaming else {}),
        "dataset_fingerprints": {name: getattr(ds, "_fingerprint", "streamed") for name, ds in data.splits.items()},
        "hardware": hardware(),
        **({"teacher": teacher_identity(recipe.model)} if recipe.model.teacher else {}),
    }


def shards(spec: str) -> dict:
    """A streamed corpus by each shard's size and modification time: hashing it would read the corpus a second time."""
    return {str(p): {"bytes": p.stat().st_size, "modified": int(p.stat().st_mtime)} for p in shard_paths(spec)}


def batch_size(args) -> dict:
    """Examples per optimizer step and how they are made: per device x devices in a process (DataParallel) x
    processes x gradient accumulation."""
    per_step = args.train_batch_size * args.world_size
    return {"per_device": args.per_device_train_batch_size, "processes": args.world_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global": per_step * args.gradient_accumulation_steps}


def teacher_identity(model_args) -> dict:
    """The teacher a distilled run learned from: where it was, its settings, and the hash of its metrics.json
    (written once when the teacher finished, so another run in the same folder has another hash)."""
    folder = Path(paths.resolve(model_args.teacher)).expanduser().resolve()
    return {"run": str(folder), "temperature": model_args.teacher_temperature, "weight": model_args.teacher_weight,
            "metrics_sha256": sha256(str(folder / FINISHED_MARKER))}


def launch_info() -> dict:
    """How the processes were started: the launcher, and how many processes on how many machines."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env:
        launcher = "torchrun"
    elif any(k.startswith("ACCELERATE_") for k in env):
        launcher = "accelerate launch"
    elif "DEEPSPEED_LAUNCHER" in env or "OMPI_COMM_WORLD_SIZE" in env:
        launcher = "deepspeed or mpirun"
    else:
        launcher = "python"
    processes = int(env.get("WORLD_SIZE", "1"))
    local = int(env.get("LOCAL_WORLD_SIZE", str(processes)))
    return {"launcher": launcher, "processes": processes, "processes_per_machine": local,
            "machines": max(processes // max(local, 1), 1), "python": sys.executable}


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


def versions() -> dict[str, str]:
    import accelerate
    import datasets
    import sklearn
    import torch
    import transformers

    from .. import __version__

    return {
        "recipekit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "scikit-learn": sklearn.__version__,
    }
