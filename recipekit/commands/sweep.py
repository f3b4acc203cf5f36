"""`python run.py sweep RECIPE`: run each trial of the recipe's `sweep:` section and rank them.

Each trial is the recipe with a few keys set, validated like any recipe before the first trial starts, and
trained by run.py's own `fine_tune` in this process into `OUTPUT_DIR/trial-NNN` (a full run: recipe.yaml,
metrics.json, report). A trial folder holding a finished run of the same recipe is skipped, so re-running
a sweep resumes it. Under several processes (torchrun) every rank runs the same trials in the same order;
optuna's draws and pruning decisions are made on rank 0 and broadcast.
"""

from __future__ import annotations

import copy
import gc
import itertools
import json
import shlex
from pathlib import Path

import pandas as pd
import torch
import yaml
from transformers import TrainerCallback

from ..core.errors import RecipeError
from ..core.files import write_atomic, write_json
from ..core.tables import markdown_table
from ..evaluation.plots import new_figure, save
from ..outputs.folder import FINISHED_MARKER
from ..recipe.build import build_recipe, load_recipe

TRIAL_FILE = "sweep_trial.json"  # beside each trial's run: its parameters and its fate in the sweep
LR_KEY, MODEL_KEY = "training.learning_rate", "model.name_or_path"


def trial_recipe(base: dict, params: dict, output_dir: Path, source: str | None):
    raw = copy.deepcopy(base)
    for key, value in params.items():
        section, _, name = key.partition(".")
        name, _, entry = name.partition(".")
        node = raw.setdefault(section, {})
        if entry:  # model.head_options.NAME: one entry of the head's options, the others as the recipe has them
            node[name] = {**(node.get(name) or {}), entry: value}
        else:
            node[name] = value
    raw["training"]["output_dir"] = str(output_dir)
    return build_recipe(raw, source=source)


def planned_trials(sweep) -> list[dict]:
    if sweep.method == "grid":
        keys = list(sweep.values)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep.values[k] for k in keys))]
    return [dict(t) for t in sweep.trials]


def check_trials(base: dict, trials: list[dict], root: Path, source) -> list:
    """Build every trial's recipe; report every bad value of every trial at once, before anything runs."""
    recipes, errors = [], []
    for i, params in enumerate(trials):
        try:
            recipes.append(trial_recipe(base, params, root / f"trial-{i:03d}", source))
        except RecipeError as e:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            errors += [f"sweep trial-{i:03d} ({shown}): {p}" for p in e.problems]
    if errors:
        raise RecipeError(errors)
    return recipes


def space_corners(sweep) -> list[dict]:
    """Trials at the low and high end of every range (and each choice), so a bad bound fails before the search."""
    corners = []
    for key, space in sweep.space.items():
        values = space.choices if space.choices is not None else [space.low, space.high]
        corners += [{key: int(v) if space.type == "int" else v} for v in values]
    return corners


def finished(recipe) -> bool:
    """A finished run of this very recipe; a finished run of a different one is an error, not silently replaced."""
    out = Path(recipe.training.output_dir)
    if not (out / FINISHED_MARKER).exists():
        return False
    # Compared as data: the comments (TrainingArguments values in effect) follow from the recipe and the machine.
    if yaml.safe_load((out / "recipe.yaml").read_text()) != yaml.safe_load(recipe.to_yaml()):
        raise RecipeError(
            f"sweep: {out} holds a finished run of a different recipe (the sweep changed since); "
            "choose another sweep.output_dir or remove that folder"
        )
    return True


