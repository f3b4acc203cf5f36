"""Classification metrics computed locally with scikit-learn: no network, no metric scripts.

A recipe's `metrics:` list names entries of `CLASSIFICATION`. Any other name is tried as
`module:function` (a function of the user's own, called as fn(y_true, y_pred, probs) and returning a
number or a dict of numbers) and then as an `evaluate.load(name)` metric, which needs the Hub once.

Every entry is called as fn(y_true, y_pred, probs, labels): integer gold ids, integer predicted ids
(the argmax), an (n, n_labels) array of probabilities, and the label names. What Trainer hands
`compute_metrics` is already gathered across processes with the padding of the last batch dropped
(`accelerate`'s gather_for_metrics), so every example counts once.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys

import numpy as np

from ..core.errors import RecipeError
from ..core.lazy import skm
from ..core.schema import Problem, did_you_mean, show

# 15 equal-width confidence bins: the usual choice since Guo et al. (2017), "On Calibration of Modern Neural Networks".
ECE_BINS = 15


def _average(n_labels: int) -> str:
    # Two classes: the usual binary score of the second label (id 1, e.g. "positive"); more: unweighted mean.
    return "binary" if n_labels == 2 else "macro"


def _one_vs_rest(score, y_true, probs) -> float | None:
    """Binary: `score` of the second label. More: the mean over the classes present in gold of `score` one-vs-rest.

    None when undefined: a single class in gold has no negatives (or no positives) to rank against.
    """
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if probs.shape[1] == 2:
        return float(score(y_true == 1, probs[:, 1]))
    return float(np.mean([score(y_true == c, probs[:, c]) for c in present]))


def roc_auc(y_true, probs) -> float | None:
    """Binary ROC-AUC, or one-vs-rest macro over the classes present; None when undefined (one class in gold)."""
    return _one_vs_rest(skm.roc_auc_score, y_true, probs)


def pr_auc(y_true, probs) -> float | None:
    """Area under the precision-recall curve as average precision (step-wise, no interpolation); same averaging as roc_auc."""
    return _one_vs_rest(skm.average_precision_score, y_true, probs)


def expected_calibration_error(y_true, probs, bins: int = ECE_BINS) -> float:
    """Mean gap between confidence (top probability) and accuracy over equal-width bins, weighted by bin size.

    0 is perfectly calibrated; a model that says 0.9 and is right 70% of the time adds 0.2 for those examples.
    """
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == y_true
    # Same bin edges as sklearn.calibration.calibration_curve(strategy="uniform"), so the two agree.
    which = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], confidence)
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total / len(y_true))


def per_class(y_true, y_pred, labels) -> list[dict]:
    """One row per label: precision, recall, F1 and support (gold count); a label never predicted scores 0 precision."""
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=range(len(labels)), zero_division=0)
    return [
        {"label": name, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(labels)
    ]


def binary_scores(y_true, y_pred) -> dict[str, float]:
    """Precision, recall and F1 of the positive class of 0/1 gold and predictions (0 where undefined)."""
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="binary", labels=[1], zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def confusion(y_true, y_pred, labels) -> np.ndarray:
    """Counts: row = gold label, column = predicted label, every label present even when unused."""
    return skm.confusion_matrix(y_true, y_pred, labels=range(len(labels)))


def _per_class_scores(y, p, pr, labels) -> dict[str, float]:
    return {f"{k}_{row['label']}": row[k] for row in per_class(y, p, labels) for k in ("precision", "recall", "f1", "support")}


def _confusion_scores(y, p, pr, labels) -> dict[str, int]:
    matrix = confusion(y, p, labels)
    return {f"confusion_{gold}_as_{pred}": int(matrix[i, j]) for i, gold in enumerate(labels) for j, pred in enumerate(labels)}


def _averaged(score: str, average):
    def fn(y, p, pr, labels):  # the scikit-learn function is looked up at the call: importing it costs 0.9 s
        avg = average or _average(len(labels))
        return getattr(skm, score)(y, p, average=avg, labels=range(len(labels)), zero_division=0)

    return fn


CLASSIFICATION = {
    "accuracy": lambda y, p, pr, labels: skm.accuracy_score(y, p),
    "balanced_accuracy": lambda y, p, pr, labels: skm.balanced_accuracy_score(y, p),
    # precision/recall/f1: binary (of the second label) for two labels, macro for more.
    "precision": _averaged("precision_score", None),
    "recall": _averaged("recall_score", None),
    "f1": _averaged("f1_score", None),
    **{
        f"{name}_{average}": _averaged(f"{name}_score", average)
        for name in ("precision", "recall", "f1")
        for average in ("macro", "micro", "weighted")
    },
    "mcc": lambda y, p, pr, labels: skm.matthews_corrcoef(y, p),
    "roc_auc": lambda y, p, pr, labels: roc_auc(y, pr),
    "pr_auc": lambda y, p, pr, labels: pr_auc(y, pr),
    "log_loss": lambda y, p, pr, labels: skm.log_loss(y, pr, labels=range(len(labels))),
    "ece": lambda y, p, pr, labels: expected_calibration_error(y, pr),
    # Flat dicts of numbers (so Trainer can log them): precision_<label>, ..., and confusion_<gold>_as_<predicted>.
    "per_class": _per_class_scores,
    "confusion_matrix": _confusion_scores,
}
DEFAULT_CLASSIFICATION = ["accuracy", "precision", "recall", "f1", "roc_auc"]
# What `evaluate`, the report and the model card show: every scalar built-in.
FULL_CLASSIFICATION = [name for name in CLASSIFICATION if name not in ("per_class", "confusion_matrix")]


def takes_three(fn) -> bool:
    """Whether fn can be called as fn(y_true, y_pred, probs): `os:system` is callable, but not like that."""
    try:
        inspect.signature(fn).bind(None, None, None)
    except (TypeError, ValueError):
        return False
    return True


def checked_value(name: str, value):
    """A custom metric's result as Trainer can log it: a number, or a dict of numbers."""
    def is_number(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    if is_number(value) or value is None or (isinstance(value, dict) and all(is_number(v) or v is None for v in value.values())):
        return value
    raise RecipeError(f"metrics: {name!r} returned {show(value)}; a metric returns a number or a dict of numbers")


def resolve(name: str):
    """Return a callable fn(y_true, y_pred, probs, labels) -> number | dict | None, or raise Problem."""
    if name in CLASSIFICATION:
        return CLASSIFICATION[name]
    if ":" in name:
        module, _, func = name.partition(":")
        # Like `python -m`: a module in the folder the command runs from is found (run.py's own folder is not it).
        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            raise Problem(f"{name!r}: cannot import {func!r} from module {module!r} ({e})") from None
        if not callable(fn) or not takes_three(fn):
            raise Problem(f"{name!r}: {func!r} in module {module!r} is not a function of (y_true, y_pred, probs)")
        return lambda y, p, pr, labels: checked_value(name, fn(y, p, pr))
    hint = did_you_mean(name, CLASSIFICATION)
    builtins = ", ".join(CLASSIFICATION)
    if hint:
        raise Problem(f"{name!r} is not a built-in metric{hint} Built-ins: {builtins}")
    try:
        import evaluate

        metric = evaluate.load(name)
    except Exception as e:  # noqa: BLE001  evaluate raises many types (network, missing script); all mean "not available"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Problem(
            f"{name!r} is not a built-in metric (built-ins: {builtins}) and evaluate.load({name!r}) failed, "
            f"which needs the network the first time: {first}"
        ) from None
    return lambda y, p, pr, labels: metric.compute(predictions=p, references=y)


