"""`run.py compare OUT1 OUT2 ...`: the runs' settings and metrics side by side, and their validation curves."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import RecipeError
from ..core.tables import markdown_table
from ..evaluation import plots
from ..outputs.folder import read_log_history, read_run
from ..outputs.scores import chosen_metric, split_scores

# Settings that most often explain a difference between two runs.
SETTINGS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "weight_decay", "seed")


def load(folder: str) -> tuple[dict, dict]:
    return read_run(folder)


def names_of(folders: list[str]) -> list[str]:
    """Short column names: the folder names, or the full paths where two folders share a name."""
    short = [Path(f).name or f for f in folders]
    return short if len(set(short)) == len(short) else list(folders)


def compare_table(folders: list[str], split: str | None) -> tuple[list[str], str]:
    runs = [load(f) for f in folders]
    if split is None:
        split = "test" if all(record.get("test") for _, record in runs) else "validation"
    missing = [f for f, (_, record) in zip(folders, runs) if not record.get(split)]
    if missing:
        raise RecipeError(f"--split: {split!r} has no metrics in {', '.join(missing)}")
    columns = names_of(folders)
    rows = [["model", *(f"`{r.get('model', {}).get('name_or_path')}`" for r, _ in runs)]]
    models = [r.get("model") or {} for r, _ in runs]
    rows.append(["model.head", *(m.get("head") or "" for m in models)])
    # A head that trains by its own options (setfit's body_learning_rate, num_iterations...) shows them here,
    # beside the training keys a fine-tuned run sets: a blank training.learning_rate alone would hide its rate.
    for key in dict.fromkeys(k for m in models for k in (m.get("head_options") or {})):
        rows.append([f"model.head_options.{key}", *("" if (v := (m.get("head_options") or {}).get(key)) is None else number(v) for m in models)])
    for key in SETTINGS:
        values = [(r.get("training") or {}).get(key) for r, _ in runs]
        if any(v is not None for v in values):
            rows.append([f"training.{key}", *("" if v is None else number(v) for v in values)])
    rows.append(["wall time (s)", *(seconds(rec.get("wall_time_s")) for _, rec in runs)])
    scores = [split_scores(rec, split) for _, rec in runs]
    for name in dict.fromkeys(k for s in scores for k in s):
        rows.append([f"{split} {name}", *(s.get(name, "") for s in scores)])
    # Each row is one quantity: a learning rate row in scientific notation, a metric row with four decimals.
    return markdown_table(["", *columns], rows, by="row"), split


def number(value):
    """recipe.yaml may hold a rate as text ('1e-05' is a string to PyYAML); shown as the number it is, and a whole
    number (num_train_epochs is a float to TrainingArguments) as an integer: `4`, never `4.0000`."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return int(value)
    return value


def seconds(value):
    """Wall time to a tenth of a second (`62.5`), not with a metric's four decimals."""
    return f"{value:.1f}" if isinstance(value, (int, float)) else ""


def compare_command(args) -> int:
    lines, _ = compare_table(args.runs, args.split)
    print("\n".join(lines))
    if args.plot:
        recipes = [load(f)[0] for f in args.runs]
        metric = args.metric or chosen_metric(recipes[0]) or "loss"
        histories = {name: read_log_history(Path(f)) for name, f in zip(names_of(args.runs), args.runs)}
        if not any(any("eval_loss" in e for e in h) for h in histories.values()):
            print("no validation curves to plot: no run evaluated during training (training.eval_strategy)")
            return 0
        print(f"plot: {plots.compare(histories, metric, Path(args.plot))}")
    return 0
