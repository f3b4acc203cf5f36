"""The run report (`report.md` with PNG plots) and the Hugging Face model card (`README.md`) of a finished run.

Both are built from what the run already wrote or computed: the resolved recipe, metrics.json's record,
Trainer's `trainer_state.json` log history, and each labelled split's (label_ids, predictions). What is
task-specific comes from the head: `head.evaluation` (scores and tables, with the run's decision rule),
`head.plots` (PNG files) and `head.decision_rule()`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.files import write_atomic
from ..core.tables import format_values, markdown_table
from ..data.report import format_report
from ..evaluation import plots
from .card import model_card
from .checkpoints import kept_text, stopped_text
from .scores import chosen_metric, metrics_table, split_scores, teacher_text

PLOTS = "plots"


def report_split(outputs: dict) -> str | None:
    """The split whose per-class table and plots the report shows: test when it has labels, else validation."""
    return "test" if "test" in outputs else ("validation" if "validation" in outputs else None)


def read_log_history(output_dir: Path) -> list[dict]:
    state = output_dir / "trainer_state.json"
    return json.loads(state.read_text())["log_history"] if state.exists() else []


def loss_gap(log_history: list[dict]) -> list[tuple[int, float, float]]:
    """(step, training loss, validation loss) at each evaluation; the training loss is the mean of the logs
    since the previous evaluation, so one noisy batch does not make a gap."""
    rows, window = [], []
    for entry in log_history:
        if "loss" in entry:
            window.append(entry["loss"])
        elif "eval_loss" in entry and window:
            rows.append((entry["step"], sum(window) / len(window), entry["eval_loss"]))
            window = []
    return rows


def overfitting(gap: list[tuple[int, float, float]], tolerance: float = 0.02) -> bool | None:
    """Did validation loss rise from its lowest point while training loss kept falling? None: too few evaluations.

    `tolerance` is relative: a rise under 2% of the lowest validation loss is read as noise.
    """
    if len(gap) < 2:
        return None
    low = min(range(len(gap)), key=lambda i: gap[i][2])
    (_, train, valid), (_, low_train, low_valid) = gap[-1], gap[low]
    return low < len(gap) - 1 and valid > low_valid * (1 + tolerance) and train < low_train


def overfitting_verdict(gap: list[tuple[int, float, float]], tolerance: float = 0.02) -> str:
    """In words: did validation loss rise from its lowest point while training loss kept falling?"""
    if len(gap) < 2:
        return "Too few evaluations to judge overfitting (evaluate at least twice: training.eval_strategy)."
    low = min(range(len(gap)), key=lambda i: gap[i][2])
    step, train, valid = gap[-1]
    low_step, low_train, low_valid = gap[low]
    if overfitting(gap, tolerance):
        return (
            f"**Likely overfitting**: validation loss rose from {low_valid:.4f} (step {low_step}) to {valid:.4f} (step {step}) "
            f"while training loss fell from {low_train:.4f} to {train:.4f}. The best checkpoint is the one to keep "
            "(training.load_best_model_at_end); more data, regularization.early_stopping_patience, weight decay, "
            "dropout or fewer epochs would help."
        )
    return (
        f"No sign of overfitting: validation loss at the last evaluation ({valid:.4f}, step {step}) is within "
        f"{tolerance:.0%} of its lowest ({low_valid:.4f}, step {low_step}) or training loss did not fall meanwhile."
    )


def overfitting_section(log_history: list[dict]) -> list[str]:
    gap = loss_gap(log_history)
    if not gap:
        return []
    lines = ["## Training vs validation", "", overfitting_verdict(gap), ""]
    rows = [[step, train, valid, valid - train] for step, train, valid in gap]
    return lines + markdown_table(["step", "training loss", "validation loss", "gap"], rows) + [""]


def write_report(output_dir: str, recipe: dict, head, record: dict, outputs: dict, plots_on: bool = True) -> list[Path]:
    """Write the plots (unless `report.plots: false`), report.md and README.md; return the paths written."""
    out = Path(output_dir)
    split = report_split(outputs)
    label_ids = outputs[split][0] if split else None
    figures = draw_figures(out, recipe, head, outputs, split) if plots_on else []
    markdown = report_markdown(out.name, recipe, record, head, split, figures, out, label_ids)
    if not plots_on:
        markdown += "\n## Plots\n\nNot drawn: the recipe sets `report.plots: false`.\n"
    write_atomic(out / "report.md", markdown)
    write_atomic(out / "README.md", model_card(out.name, recipe, record, head, split))
    return [out / "report.md", out / "README.md"] + [path for _, path in figures]


def draw_figures(out: Path, recipe: dict, head, outputs: dict, split: str | None) -> list[tuple[str, Path]]:
    """The training curves, the generalisation gap and the head's own figures of the reported split."""
    folder = out / PLOTS
    history = read_log_history(out)
    figures = plots.curves(history, chosen_metric(recipe), folder)
    gap = loss_gap(history)
    if gap:
        figures.append(("Generalisation gap", plots.gap(gap, folder / "gap.png")))
    if split:
        label_ids, predictions = outputs[split]
        figures += head.plots(label_ids, predictions, folder, split)
    return figures


