"""Checkpoints: which are complete, which one `--resume` continues from, and what a resumed run's loss means."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..core.errors import RecipeError
from ..core.safety import read_json_file, read_yaml_file


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


def common_checkpoint(output_dir: str) -> str:
    """resume_checkpoint, agreed by every process: with node-local disks (training.save_on_each_node) a node
    killed mid-save holds a newer checkpoint than the others, so each process resumes from the newest one
    complete on every node, never from different steps."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return resume_checkpoint(output_dir)
    complete = {int(c.name.split("-")[-1]) for c in checkpoints(output_dir) if c.name.split("-")[-1].isdigit() and checkpoint_problem(c) is None}
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, sorted(complete))
    common = set.intersection(*(set(steps) for steps in everyone))
    if not common:
        raise RecipeError(
            f"--resume: no checkpoint is complete on every process's {output_dir!r} "
            f"(complete steps by rank: {', '.join(f'{r}: {steps or None}' for r, steps in enumerate(everyone))})"
        )
    step = max(common)
    newest = resume_checkpoint(output_dir)
    if int(Path(newest).name.split("-")[-1]) != step and os.environ.get("RANK", "0") == "0":
        print(f"resume: checkpoint-{step}, the newest complete on every node", file=sys.stderr)
    return str(Path(output_dir) / f"checkpoint-{step}")


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


def kept_checkpoint(state, args) -> dict | None:
    """The checkpoint Trainer restored at the end (training.load_best_model_at_end) and why: its step, epoch and
    the validation metric that made it the best; None when the run ends on its last weights.

    The run's validation scores are then this checkpoint's, not the last evaluation's.
    """
    if not (args.load_best_model_at_end and state.best_model_checkpoint):
        return None
    key = args.metric_for_best_model or "loss"
    key = key if key.startswith("eval_") else f"eval_{key}"
    evaluations = [e for e in state.log_history if key in e]
    step = state.best_global_step or int(Path(state.best_model_checkpoint).name.split("-")[-1])
    best = next((e for e in evaluations if e.get("step") == step), {})
    last = evaluations[-1] if evaluations else {}
    return {
        "checkpoint": Path(state.best_model_checkpoint).name, "step": step, "epoch": best.get("epoch"),
        "metric": key.removeprefix("eval_"), "value": state.best_metric, "greater_is_better": bool(args.greater_is_better),
        "evaluations": len(evaluations), "last_step": last.get("step"), "last_epoch": last.get("epoch"), "last_value": last.get(key),
    }


def stopped_early(state, callbacks) -> dict | None:
    """Where training stopped when early stopping ended it before its budget; None when it ran to the end or
    something else stopped it (a sweep's pruner, a signal)."""
    from transformers import EarlyStoppingCallback

    early = next((c for c in callbacks if isinstance(c, EarlyStoppingCallback)), None)
    if early is None or state.global_step >= state.max_steps or early.early_stopping_patience_counter < early.early_stopping_patience:
        return None
    return {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch, "patience": early.early_stopping_patience}


def stopped_text(stop: dict) -> str:
    epoch = f" (epoch {stop['epoch']:g})" if isinstance(stop["epoch"], (int, float)) else ""
    evaluations = "evaluation" if stop["patience"] == 1 else "evaluations"
    return (f"stopped early at step {stop['step']} of {stop['max_steps']}{epoch}: {stop['patience']} {evaluations} "
            "without a better validation score (regularization.early_stopping_patience)")


def kept_text(kept: dict) -> str:
    """One sentence for the console and report.md: which checkpoint the run's model is, and why."""
    def when(epoch, step):
        return f"epoch {epoch:g}, step {step}" if isinstance(epoch, (int, float)) else f"step {step}"

    direction = "highest" if kept["greater_is_better"] else "lowest"
    text = (f"{kept['checkpoint']} ({when(kept['epoch'], kept['step'])}), whose validation {kept['metric']} "
            f"{kept['value']:.4f} was the {direction} of {kept['evaluations']} evaluations (training.load_best_model_at_end)")
    if kept["last_step"] is not None and kept["last_step"] != kept["step"]:
        text += f"; the last evaluation ({when(kept['last_epoch'], kept['last_step'])}) had {kept['last_value']:.4f}"
    return text


def finished_run_problem(output_dir: str, max_steps: int, num_train_epochs: float) -> str | None:
    """Why `--resume` of a finished run would do nothing but retrain its last steps and rewrite it, or None when
    the recipe asks for more than the run trained (more steps or epochs: then it continues).

    The run's own trainer_state.json (saved as it finished) says how far it went; its last checkpoint, when that is gone.
    """
    out = Path(output_dir)
    path = out / "trainer_state.json"
    if not path.is_file():
        path = Path(resume_checkpoint(output_dir, announce=False)) / "trainer_state.json"
    state = read_json_file(path, "trainer state")
    state = state if isinstance(state, dict) else {}
    step, epoch = int(state.get("global_step") or 0), float(state.get("epoch") or 0)
    if (max_steps > step) if max_steps > 0 else (num_train_epochs > epoch + 1e-6):
        return None
    return (
        f"--resume: {output_dir!r} holds a finished run, trained to step {step} (epoch {epoch:g}), as far as this recipe "
        "asks (training.max_steps, num_train_epochs); pass --overwrite to train it again, or ask for more steps or epochs to continue it"
    )