def softmax(logits: np.ndarray) -> np.ndarray:
    # float64: float32 probabilities can miss summing to 1 by more than log_loss tolerates.
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def classification_scores(names, y_true, probs, labels: list[str] | None = None, y_pred=None) -> dict[str, float | None]:
    """The named metrics for gold ids and probabilities; an undefined value (e.g. ROC-AUC with one gold class) is None.

    `y_pred` is the head's decision (a tuned threshold for the binary head); default: the most probable label."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=-1) if y_pred is None else np.asarray(y_pred)
    labels = list(labels) if labels is not None else [str(i) for i in range(probs.shape[1])]
    out = {}
    for name in names:
        value = resolve(name)(y_true, y_pred, probs, labels)
        if isinstance(value, dict):
            out.update({k: _number(v) for k, v in value.items()})
        else:
            out[name] = _number(value)
    return out


def classification_details(y_true, probs, labels: list[str], y_pred=None) -> dict:
    """Everything the report and `evaluate` show for one split: every scalar metric, the per-class table, the
    confusion matrix, all with the head's decision `y_pred` (default: the most probable label)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(probs).argmax(axis=-1) if y_pred is None else np.asarray(y_pred)
    return {
        "scores": classification_scores(FULL_CLASSIFICATION, y_true, probs, labels, y_pred),
        "per_class": per_class(y_true, y_pred, labels),
        "confusion_matrix": confusion(y_true, y_pred, labels).tolist(),
    }


