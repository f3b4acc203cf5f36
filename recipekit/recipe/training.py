"""The `training:` section is TrainingArguments itself; here are the checks it lacks and the defaults we set."""

from __future__ import annotations

import os

import torch

from ..core.schema import not_one_of, show
from .data import DataArgs
from .sections import BatchingArgs, RegularizationArgs

# Ranges of `training:` numbers that TrainingArguments takes and Trainer or torch then fails on (or silently
# misuses): key -> (low, high, low included, what the key means). Seeds: numpy and torch take 0 .. 2**32 - 1.
TRAINING_RANGES = {
    "seed": (0, 2**32 - 1, True, "a seed"),
    "data_seed": (0, 2**32 - 1, True, "a seed"),
    "num_train_epochs": (0, 1e6, False, "a number of epochs"),
    "max_steps": (-1, 2**31 - 1, True, "a number of steps (-1: use num_train_epochs)"),
    "warmup_steps": (0, 2**31 - 1, True, "warmup steps, or a fraction of training below 1"),
    "weight_decay": (0, 1e3, True, "a decay coefficient"),
    "adam_beta1": (0, 1, True, "a decay rate in [0, 1)"),
    "adam_beta2": (0, 1, True, "a decay rate in [0, 1)"),
    "adam_epsilon": (0, 1, False, "a small positive number"),
    "max_grad_norm": (0, 1e9, True, "a gradient norm (0: no clipping)"),
    "label_smoothing_factor": (0, 1, True, "a fraction in [0, 1)"),
    "logging_steps": (0, 2**31 - 1, False, "a number of steps, or a fraction of training below 1"),
    "save_steps": (0, 2**31 - 1, False, "a number of steps, or a fraction of training below 1"),
    "eval_steps": (0, 2**31 - 1, False, "a number of steps, or a fraction of training below 1"),
    "eval_delay": (0, 2**31 - 1, True, "a number of steps or epochs"),
    "save_total_limit": (1, 2**31 - 1, True, "a number of checkpoints to keep"),
    "dataloader_num_workers": (0, 1024, True, "a number of worker processes"),
    "learning_rate": (0, 1e3, False, "a learning rate (typical fine-tuning: 1.0e-5 to 1.0e-4)"),
}


# What users write for a TrainingArguments key (other trainers' names, older transformers, shorthand) -> the key:
# an unknown `training.epochs` suggests num_train_epochs, which spelling alone does not find. A name of another
# section is given with its section.
TRAINING_SYNONYMS = {
    **dict.fromkeys(["epochs", "num_epochs", "n_epochs", "max_epochs", "train_epochs", "epoch"], "num_train_epochs"),
    **dict.fromkeys(["lr", "learningrate", "rate", "base_lr", "max_lr"], "learning_rate"),
    **dict.fromkeys(["batch_size", "train_batch_size", "bs", "batchsize", "per_device_batch_size", "micro_batch_size"],
                    "per_device_train_batch_size"),
    **dict.fromkeys(["eval_batch_size", "test_batch_size", "valid_batch_size", "validation_batch_size"], "per_device_eval_batch_size"),
    **dict.fromkeys(["grad_accum", "gradient_accumulation", "accumulation_steps", "grad_accumulation_steps", "accumulate_grad_batches"],
                    "gradient_accumulation_steps"),
    **dict.fromkeys(["steps", "num_steps", "train_steps", "total_steps", "max_iters", "iterations"], "max_steps"),
    **dict.fromkeys(["warmup", "warmup_ratio", "num_warmup_steps", "warmup_proportion"], "warmup_steps"),
    **dict.fromkeys(["evaluation_strategy", "eval_every", "evaluate_every"], "eval_strategy"),
    **dict.fromkeys(["scheduler", "lr_scheduler", "schedule", "lr_schedule"], "lr_scheduler_type"),
    **dict.fromkeys(["optimizer", "optimiser", "opt"], "optim"),
    **dict.fromkeys(["clip", "grad_clip", "gradient_clipping", "clip_grad_norm", "max_norm"], "max_grad_norm"),
    **dict.fromkeys(["output", "out_dir", "outdir", "output_path", "save_dir", "output_folder"], "output_dir"),
    **dict.fromkeys(["log_every", "log_steps", "logging_interval", "log_interval"], "logging_steps"),
    **dict.fromkeys(["save_every", "checkpoint_steps", "save_interval"], "save_steps"),
    **dict.fromkeys(["decay", "wd", "l2"], "weight_decay"),
    **dict.fromkeys(["label_smoothing"], "label_smoothing_factor"),
    **dict.fromkeys(["random_seed", "rng_seed"], "seed"),
    **dict.fromkeys(["mixed_precision", "half", "amp"], "bf16"),
    **dict.fromkeys(["early_stopping", "early_stopping_patience", "patience"], "regularization.early_stopping_patience"),
    **dict.fromkeys(["dropout"], "model.hidden_dropout"),
    **dict.fromkeys(["max_length", "max_seq_length", "max_len", "seq_len"], "data.max_length"),
}


