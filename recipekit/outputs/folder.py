"""What a run leaves in `output_dir`, and the guards around it: the folder checks, the lock, the status.

A run is finished when `metrics.json` exists: it is written last, atomically, so its presence means
every other output is complete; status.json (running, interrupted, failed, finished) follows it.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from ..core.errors import LostRank, OwnError, RecipeError
from ..core.files import write_atomic, write_json
from ..core.launch import lost_rank_problem, tell_peers
from ..core.safety import clip, read_json_file, read_yaml_file, redact
from .checkpoints import checkpoints, finished_run_problem, resume_checkpoint

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


def check_output_dir(output_dir: str, overwrite: bool, resume: bool, locked: bool = False, training=None,
                     writer: bool | None = None) -> None:
    """Refuse an output_dir that is unusable or holds a run the user did not say to replace or continue.

    Run once before any work, with the recipe's `training` arguments (a finished run is resumed only to train
    further), and again by start_run once the folder is locked (`locked`): another run may have written into it
    in between. `writer`: this process will write the folder (TrainingArguments.should_save: process 0, or with
    save_on_each_node the first process of each node); by default process 0.
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
    # Other processes of this launch check while the writer may already hold the lock.
    writer = os.environ.get("RANK", "0") == "0" if writer is None else writer
    holder = lock_holder(out) if writer and not locked else None
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
        if training is not None and (out / FINISHED_MARKER).exists():
            problem = finished_run_problem(output_dir, training.max_steps, training.num_train_epochs)
            if problem:
                raise RecipeError(problem)
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
            if error is not None and not isinstance(error, LostRank):
                # Survivors whose next collective fails then say what stopped the run, not only that a rank went.
                told = tell_peers(error.problems[0])
                if told and isinstance(error, OwnError) and int(os.environ.get("RANK", "0")) != 0:
                    error = LostRank(told)
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
    lost = lost_rank_problem(e)
    if lost:
        return LostRank(lost)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        where = f" ({e.filename})" if e.filename else ""
        return OwnError(f"training.output_dir: {e.strerror or e}{where}; the run is marked failed")
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
    if resume:
        # A finished run continued for more epochs or steps is unfinished until it ends again: its old
        # metrics.json would otherwise pass for this run's result while it trains, or after it fails.
        (out / FINISHED_MARKER).unlink(missing_ok=True)
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