def same_on_every_rank(value):
    """Rank 0's value on every process (optuna draws and pruning decisions must agree across ranks)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return value


def sweep_command(args, fine_tune) -> int:
    base = load_recipe(args.recipe, args.overrides)
    sweep = base.sweep
    if sweep is None:
        raise RecipeError(f"sweep: {args.recipe} has no sweep: section; train it with: python run.py {args.recipe}")
    if not base.data.has_validation():
        raise RecipeError(
            "sweep: trials are ranked on a validation set; set data.validation_file, data.validation_split_name or data.validation_split"
        )
    if base.sanity.active:
        raise RecipeError("sanity: a sweep trains full runs; run sanity checks with python run.py RECIPE")
    root = Path(sweep.output_dir or base.training.output_dir)
    raw = base.to_dict()
    raw.pop("sweep")
    is_main = base.training.process_index == 0  # also sets up the process group under torchrun
    if sweep.method == "optuna":
        check_trials(raw, space_corners(sweep), root, args.recipe)
        if args.check:
            print(f"sweep: optuna, {sweep.n_trials} trials over {', '.join(sweep.space)}; every bound validates")
            return 0
        return run_optuna(sweep, raw, root, args.recipe, fine_tune, is_main)
    trials = planned_trials(sweep)
    recipes = check_trials(raw, trials, root, args.recipe)
    done = [finished(r) for r in recipes]
    if args.check:
        print("\n".join(markdown_table(["trial", *trials[0]], [[f"trial-{i:03d}", *t.values()] for i, t in enumerate(trials)])))
        return 0
    for i, (params, recipe) in enumerate(zip(trials, recipes)):
        if done[i]:
            print(f"sweep: trial-{i:03d} already finished, skipped")
            if is_main and not (Path(recipe.training.output_dir) / TRIAL_FILE).exists():
                write_json(Path(recipe.training.output_dir) / TRIAL_FILE, {"params": params, "state": "finished"})
            continue
        status = run_trial(fine_tune, recipe, params, is_main)
        if status != 0:
            return status
        if is_main:
            write_leaderboard(root, sweep, args.recipe)
    if is_main:
        write_leaderboard(root, sweep, args.recipe, announce=True)
    return 0


def run_trial(fine_tune, recipe, params: dict, is_main: bool, callbacks=(), state: str = "finished",
              command: str = "sweep", record: bool = True) -> int:
    """Train one recipe into its folder (an unfinished run there is replaced); `record`: write its sweep_trial.json."""
    out = Path(recipe.training.output_dir)
    print(f"{command}: {out.name}: {', '.join(f'{k}={v}' for k, v in params.items())}")
    unfinished = out.exists() and any(out.iterdir())
    status = fine_tune(recipe, overwrite=unfinished, callbacks=callbacks)
    if status == 0 and is_main and record:
        write_json(out / TRIAL_FILE, {"params": params, "state": state})
    gc.collect()  # the previous trial's model and optimizer state before the next one loads
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return status


class Pruning(TrainerCallback):
    """Report each evaluation to the optuna trial; stop the run when the pruner says it trails earlier trials."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.metric}")
        prune = False
        if self.trial is not None and value is not None:
            self.trial.report(value, state.global_step)
            prune = self.trial.should_prune()
        if same_on_every_rank(prune):
            self.pruned = control.should_training_stop = True


def run_optuna(sweep, raw: dict, root: Path, source, fine_tune, is_main: bool) -> int:
    import optuna

    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if sweep.pruning else optuna.pruners.NopPruner()
    study = optuna.create_study(direction=sweep.direction, sampler=optuna.samplers.TPESampler(seed=sweep.seed), pruner=pruner)
    distributions = {key: distribution(space) for key, space in sweep.space.items()}
    # Resume: the trials already in trial folders join the study as they ended; the search continues from them.
    number = 0
    while (root / f"trial-{number:03d}" / TRIAL_FILE).exists() and number < sweep.n_trials:
        record = json.loads((root / f"trial-{number:03d}" / TRIAL_FILE).read_text())
        state = optuna.trial.TrialState.PRUNED if record["state"] == "pruned" else optuna.trial.TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            params=record["params"], distributions=distributions, state=state,
            value=record.get("value") if state == optuna.trial.TrialState.COMPLETE else None,
        ))
        print(f"sweep: trial-{number:03d} already finished, skipped")
        number += 1
    while number < sweep.n_trials:
        trial = study.ask(distributions) if is_main else None
        params = same_on_every_rank(trial.params if trial is not None else None)
        recipe = trial_recipe(raw, params, root / f"trial-{number:03d}", source)
        pruning = Pruning(trial, sweep.metric)
        status = run_trial(fine_tune, recipe, params, is_main, callbacks=[pruning], state="pruned" if pruning.pruned else "finished")
        if status != 0:
            return status
        if is_main:
            out = Path(recipe.training.output_dir)
            value = json.loads((out / FINISHED_MARKER).read_text())["validation"].get(sweep.metric)
            state = "pruned" if pruning.pruned else "finished"
            write_json(out / TRIAL_FILE, {"params": params, "state": state, "value": value})
            if pruning.pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, value)
            write_leaderboard(root, sweep, source)
        number += 1
    if is_main:
        write_leaderboard(root, sweep, source, announce=True)
    return 0


def distribution(space):
    import optuna

    if space.choices is not None:
        return optuna.distributions.CategoricalDistribution(space.choices)
    if space.type == "int":
        return optuna.distributions.IntDistribution(int(space.low), int(space.high), log=space.log)
    return optuna.distributions.FloatDistribution(space.low, space.high, log=space.log)