# Upper bounds that are open: a decay rate or a smoothing factor of exactly 1 learns nothing.
OPEN_ABOVE = ("adam_beta1", "adam_beta2", "label_smoothing_factor")


def range_problems(kw: dict) -> list[str]:
    out = []
    for key, (low, high, low_included, what) in TRAINING_RANGES.items():
        value = kw.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        above_low = value >= low if low_included else value > low
        below_high = value < high if key in OPEN_ABOVE else value <= high
        if not (above_low and below_high):
            left, right = "[" if low_included else "(", ")" if key in OPEN_ABOVE else "]"
            out.append(f"{key}: {show(value)} is out of range for {what}; allowed: {left}{low:g}, {high:g}{right}")
    return out


def training_problems(kw: dict, metric_names: list[str], data: DataArgs) -> list[str]:
    """Impossible values that TrainingArguments itself accepts silently."""
    out = []
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if key in kw and kw[key] <= 0:
            out.append(f"{key}: {kw[key]} must be a positive integer")
    if "learning_rate" in kw and kw["learning_rate"] <= 0:
        out.append(f"learning_rate: {kw['learning_rate']} must be positive (typical fine-tuning: 1.0e-5 to 1.0e-4)")
    if kw.get("max_steps", -1) <= 0 and "num_train_epochs" in kw and kw["num_train_epochs"] <= 0:
        out.append(f"num_train_epochs: {kw['num_train_epochs']} must be positive (or set max_steps)")
    said = {p.split(":")[0] for p in out}
    out += [p for p in range_problems(kw) if p.split(":")[0] not in said]
    best = kw.get("metric_for_best_model")
    if best is not None:
        valid = ["loss"] + metric_names
        if best.removeprefix("eval_") not in valid:
            out.append(f"metric_for_best_model: {not_one_of(best, valid, 'a computed metric')}")
    if kw.get("eval_strategy", "no") != "no" and not data.has_validation():
        out.append(
            f"eval_strategy: {kw['eval_strategy']!r} needs a validation set "
            "(data.validation_file, data.validation_split_name or data.validation_split)"
        )
    return out + tracker_problems(kw.get("report_to"))


# The pip package behind each of Trainer's trackers, where its name differs.
TRACKER_PACKAGES = {"comet_ml": "comet-ml", "azure_ml": "azureml-core", "dvclive": "dvclive", "neptune": "neptune"}


def tracker_problems(report_to) -> list[str]:
    """A tracker Trainer does not know, or one that is not installed, fails only when training starts: refused here."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    out, installed = [], None
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            out.append(f"report_to: {not_one_of(name, ['none', 'all', *INTEGRATION_TO_CALLBACK], 'a tracker Trainer knows')}")
            continue
        installed = get_available_reporting_integrations() if installed is None else installed
        if name not in installed:
            out.append(
                f"report_to: {name!r} is not installed; pip install {TRACKER_PACKAGES.get(name, name)}, or use one that is: "
                f"{', '.join(['none', *installed])}"
            )
    return out


# Trainer logs the training loss every 500 steps by default, so a 60-step run logs none (an empty loss.png).
# Unset, the cadence is a share of the run: TrainingArguments reads logging_steps / eval_steps below 1 as a ratio
# of the total optimizer steps (transformers' TrainerState.compute_steps: ceil(max_steps * ratio)).
LOG_SHARE = 0.02  # about 50 training-loss points per run, whatever its length
EVAL_SHARE = 0.1  # about 10 step-based evaluations per run: enough for a curve and for early stopping


def with_run_length_defaults(kw: dict) -> dict:
    """Logging (and step-based evaluation) cadence fitted to the run's length where the recipe sets none. With
    logging_steps written, Trainer's own rule stands (eval_steps unset evaluates every logging_steps)."""
    if str(kw.get("logging_strategy", "steps")) == "steps" and "logging_steps" not in kw:
        kw["logging_steps"] = LOG_SHARE
        if str(kw.get("eval_strategy", "no")) == "steps" and kw.get("eval_steps") is None:
            # A written checkpoint interval is kept as the evaluation's (Trainer refuses a ratio beside a step count).
            saves = kw.get("save_steps")
            kw["eval_steps"] = saves if saves is not None and saves >= 1 else EVAL_SHARE
    return kw


# Why recipekit sets a TrainingArguments value the recipe did not write: recipe.yaml and --check say it.
SET_BECAUSE = {
    "logging_steps": f"a ratio of the run's steps: ~{round(1 / LOG_SHARE)} loss points (Trainer's default: every 500 steps)",
    "eval_steps": f"a ratio of the run's steps: ~{round(1 / EVAL_SHARE)} evaluations (or training.save_steps, where written)",
    "save_strategy": "checkpoints at each evaluation, to restore the best one",
    "save_steps": "checkpoints at each evaluation, to restore the best one",
    "load_best_model_at_end": "a validation set is evaluated during training: the run ends on its best evaluation",
    "use_cpu": "no accelerator on this machine",
    "ddp_backend": "CPU processes talk over gloo",
    "bf16": "the launcher's mixed precision",
    "fp16": "the launcher's mixed precision",
    "save_total_limit": "keep the best and the last checkpoint (null: keep every one)",
    "gradient_accumulation_steps": "batching.global_batch_size over the per-device batch and the processes",
    "accelerator_config": "data.streaming: each process reads its own shards (dispatch_batches off)",
}

