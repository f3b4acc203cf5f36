"""What a run leaves in `output_dir`, and the guards around it: the folder checks, the lock, the status.

A run is finished when `metrics.json` exists: it is written last, atomically, so its presence means
every other output is complete; status.json (running, interrupted, failed, finished) follows it.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from . import paths
from .errors import RecipeError
from .safety import clip, read_json_file, read_yaml_file, redact

FINISHED_MARKER = "metrics.json"
STATUS = "status.json"
# Held (an OS lock, released by the kernel when the process dies, kill -9 included) for the life of a run.
LOCK = ".recipekit.lock"
# What a run of ours writes into its output_dir, and so all that --overwrite may remove. Anything else
# (a user's notes beside a run) stays.
OUR_FILES = (
    "recipe.yaml", STATUS, FINISHED_MARKER, "data_report.json", "predictions.csv", "predictions.jsonl",
    "trainer_state.json", "all_results.json", "train_results.json", "eval_results.json", "report.md", "README.md",
    "trial.json", "labels.json", "config.json", "generation_config.json", "training_args.bin",
    "model.safetensors", "model-*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
    "adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "*.model",
    "chat_template.jinja", ".*.tmp", LOCK,
)
OUR_FOLDERS = ("checkpoint-*", "plots", "sanity", "runs")


def checkpoints(output_dir: str) -> list[Path]:
    return sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint cannot be resumed, or None when it is complete.

    Trainer writes trainer_state.json last, so a save cut short (kill -9, a full disk) lacks it; a weights
    file cut short has fewer bytes than its own header promises.
    """
    state = ckpt / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (its save was cut short)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "trainer_state.json is damaged"
    weights = list(ckpt.glob("*.safetensors")) + list(ckpt.glob("pytorch_model*.bin"))
    if not weights and not any(p.is_dir() and p.name.startswith("global_step") for p in ckpt.iterdir()):
        return "no model weights"
    for path in ckpt.glob("*.safetensors"):
        problem = safetensors_problem(path)
        if problem:
            return f"{path.name} {problem}"
    return None


def safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors it lists by offset."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "is truncated (no header)"
            length = int.from_bytes(head, "little")
            if length > size - 8:
                return "is truncated (header cut)"
            header = json.loads(f.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "is damaged (unreadable header)"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)), default=0)
    if 8 + length + end > size:
        return f"is truncated ({size:,} of {8 + length + end:,} bytes)"
    return None