def _number(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def regression_scores(y_true, y_pred) -> dict[str, float | None]:
    from scipy import stats

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    # Correlations are undefined when either side is constant (e.g. a model that predicts one value).
    varied = np.ptp(y_true) > 0 and np.ptp(y_pred) > 0
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "pearson": float(stats.pearsonr(y_true, y_pred)[0]) if varied else None,
        "spearman": float(stats.spearmanr(y_true, y_pred)[0]) if varied else None,
        "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else None,
    }


REGRESSION = ["rmse", "mae", "pearson", "spearman", "r2"]
MULTI_LABEL = ["f1_micro", "f1_macro", "subset_accuracy", "roc_auc_macro", "f1_per_label"]
TOKENS = ["precision", "recall", "f1", "accuracy"]
GENERATION = ["rouge1", "rouge2", "rougeL"]


def multi_label_scores(y_true, probs, thresholds, labels: list[str]) -> dict[str, float | None]:
    """y_true (rows, labels) of 0/1; probs the sigmoid outputs; thresholds one per label (or one for all)."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = (probs >= np.asarray(thresholds)).astype(int)
    # ROC-AUC per label is defined only where validation holds both classes of that label; average those.
    aucs = [skm.roc_auc_score(y_true[:, j], probs[:, j]) for j in range(y_true.shape[1]) if 0 < y_true[:, j].sum() < len(y_true)]
    out = {
        "f1_micro": float(skm.f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "subset_accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "roc_auc_macro": float(np.mean(aucs)) if aucs else None,
    }
    per_label = skm.f1_score(y_true, y_pred, average=None, zero_division=0)
    out["f1_per_label"] = {f"f1_label_{name}": float(v) for name, v in zip(labels, per_label)}
    return out


def best_f1_threshold(y_true, scores) -> float:
    """The cut on `scores` that maximises F1 of the positive class (0.5 when the class never occurs)."""
    y_true = np.asarray(y_true).astype(int)
    if y_true.sum() == 0:
        return 0.5
    precision, recall, cuts = skm.precision_recall_curve(y_true, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    # The last precision/recall pair has no threshold; a cut equal to a score predicts that row positive.
    return float(cuts[int(np.argmax(f1[:-1]))])


def _chunk_ends(prev_tag, tag, prev_type, type_) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_tag, tag, prev_type, type_) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) spans under seqeval's default (conlleval) rules: an I- after O starts an entity."""
    out, prev_tag, prev_type, begin = [], "O", "", 0
    for i, chunk in enumerate(list(tags) + ["O"]):
        tag = chunk[0] if chunk else "O"
        type_ = chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            out.append((prev_type, begin, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return out


def entity_scores(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 (an entity counts only with exact type and span) and tag accuracy."""
    gold = {(s, *e) for s, tags in enumerate(true_tags) for e in entities(tags)}
    pred = {(s, *e) for s, tags in enumerate(pred_tags) for e in entities(tags)}
    hit = len(gold & pred)
    precision = hit / len(pred) if pred else 0.0
    recall = hit / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    flat_true = [t for tags in true_tags for t in tags]
    flat_pred = [t for tags in pred_tags for t in tags]
    accuracy = sum(a == b for a, b in zip(flat_true, flat_pred)) / max(len(flat_true), 1)
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}


def rouge_scores(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (Google's `rouge-score`, no stemming), as fractions in [0, 1]."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(GENERATION, use_stemmer=False)
    totals = dict.fromkeys(GENERATION, 0.0)
    for ref, pred in zip(references, predictions):
        for name, score in scorer.score(ref, pred).items():
            totals[name] += score.fmeasure
    return {name: total / max(len(references), 1) for name, total in totals.items()}


def strip_prefix(metrics: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in metrics.items()}