# TrainingArguments values recipe.yaml and --check show in effect even where nobody set them: the ones a
# recipe most often changes. Every other field keeps Trainer's default.
SHOWN_IN_EFFECT = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "optim",
    "max_grad_norm", "seed", "logging_strategy", "logging_steps", "eval_strategy", "eval_steps", "save_strategy",
    "save_steps", "save_total_limit", "load_best_model_at_end", "metric_for_best_model", "bf16", "fp16", "use_cpu",
    "report_to",
)


def with_best_model_default(kw: dict, data: DataArgs) -> dict:
    """With a validation set evaluated during training, restore the best checkpoint at the end unless the recipe
    says otherwise: checkpoints are then saved at each evaluation (Trainer requires the two to line up)."""
    strategy = kw.get("eval_strategy", "no")
    if strategy == "no" or not data.has_validation() or "load_best_model_at_end" in kw:
        return kw
    if kw.setdefault("save_strategy", strategy) != strategy:
        return kw
    if strategy == "steps":
        eval_steps = kw.get("eval_steps") or kw.get("logging_steps", 500)
        if kw.setdefault("save_steps", eval_steps) % eval_steps:
            return kw
    kw["load_best_model_at_end"] = True
    return kw


def with_checkpoint_limit(kw: dict) -> dict:
    """Keep two checkpoints unless the recipe says how many (`save_total_limit: null` keeps all): with
    load_best_model_at_end, Trainer's rotation always spares the best and the last, so those two are kept;
    otherwise the last two. Unlimited, a checkpoint at every evaluation filled gigabytes on small runs."""
    kw.setdefault("save_total_limit", 2)
    return kw


def early_stopping_problems(reg: RegularizationArgs, kw: dict) -> list[str]:
    if reg.early_stopping_patience is None:
        return []
    if kw.get("eval_strategy", "no") == "no":
        return ["regularization.early_stopping_patience: needs evaluations during training (training.eval_strategy: steps or epoch)"]
    if not kw.get("load_best_model_at_end"):
        return [
            (
                "regularization.early_stopping_patience: needs training.load_best_model_at_end (set it true, with "
                "save_strategy equal to eval_strategy), so the run ends on its best checkpoint"
            )
        ]
    return []


def accelerator_available() -> bool:
    return torch.cuda.is_available() or torch.backends.mps.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def with_device_defaults(kw: dict) -> dict:
    """On a machine without an accelerator, train on the CPU, and across CPU processes with gloo."""
    if "use_cpu" not in kw and not accelerator_available():
        kw["use_cpu"] = True
    if kw.get("use_cpu") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kw.setdefault("ddp_backend", "gloo")
    # The launcher's mixed precision (an accelerate config's mixed_precision) when the recipe names none.
    # TrainingArguments honours it for plain and DDP runs, but a DeepSpeed config built from it says
    # bf16.enabled while bf16 stays false, and Trainer refuses to start on the mismatch.
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched in ("bf16", "fp16") and "bf16" not in kw and "fp16" not in kw:
        kw[launched] = True
    return kw


def data_parallel_size(kw: dict) -> int:
    """The processes (or, in one process, the GPUs) a step's batch is split over: WORLD_SIZE under torchrun or
    accelerate launch; Trainer's DataParallel over every visible GPU otherwise."""
    if "WORLD_SIZE" in os.environ:
        return max(int(os.environ["WORLD_SIZE"]), 1)
    if kw.get("use_cpu") or not torch.cuda.is_available():
        return 1
    return max(torch.cuda.device_count(), 1)


def derive_accumulation(batching: BatchingArgs, kw: dict) -> list[str]:
    """With batching.global_batch_size, set gradient_accumulation_steps so that per-device batch x processes x
    accumulation is that size; the problems when it cannot be."""
    total = batching.global_batch_size
    if total is None or total < 1:
        return []
    if "gradient_accumulation_steps" in kw:
        return [(f"batching.global_batch_size: {total} sets training.gradient_accumulation_steps itself; remove one of the two "
                f"(gradient_accumulation_steps is {kw['gradient_accumulation_steps']})")]
    per_device = kw.get("per_device_train_batch_size", 8)  # TrainingArguments' default
    world = data_parallel_size(kw)
    step = per_device * world
    if total % step:
        lower, upper = total // step * step, (total // step + 1) * step
        choices = " or ".join(str(n) for n in (lower, upper) if n > 0)
        return [(f"batching.global_batch_size: {total} is not a multiple of per_device_train_batch_size {per_device} x {world} "
                f"process{'es' if world > 1 else ''} = {step}; use {choices}, or another per_device_train_batch_size")]
    kw["gradient_accumulation_steps"] = total // step
    return []