def resume_checkpoint(output_dir: str, announce: bool = True) -> str:
    """The newest complete checkpoint; each newer one skipped is named with the reason."""
    for ckpt in reversed(checkpoints(output_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return str(ckpt)
        if announce and os.environ.get("RANK", "0") == "0":
            print(f"resume: skipping {ckpt.name}: {problem}", file=sys.stderr)
    raise RecipeError(f"--resume: {output_dir!r} has no complete checkpoint-* folder to resume from")


def whole_run_loss(state, resumed_step: int, metrics: dict) -> dict:
    """After --resume, Trainer's train_loss covers only the resumed segment (0.0 when nothing was left to
    train): combine it with the losses logged before the resume into the mean over the whole run.

    Before the resume only the logged losses are known (each the mean since the previous log), so steps
    between the last log and the checkpoint are not counted.
    """
    total = steps = 0.0
    previous = 0
    for step, loss in sorted((e["step"], e["loss"]) for e in state.log_history if "loss" in e and e.get("step", 0) <= resumed_step):
        total += loss * (step - previous)
        steps += step - previous
        previous = step
    segment = state.global_step - resumed_step
    if segment > 0 and metrics.get("train_loss") is not None:
        total += metrics["train_loss"] * segment
        steps += segment
    out = {"train_loss_resumed_segment": metrics.get("train_loss") if segment > 0 else None, "resumed_from_step": resumed_step}
    if steps:
        out["train_loss"] = round(total / steps, 6)
    return out


def refused_folder(output_dir: str) -> str | None:
    """Folders no run may write into, whatever the flags: the empty path, the current folder, a root, home."""
    if not str(output_dir).strip():
        return "is empty; name a folder for the run's outputs (e.g. runs/my-run)"
    resolved = Path(output_dir).expanduser().resolve()
    for name, place in (("the current folder", Path.cwd().resolve()), ("your home folder", Path.home().resolve())):
        if resolved == place:
            return f"is {name}; a run needs a folder of its own (e.g. runs/my-run)"
    if resolved == Path(resolved.anchor):
        return "is a file-system root; a run needs a folder of its own (e.g. runs/my-run)"
    return None


def is_ours(name: str, is_dir: bool) -> bool:
    patterns = OUR_FOLDERS if is_dir else OUR_FILES
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def holds_our_run(out: Path) -> bool:
    """A run of ours left its recipe and a status (or, from before status.json, its metrics)."""
    return (out / "recipe.yaml").is_file() and ((out / STATUS).is_file() or (out / FINISHED_MARKER).is_file())


def check_output_dir(output_dir: str, overwrite: bool, resume: bool, locked: bool = False) -> None:
    """Refuse an output_dir that is unusable or holds a run the user did not say to replace or continue.

    Run once before any work, and again by start_run once the folder is locked (`locked`): another run may
    have written into it in between.
    """
    out = Path(output_dir)
    if overwrite and resume:
        raise RecipeError("--overwrite and --resume: choose one")
    refused = refused_folder(output_dir)
    if refused:
        raise RecipeError(f"training.output_dir: {output_dir!r} {refused}")
    if out.exists() and not out.is_dir():
        raise RecipeError(f"training.output_dir: {output_dir!r} is a file, not a folder")
    if not out.is_dir():
        if resume:
            raise RecipeError(f"--resume: {output_dir!r} has no checkpoint-* folder to resume from")
        writable(output_dir)
        return
    # Other processes of this launch check while process 0 may already hold the lock.
    holder = lock_holder(out) if os.environ.get("RANK", "0") == "0" and not locked else None
    if holder:
        raise RecipeError(f"training.output_dir: {output_dir!r} is in use by another run ({holder}); wait for it, or choose another output_dir")
    ours = holds_our_run(out)
    # Outside a run of ours every name is someone else's, even a config.json: it may be their saved model.
    foreign = sorted(p.name for p in out.iterdir() if p.name != LOCK and not p.name.startswith(".recipekit-probe-"))
    if not ours and foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RecipeError(
            f"training.output_dir: {output_dir!r} is not empty and holds no run of ours ({shown}); "
            "choose a new or empty folder (--overwrite only replaces a run of ours)"
        )
    if resume:
        if not checkpoints(output_dir):
            raise RecipeError(f"--resume: {output_dir!r} has no checkpoint-* folder to resume from")
        resume_checkpoint(output_dir, announce=False)
    if ours and not (overwrite or resume):
        raise RecipeError(
            f"training.output_dir: {output_dir!r} holds {describe_run(out)}; pass --overwrite to replace it, "
            "--resume to continue from its last checkpoint, or choose another output_dir"
        )
    writable(output_dir)


def writable(output_dir: str) -> None:
    """Checked last: the probe touches the folder, which a refused run must not do."""
    ancestor = Path(output_dir)
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not can_create_in(ancestor):
        raise RecipeError(f"training.output_dir: {output_dir!r} is not writable ({ancestor} does not allow writing)")


def describe_run(out: Path) -> str:
    if (out / FINISHED_MARKER).exists():
        return "a finished run (metrics.json)"
    try:
        status = json.loads((out / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = {}
    if status.get("status") == "failed":
        return f"an unfinished run that failed ({clip(status.get('reason', 'no reason recorded'), 200)})"
    if status.get("status") == "interrupted":
        return f"an unfinished run, interrupted at step {status.get('step')}"
    return "an unfinished run (stopped without a word: killed, or the machine went down)"


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
    last = Path(resume_checkpoint(output_dir, announce=False))
    earlier = out / "recipe.yaml"
    if earlier.exists():
        before = (read_yaml_file(earlier, "run's recipe") or {}).get("model") or {}
        # The same teacher too: its logits are recomputed on resume, and another teacher's would change the objective.
        for key in ("name_or_path", "head", "peft", "teacher"):
            if before.get(key) != model_section.get(key):
                raise RecipeError(
                    f"--resume: {last} was trained with model.{key} {before.get(key)!r}, this recipe has "
                    f"{model_section.get(key)!r}; resume with the original recipe, or use another output_dir"
                )
    config = last / "config.json"
    if config.exists():
        raw = read_json_file(config, "checkpoint config")
        saved = raw.get("id2label") or {}
        # The head's own label list (a binary head's one output is named after its positive label only).
        saved_labels = (raw.get("recipekit") or {}).get("labels") or [saved[k] for k in sorted(saved, key=int)]
        if saved_labels and saved_labels != labels:
            raise RecipeError(
                f"--resume: {last} was trained on labels {', '.join(saved_labels)}; this recipe's data has "
                f"{', '.join(labels)}; resume with the original data, or use another output_dir"
            )


class _Run:
    """The run folder this call of fine_tune holds: its lock, and whether a status was written."""

    def __init__(self):
        self.output_dir: str | None = None
        self.lock = None


_held: list[_Run] = []


def holder_line() -> str:
    return f"pid {os.getpid()} on {platform.node()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(redact(sys.argv))}"


def lock_holder(out: Path) -> str | None:
    """Who holds the folder's lock, or None when nobody does (a killed holder's lock is released by the OS)."""
    path = out / LOCK
    if not path.exists():
        return None
    probe = FileLock(str(path), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        try:
            who = path.read_text(encoding="utf-8").strip()
        except OSError:
            who = ""
        return clip(who or "a process that left no name", 300)
    except OSError:
        return None
    probe.release()
    return None


def lock_folder(output_dir: str):
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RecipeError(f"training.output_dir: {output_dir!r} is in use by another run ({lock_holder(out)}); wait for it, or choose another output_dir") from None
    with open(out / LOCK, "w", encoding="utf-8") as f:
        f.write(holder_line() + "\n")
    return lock


def guard_run(fine_tune):
    """Wrap fine_tune: the folder lock taken by start_run is held until it returns, and a run that raises
    after start_run is marked `failed` with the one-line reason (a full disk becomes a one-line error)."""

    @functools.wraps(fine_tune)
    def wrapper(*args, **kwargs):
        run = _Run()
        _held.append(run)
        try:
            return fine_tune(*args, **kwargs)
        except BaseException as e:
            error = as_recipe_error(e)
            if run.output_dir is not None:
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                reason = "; ".join(error.problems) if error else f"{type(e).__name__}: {str(e).strip() or 'no message'}"
                try:
                    mark(run.output_dir, status, reason=clip(reason, 1000))
                except OSError:
                    pass  # the disk that failed the run may refuse this too; the error below still says why
            if error is not None and error is not e:
                raise error from None
            raise
        finally:
            _held.remove(run)
            if run.lock is not None:
                run.lock.release()

    return wrapper


def as_recipe_error(e: BaseException) -> RecipeError | None:
    """Problems of the machine rather than the code (a full disk, a read-only mount) as one line."""
    if isinstance(e, RecipeError):
        return e
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        where = f" ({e.filename})" if e.filename else ""
        return RecipeError(f"training.output_dir: {e.strerror or e}{where}; the run is marked failed")
    return None


def start_run(output_dir: str, recipe_yaml: str, clear: bool, resume: bool = False) -> None:
    """Lock the folder, then write the resolved recipe first, so even an unfinished run says what it was.

    With `clear` (--overwrite), first remove what an earlier run of ours left, so its checkpoints cannot be
    resumed by mistake and its metrics.json cannot pass for this run's; files of anyone else stay.
    """
    out = Path(output_dir)
    run = _held[-1] if _held else _Run()
    if run.lock is None:
        run.lock = lock_folder(output_dir)
    try:
        check_output_dir(output_dir, clear, resume, locked=True)
    except RecipeError:
        run.lock.release()
        run.lock = None
        raise
    run.output_dir = output_dir
    if clear and holds_our_run(out):
        for path in out.iterdir():
            if path.name == LOCK or not is_ours(path.name, path.is_dir()):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    write_atomic(out / "recipe.yaml", recipe_yaml)
    mark(output_dir, "running", holder=holder_line())


def read_record(folder) -> dict:
    """A run's metrics.json through the safe reader: a damaged file is a one-line error, not a traceback."""
    path = Path(folder) / FINISHED_MARKER
    record = read_json_file(path, "run's metrics")
    if not isinstance(record, dict):
        raise RecipeError(f"{path}: this run's metrics are damaged (expected a JSON object, got {type(record).__name__})")
    return record


def read_run(folder) -> tuple[dict, dict]:
    """A finished run's recipe.yaml (as written, Python tags refused) and metrics.json, each checked."""
    out = Path(folder)
    if not out.is_dir():
        raise RecipeError(f"{folder}: not a folder; give the output_dir of a finished run")
    if not (out / FINISHED_MARKER).exists():
        raise RecipeError(f"{folder}: holds no finished run (no {FINISHED_MARKER})")
    recipe = read_yaml_file(out / "recipe.yaml", "run's recipe") if (out / "recipe.yaml").exists() else {}
    if recipe is not None and not isinstance(recipe, dict):
        raise RecipeError(f"{out / 'recipe.yaml'}: this run's recipe is damaged (expected a mapping, got {type(recipe).__name__})")
    return recipe or {}, read_record(out)


def read_log_history(folder) -> list[dict]:
    path = Path(folder) / "trainer_state.json"
    if not path.exists():
        return []
    state = read_json_file(path, "trainer state")
    history = state.get("log_history") if isinstance(state, dict) else None
    return [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []


def mark(output_dir: str, status: str, **details) -> None:
    """status.json: running, interrupted, failed (with the reason) or finished. Only a finished run also has metrics.json."""
    write_json(Path(output_dir) / STATUS, {"status": status, **details})


def manifest(recipe, data) -> dict:
    """What it takes to reproduce the run: code version, data identity, seed, machine."""
    files = [recipe.data.train_file, recipe.data.validation_file, recipe.data.test_file]
    files += [s.file for s in recipe.data.sources or []]
    return {
        # Secrets given as overrides (training.hub_token=...) never reach a file.
        "command": redact(sys.argv),
        "launch": launch_info(),
        "git": git_state(),
        "seed": recipe.training.seed,
        "data_files": {spec: sha256(paths.resolve(spec)) for spec in files if spec},
        "dataset_fingerprints": {name: ds._fingerprint for name, ds in data.splits.items()},
        "hardware": hardware(),
        **({"teacher": teacher_identity(recipe.model)} if recipe.model.teacher else {}),
    }


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


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; a teammate sharing the runs folder reads what a plain open() would allow.
        os.fchmod(fd, 0o666 & ~umask())
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