def trial_rows(root: Path, metric: str) -> list[dict]:
    rows = []
    for folder in sorted(root.glob("trial-*")):
        if not (folder / TRIAL_FILE).exists() or not (folder / FINISHED_MARKER).exists():
            continue
        trial = json.loads((folder / TRIAL_FILE).read_text())
        record = json.loads((folder / FINISHED_MARKER).read_text())
        validation, train = record.get("validation") or {}, record.get("train") or {}
        rows.append({
            "trial": folder.name,
            "state": trial["state"],
            **trial["params"],
            metric: validation.get(metric),
            **({"loss": validation.get("loss")} if metric != "loss" else {}),
            f"test_{metric}": (record.get("test") or {}).get(metric),
            "parameters_millions": round((record.get("model") or {}).get("parameters", 0) / 1e6, 2),
            "train_time_s": train.get("train_runtime"),
            "eval_examples_per_s": validation.get("samples_per_second"),
            "output_dir": str(folder),
        })
    return rows


def best_row(rows: list[dict], metric: str, direction: str) -> dict | None:
    ranked = [r for r in rows if r["state"] == "finished" and r[metric] is not None]
    if not ranked:
        return None
    return (max if direction == "maximize" else min)(ranked, key=lambda r: r[metric])


def write_leaderboard(root: Path, sweep, source: str, announce: bool = False) -> dict | None:
    """sweep.csv (one row per trial), sweep.md (ranked, with the best trial's command) and sweep.png."""
    metric = sweep.metric
    rows = trial_rows(root, metric)
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    frame = frame.dropna(axis=1, how="all")
    write_atomic(root / "sweep.csv", frame.to_csv(index=False))
    ranked = frame.sort_values(metric, ascending=sweep.direction == "minimize", na_position="last")
    best = best_row(rows, metric, sweep.direction)
    command = None
    lines = [
        f"# Sweep: {root.name}", "",
        f"Recipe `{source}`, method {sweep.method}: {len(rows)} trials, ranked by validation {metric} ({sweep.direction}).",
        "Parameters in millions; eval_examples_per_s is Trainer's validation throughput (batch `per_device_eval_batch_size`, metrics included) beside training: not a prediction speed.", "",
    ]
    shown = [c for c in ranked.columns if c != "output_dir"]
    lines += markdown_table(["rank", *shown], [[i + 1, *row] for i, row in enumerate(ranked[shown].itertuples(index=False))])
    if best:
        command = f"python run.py {shlex.quote(best['output_dir'] + '/recipe.yaml')} training.output_dir={shlex.quote(best['output_dir'] + '-again')}"
        lines += ["", f"Best: **{best['trial']}**, validation {metric} {best[metric]:.4f}. Reproduce it (same recipe, same seed):",
                  "", "```bash", command, "```"]
    plot = plot_sweep(frame, metric, root / "sweep.png")
    if plot:
        lines += ["", f"![validation {metric} per trial]({plot.name})"]
    write_atomic(root / "sweep.md", "\n".join(lines) + "\n")
    if announce:
        print("\n".join(lines[4:]))
        print(f"sweep: {root / 'sweep.md'}, {root / 'sweep.csv'}" + (f", {plot}" if plot else ""))
    return best


def plot_sweep(frame: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """Metric against learning rate (log axis), one line per model; without a learning-rate column, one bar per trial."""
    finished_rows = frame[frame[metric].notna()]
    if finished_rows.empty:
        return None
    fig = new_figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    if LR_KEY in frame and finished_rows[LR_KEY].nunique() > 1:
        groups = finished_rows.groupby(MODEL_KEY) if MODEL_KEY in frame else [("", finished_rows)]
        for model, rows in groups:
            rows = rows.sort_values(LR_KEY)
            ax.plot(rows[LR_KEY], rows[metric], "o-", label=Path(str(model)).name or "trials")
        ax.set_xscale("log")
        ax.set(xlabel="learning rate")
        if MODEL_KEY in frame:
            ax.legend()
    else:
        labels = [Path(str(m)).name for m in finished_rows[MODEL_KEY]] if MODEL_KEY in frame else list(finished_rows["trial"])
        ax.bar(range(len(finished_rows)), finished_rows[metric], tick_label=labels)
    ax.set(title=f"Validation {metric} per trial", ylabel=metric)
    ax.grid(alpha=0.3)
    return save(fig, path)