def recipe_summary(recipe: dict, record: dict) -> list[str]:
    model, data, training = recipe.get("model", {}), recipe.get("data", {}), recipe.get("training", {})
    source = data.get("dataset") or ", ".join(f"{k.removesuffix('_file')}: `{v}`" for k, v in data.items() if k.endswith("_file") and v)
    steps = [next(iter(s)) if isinstance(s, dict) else s for s in recipe.get("preprocess") or []]
    rows = [
        ["model", f"`{model.get('name_or_path') or model.get('family')}` ({model.get('head')}, {model.get('init', 'pretrained')})"],
        *([["teacher", teacher_text(model)]] if model.get("teacher") else []),
        ["data", source],
        ["text columns / label", f"{', '.join(data.get('text_columns', []))} / {data.get('label_column')}"],
        ["labels", ", ".join(record.get("labels", []))],
        ["decision rule", record.get("decision_rule") or "none"],
        ["preprocessing", ", ".join(steps) or "none"],
        ["metrics", ", ".join(recipe.get("metrics") or [])],
        *[[f"training.{k}", f"`{v}`"] for k, v in training.items() if k not in ("output_dir", "report_to")],
        *([["batch", batch_text(record["manifest"]["batch"])]] if (record.get("manifest") or {}).get("batch") else []),
        ["wall time", f"{record.get('wall_time_s')} s"],
        ["versions", ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items())],
    ]
    return markdown_table(["setting", "value"], rows) + ["", "The full resolved recipe is [recipe.yaml](recipe.yaml)."]


def batch_text(batch: dict) -> str:
    return (f"{batch['global']} examples per optimizer step = {batch['per_device']} per device x {batch['processes']} "
            f"process(es) x {batch['gradient_accumulation_steps']} accumulated")


def data_section(report: dict) -> list[str]:
    """Rows and labels per split as a table, then the data pipeline's own report (steps, reasons, token lengths)."""
    lines = []
    sizes, counts = report.get("sizes") or {}, report.get("labels") or {}
    if sizes:
        labels = list(dict.fromkeys(name for split in counts.values() for name in split))
        rows = [[split, n, *(counts.get(split, {}).get(name, "") for name in labels)] for split, n in sizes.items()]
        lines += markdown_table(["split", "rows", *labels], rows) + [""]
    lines += ["```text", format_report(report), "```", "", "The same numbers as JSON: [data_report.json](data_report.json).", ""]
    return lines


def baseline(head, record: dict, metric: str, label_ids) -> tuple[float | None, str] | None:
    """The headline metric of the simplest honest predictor on the same gold labels, and what it was, as the head
    defines it (classification: always the training split's most frequent class; regression: always the training
    mean). None when the head has none, or the metric cannot be computed for a constant prediction."""
    try:
        return head.baseline(record, metric, np.asarray(label_ids))
    except Exception:  # noqa: BLE001 - a custom or evaluate metric may refuse a constant prediction: no baseline then
        return None


