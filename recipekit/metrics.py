"""Classification metrics computed locally with scikit-learn: no network, no metric scripts.

A recipe's `metrics:` list names entries of `CLASSIFICATION`. Any other name is tried as
`module:function` (a function of the user's own, called as fn(y_true, y_pred, probs) and returning a
number or a dict of numbers) and then as an `evaluate.load(name)` metric, which needs the Hub once.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
from sklearn import metrics as skm

from .schema import Problem, did_you_mean


def _average(n_labels: int) -> str:
    # Two classes: the usual binary score of the second label (id 1, e.g. "positive"); more: unweighted mean.
    return "binary" if n_labels == 2 else "macro"


def roc_auc(y_true, probs) -> float | None:
    """Binary ROC-AUC, or one-vs-rest macro over the classes present; None when undefined (one class in gold)."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(y_true, probs[:, 1]))
    return float(np.mean([skm.roc_auc_score(y_true == c, probs[:, c]) for c in present]))


CLASSIFICATION = {
    "accuracy": lambda y, p, pr, n: skm.accuracy_score(y, p),
    "balanced_accuracy": lambda y, p, pr, n: skm.balanced_accuracy_score(y, p),
    "precision": lambda y, p, pr, n: skm.precision_score(y, p, average=_average(n), labels=range(n), zero_division=0),
    "recall": lambda y, p, pr, n: skm.recall_score(y, p, average=_average(n), labels=range(n), zero_division=0),
    "f1": lambda y, p, pr, n: skm.f1_score(y, p, average=_average(n), labels=range(n), zero_division=0),
    "f1_macro": lambda y, p, pr, n: skm.f1_score(y, p, average="macro", labels=range(n), zero_division=0),
    "f1_micro": lambda y, p, pr, n: skm.f1_score(y, p, average="micro", labels=range(n), zero_division=0),
    "f1_weighted": lambda y, p, pr, n: skm.f1_score(y, p, average="weighted", labels=range(n), zero_division=0),
    "mcc": lambda y, p, pr, n: skm.matthews_corrcoef(y, p),
    "roc_auc": lambda y, p, pr, n: roc_auc(y, pr),
    "log_loss": lambda y, p, pr, n: skm.log_loss(y, pr, labels=range(n)),
}
DEFAULT_CLASSIFICATION = ["accuracy", "precision", "recall", "f1", "roc_auc"]


def resolve(name: str):
    """Return a callable fn(y_true, y_pred, probs, n_labels) -> number | dict | None, or raise Problem."""
    if name in CLASSIFICATION:
        return CLASSIFICATION[name]
    if ":" in name:
        module, _, func = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            raise Problem(f"{name!r}: cannot import {func!r} from module {module!r} ({e})") from None
        return lambda y, p, pr, n: fn(y, p, pr)
    hint = did_you_mean(name, CLASSIFICATION)
    builtins = ", ".join(CLASSIFICATION)
    if hint:
        raise Problem(f"{name!r} is not a built-in metric{hint} Built-ins: {builtins}")
    try:
        import evaluate

        metric = evaluate.load(name)
    except Exception as e:  # evaluate raises many types (network, missing script); all mean "not available"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Problem(
            f"{name!r} is not a built-in metric (built-ins: {builtins}) and evaluate.load({name!r}) failed, "
            f"which needs the network the first time: {first}"
        ) from None
    return lambda y, p, pr, n: metric.compute(predictions=p, references=y)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def classification_scores(names: list[str], y_true, probs) -> dict[str, float | None]:
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=-1)
    n = probs.shape[1]
    out = {}
    for name in names:
        value = resolve(name)(y_true, y_pred, probs, n)
        if isinstance(value, dict):
            out.update({k: _number(v) for k, v in value.items()})
        else:
            out[name] = _number(value)
    return out


def _number(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
