"""The `sweep:` section: several runs of one recipe that differ in a few keys (`python run.py sweep`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..core.schema import build_kwargs, did_you_mean, not_one_of, show
from .data import DATA_SYNONYMS, DataArgs
from .model import MODEL_SYNONYMS, ModelArgs
from .sections import RegularizationArgs
from .training import TRAINING_SYNONYMS

SWEEP_METHODS = ["grid", "list", "optuna"]


@dataclass
class SpaceArgs:
    """One key's search space under an optuna sweep: a range (low, high) or a list of choices."""

    low: float | None = field(default=None, metadata={"help": "smallest value"})
    high: float | None = field(default=None, metadata={"help": "largest value"})
    log: bool | None = field(default=None, metadata={"help": "sample uniformly in log space; default: true for learning rates"})
    type: str = field(default="float", metadata={"help": "float or int", "choices": ["float", "int"]})
    choices: list | None = field(default=None, metadata={"help": "sample one of these instead of a range (e.g. model names)"})


@dataclass
class SweepArgs:
    """Several runs of one recipe that differ in a few keys, ranked by one validation metric (`python run.py sweep`)."""

    method: str = field(
        default="grid",
        metadata={"help": "grid: every combination of `values`; list: the `trials` as written; optuna: `n_trials` drawn from `space`",
                  "choices": SWEEP_METHODS},
    )
    values: dict = field(
        default_factory=dict, metadata={"help": "grid: section.key -> list of values, e.g. {training.learning_rate: [1.0e-5, 1.0e-4]}"}
    )
    trials: list[dict] | None = field(default=None, metadata={"help": "list: one mapping of section.key -> value per trial"})
    space: dict = field(
        default_factory=dict, metadata={"help": "optuna: section.key -> {low, high, log, type} or {choices: [...]}"}
    )
    n_trials: int = field(default=10, metadata={"help": "optuna: trials to run (a budget, counting finished and pruned ones)"})
    seed: int = field(default=0, metadata={"help": "optuna: sampler seed; the same seed draws the same trials"})
    pruning: bool = field(default=True, metadata={"help": "optuna: stop a trial whose evaluations trail the median of earlier trials"})
    metric: str | None = field(
        default=None, metadata={"help": "validation metric that ranks trials; default: training.metric_for_best_model, else the first metric"}
    )
    direction: str | None = field(
        default=None,
        metadata={"help": "maximize or minimize the metric; default: minimize for loss and ece, else maximize", "choices": ["maximize", "minimize"]},
    )
    output_dir: str | None = field(default=None, metadata={"help": "folder of the sweep (trial-NNN sub-folders); default: training.output_dir"})


# What a sweep may vary: every key of these sections.
SWEEPABLE = {"model": ModelArgs, "data": DataArgs, "training": TrainingArguments, "regularization": RegularizationArgs}


LOWER_IS_BETTER = ("loss", "ece")
SYNONYMS = {"model": MODEL_SYNONYMS, "data": DATA_SYNONYMS, "training": TRAINING_SYNONYMS}


# Mapping keys whose entries a sweep may vary one by one (`model.head_options.body_learning_rate`); the entry's
# name and value are checked where the trial's recipe is built (the head's options dataclass).
NESTED = {"model": ("head_options", "head_config")}


def sweep_key_problem(key) -> str | None:
    section, _, name = str(key).partition(".")
    if section not in SWEEPABLE:
        return f"{show(key)}: {not_one_of(section, list(SWEEPABLE), 'a section a sweep can vary')}"
    name, dot, entry = name.partition(".")
    names = [f.name for f in dataclasses.fields(SWEEPABLE[section]) if f.init]
    if name not in names:
        return f"unknown key{did_you_mean(name, names, SYNONYMS.get(section)) or '.'}"
    if dot and (name not in NESTED.get(section, ()) or not entry or "." in entry):
        nested = ", ".join(f"{section}.{n}.NAME" for n in NESTED.get(section, ())) or "none in this section"
        return f"{section}.{name} is not a mapping a sweep varies entry by entry ({nested})"
    return None


def build_sweep(raw, metric_names: list[str], training_keys: dict, errors: list[str]) -> SweepArgs | None:
    """The sweep's own shape: methods, key paths, value lists and ranges; each trial's values are checked by building it."""
    if raw is None:
        return None
    sweep = SweepArgs(**build_kwargs(SweepArgs, raw, "sweep", errors))
    given = {k for k in (raw if isinstance(raw, dict) else {})}
    wanted = {"grid": "values", "list": "trials", "optuna": "space"}[sweep.method] if sweep.method in SWEEP_METHODS else None
    for other in {"values", "trials", "space"} - {wanted}:
        if other in given:
            errors.append(f"sweep.{other}: not used by method {sweep.method!r}; it takes sweep.{wanted}")
    if wanted and wanted not in given:
        errors.append(f"sweep.{wanted}: required by method {sweep.method!r}")
    for key, values in sweep.values.items():
        problem = sweep_key_problem(key)
        if problem:
            errors.append(f"sweep.values.{key}: {problem}")
        elif not isinstance(values, list) or not values:
            errors.append(f"sweep.values.{key}: expected a non-empty list of values, got {show(values)}")
    for i, trial in enumerate(sweep.trials or []):
        if not isinstance(trial, dict) or not trial:
            errors.append(f"sweep.trials[{i}]: expected a mapping of section.key -> value, got {show(trial)}")
            continue
        errors += [f"sweep.trials[{i}].{k}: {p}" for k in trial if (p := sweep_key_problem(k))]
    if sweep.trials is not None and not sweep.trials:
        errors.append("sweep.trials: an empty list; give one trial or more")
    spaces = {}
    for key, spec in sweep.space.items():
        path = f"sweep.space.{key}"
        problem = sweep_key_problem(key)
        if problem:
            errors.append(f"{path}: {problem}")
            continue
        space = SpaceArgs(**build_kwargs(SpaceArgs, spec, path, errors))
        if space.choices is not None:
            if not space.choices:
                errors.append(f"{path}.choices: an empty list; give one value or more")
            if space.low is not None or space.high is not None:
                errors.append(f"{path}: give choices, or low and high, not both")
        elif space.low is None or space.high is None:
            errors.append(f"{path}: give low and high (or choices)")
        elif space.low > space.high:
            errors.append(f"{path}: low {space.low} is above high {space.high}")
        elif (space.log if space.log is not None else key.endswith("learning_rate")) and space.low <= 0:
            errors.append(f"{path}: low {space.low} must be positive on a log scale")
        if space.log is None:
            space.log = key.endswith("learning_rate") and space.choices is None
        spaces[key] = space
    sweep.space = spaces
    if sweep.method == "optuna" and "space" in given and not sweep.space and not any(e.startswith("sweep.space") for e in errors):
        errors.append("sweep.space: an empty mapping; give one key or more")
    if sweep.n_trials < 1:
        errors.append(f"sweep.n_trials: {sweep.n_trials} must be 1 or more")
    if sweep.metric is None:
        best = training_keys.get("metric_for_best_model")
        sweep.metric = best.removeprefix("eval_") if best else (metric_names[0] if metric_names else "loss")
    elif sweep.metric.removeprefix("eval_") not in ["loss"] + metric_names:
        errors.append(f"sweep.metric: {not_one_of(sweep.metric, ['loss'] + metric_names, 'a computed metric')}")
    sweep.metric = sweep.metric.removeprefix("eval_")
    if sweep.direction is None:
        sweep.direction = "minimize" if sweep.metric in LOWER_IS_BETTER else "maximize"
    return sweep