def overfitting_line(gap) -> str:
    verdict = overfitting(gap)
    if verdict is None:
        return "too few evaluations to judge (evaluate at least twice)"
    low = min(gap, key=lambda g: g[2])
    if verdict:
        return f"likely: validation loss rose from {low[2]:.4f} (step {low[0]}) to {gap[-1][2]:.4f} (step {gap[-1][0]}) while training loss fell"
    return f"none seen: validation loss at the last evaluation (step {gap[-1][0]}) was {gap[-1][2]:.4f}, within 2% of its lowest ({low[2]:.4f}, step {low[0]})"


def summary_lines(recipe: dict, record: dict, outputs_split: str | None, label_ids, log_history: list[dict], head) -> list[str]:
    """The three lines report.md opens with: the task, the headline metric beside its baseline, the overfitting verdict."""
    model, data = recipe.get("model") or {}, recipe.get("data") or {}
    source = data.get("dataset") or Path(str(data.get("train_file") or "local files")).name
    labels = record.get("labels") or []
    classes = f", {len(labels)} classes" if labels and head.labels_are_classes else ""
    task = f"`{model.get('head')}` on {source}{classes}, from `{model.get('name_or_path') or model.get('family')}`"
    split = "test" if record.get("test") else "validation" if record.get("validation") else None
    metric = chosen_metric(recipe)
    scores = split_scores(record, split) if split else {}
    if metric not in scores:
        metric = next((k for k in scores if k != "loss"), "loss" if "loss" in scores else None)
    if metric is None:
        headline = "no labelled validation or test split"
    else:
        value = scores.get(metric)
        headline = f"{split} {metric} {format_values([value])[0]}"
        base = baseline(head, record, metric, label_ids) if label_ids is not None and outputs_split == split else None
        if base is not None:
            headline += f" vs {format_values([base[0]])[0]} for {base[1]}"
        else:
            headline += " (no baseline for this head)"
    lines = [
        f"- **Task**: {task}",
        f"- **Result**: {headline}",
        f"- **Overfitting**: {overfitting_line(loss_gap(log_history))}",
    ]
    if record.get("stopped_early"):
        lines.append(f"- **Training**: {stopped_text(record['stopped_early'])}")
    if record.get("kept_checkpoint"):
        # Otherwise the validation scores (the restored checkpoint's) seem to contradict the last evaluation's.
        lines.append(f"- **Model kept**: {kept_text(record['kept_checkpoint'])}; the run's model and every score in this report are this checkpoint's")
    return lines


def report_markdown(name: str, recipe: dict, record: dict, head, split: str | None, figures, out: Path, label_ids=None) -> str:
    lines = [f"# Run report: {name}", ""] + summary_lines(recipe, record, split, label_ids, read_log_history(out), head) + [""]
    lines += ["## Recipe", ""] + recipe_summary(recipe, record) + [""]
    if record.get("data"):
        lines += ["## Data", ""] + data_section(record["data"])
    note = (
        "Every built-in metric of the head on each labelled split; `undefined` where a metric cannot be "
        "computed (e.g. ROC-AUC when gold labels hold one class)."
    )
    lines += ["## Metrics", "", note, ""] + metrics_table(record) + [""]
    lines += overfitting_section(read_log_history(out))
    evaluation = (record.get("evaluation") or {}).get(split) or {}
    if evaluation.get("per_class"):
        header = list(evaluation["per_class"][0])
        lines += [f"## Per class ({split})", ""] + markdown_table(header, [list(r.values()) for r in evaluation["per_class"]]) + [""]
    if figures:
        lines += ["## Plots", ""]
        for title, path in figures:
            lines += [f"### {title}", "", f"![{title}]({path.relative_to(out).as_posix()})", ""]
    return "\n".join(lines)
