"""What a finished run's metrics.json says, read the same way by the report, the model card and compare."""

from __future__ import annotations

from ..core.tables import markdown_table

# Throughput and timing keys Trainer adds to evaluation metrics: not model quality, left out of tables.
_TIMING = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def chosen_metric(recipe: dict) -> str | None:
    best = (recipe.get("training") or {}).get("metric_for_best_model")
    if best:
        return best.removeprefix("eval_")
    names = [m for m in recipe.get("metrics") or [] if m not in ("per_class", "confusion_matrix")]
    return names[0] if names else None


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


def teacher_text(model: dict) -> str:
    return (f"`{model['teacher']}`: the loss is {1 - model['teacher_weight']:g} x the gold labels' + {model['teacher_weight']:g} x "
            f"the teacher's term (temperature {model['teacher_temperature']:g})")
