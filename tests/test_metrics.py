"""Every built-in classification metric equals scikit-learn's own computation on random inputs."""

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.preprocessing import label_binarize

from recipekit.core.schema import Problem
from recipekit.evaluation.metrics import (
    CLASSIFICATION,
    DEFAULT_CLASSIFICATION,
    FULL_CLASSIFICATION,
    classification_details,
    classification_scores,
    expected_calibration_error,
    resolve,
)


def random_case(seed: int, n_labels: int, n: int = 200, absent_from_predictions: bool = True):
    """Gold labels covering every class; probabilities whose argmax never picks the last class (when asked)."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(n_labels), rng.integers(0, n_labels, n - n_labels)])
    probs = rng.dirichlet(np.ones(n_labels), size=n)
    if absent_from_predictions:
        # Below the largest other probability, so never the argmax; renormalising keeps the order.
        probs[:, -1] = probs[:, :-1].max(axis=1) * rng.uniform(0, 0.99, n)
        probs /= probs.sum(axis=1, keepdims=True)
    return y, probs


def reference(y, probs, n_labels: int) -> dict:
    """The same metrics, written directly against scikit-learn's API."""
    pred = probs.argmax(axis=1)
    labels = list(range(n_labels))
    binary = n_labels == 2
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "mcc": skm.matthews_corrcoef(y, pred),
        "log_loss": skm.log_loss(y, probs, labels=labels),
    }
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        out[name] = fn(y, pred, average="binary" if binary else "macro", labels=labels, zero_division=0)
        for average in ("macro", "micro", "weighted"):
            out[f"{name}_{average}"] = fn(y, pred, average=average, labels=labels, zero_division=0)
    if binary:
        out["roc_auc"] = skm.roc_auc_score(y, probs[:, 1])
        out["pr_auc"] = skm.average_precision_score(y, probs[:, 1])
    else:
        out["roc_auc"] = skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels)
        out["pr_auc"] = skm.average_precision_score(label_binarize(y, classes=labels), probs, average="macro")
    # ECE from sklearn's calibration_curve on "is the top prediction right" against the top probability.
    confidence, correct = probs.max(axis=1), (pred == y).astype(int)
    acc, conf = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 16)[1:-1], confidence), minlength=15)
    out["ece"] = float(np.sum(counts[counts > 0] * np.abs(acc - conf)) / len(y))
    return out


@pytest.mark.parametrize("n_labels", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_metric_equals_sklearn(seed, n_labels):
    # Binary with odd seeds and every multi-class case: the last class is never predicted.
    absent = n_labels > 2 or seed % 2 == 1
    y, probs = random_case(seed, n_labels, absent_from_predictions=absent)
    assert (n_labels - 1 not in probs.argmax(axis=1)) == absent
    got = classification_scores(FULL_CLASSIFICATION, y, probs)
    want = reference(y, probs, n_labels)
    assert set(got) == set(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("n_labels", [2, 4])
def test_per_class_and_confusion_matrix_equal_sklearn(n_labels):
    y, probs = random_case(7, n_labels)
    pred = probs.argmax(axis=1)
    names = [f"c{i}" for i in range(n_labels)]
    details = classification_details(y, probs, names)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(n_labels), zero_division=0)
    assert [row["label"] for row in details["per_class"]] == names
    assert [row["precision"] for row in details["per_class"]] == pytest.approx(p)
    assert [row["recall"] for row in details["per_class"]] == pytest.approx(r)
    assert [row["f1"] for row in details["per_class"]] == pytest.approx(f)
    assert [row["support"] for row in details["per_class"]] == s.tolist()
    assert details["per_class"][-1]["precision"] == 0.0  # never predicted: 0, not a crash or NaN
    assert details["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(n_labels)).tolist()
    assert sum(map(sum, details["confusion_matrix"])) == len(y)
    # The same numbers as flat registry entries, loggable by Trainer.
    flat = classification_scores(["per_class", "confusion_matrix"], y, probs, names)
    assert flat["f1_c0"] == pytest.approx(f[0])
    assert flat["support_c1"] == s[1]
    assert flat["confusion_c0_as_c1"] == details["confusion_matrix"][0][1]


@pytest.mark.parametrize("n_labels", [2, 3])
def test_auc_with_one_gold_class_is_undefined_not_a_crash(n_labels):
    y = np.zeros(20, dtype=int)
    probs = np.random.default_rng(0).dirichlet(np.ones(n_labels), size=20)
    got = classification_scores(FULL_CLASSIFICATION, y, probs)
    assert got["roc_auc"] is None and got["pr_auc"] is None
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(axis=1)))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=range(n_labels)))


def test_multiclass_auc_averages_the_classes_present_in_gold():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 100)  # class 3 of 4 never occurs in gold: its one-vs-rest AUC is undefined
    probs = rng.dirichlet(np.ones(4), size=100)
    want = np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in range(3)])
    assert classification_scores(["roc_auc"], y, probs)["roc_auc"] == pytest.approx(want)


def test_ece_on_a_hand_counted_case():
    # Ten predictions at confidence 0.9, seven right: |0.7 - 0.9| = 0.2. Ten at 0.6, six right: 0.
    probs = np.array([[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 10)
    y = np.array([0] * 7 + [1] * 3 + [1] * 6 + [0] * 4)
    assert expected_calibration_error(y, probs) == pytest.approx((10 * 0.2 + 10 * 0.0) / 20)


def test_user_metric_by_module_and_function(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(
        "def positive_rate(y_true, y_pred, probs):\n"
        "    return float((y_pred == 1).mean())\n"
        "def both(y_true, y_pred, probs):\n"
        "    return {'hits': int((y_true == y_pred).sum()), 'mean_top_prob': float(probs.max(axis=1).mean())}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    got = classification_scores(["accuracy", "my_metrics:positive_rate", "my_metrics:both"], y, probs)
    assert got == {"accuracy": 0.5, "my_metrics:positive_rate": 0.5, "hits": 2, "mean_top_prob": pytest.approx(0.75)}
    with pytest.raises(Problem, match="cannot import 'nope' from module 'my_metrics'"):
        resolve("my_metrics:nope")


def test_registry_names_are_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "evaluation.md").read_text()
    for name in CLASSIFICATION:
        assert f"`{name}`" in doc, name


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_labels", [2, 4])
def test_default_metrics_equal_sklearn(seed, n_labels):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_labels, 200)
    probs = rng.dirichlet(np.ones(n_labels), 200)
    pred = probs.argmax(1)
    got = classification_scores(DEFAULT_CLASSIFICATION, y, probs)
    avg = "binary" if n_labels == 2 else "macro"
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred, average=avg, zero_division=0))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred, average=avg))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average=avg))
    auc = skm.roc_auc_score(y, probs[:, 1]) if n_labels == 2 else skm.roc_auc_score(y, probs, multi_class="ovr")
    assert got["roc_auc"] == pytest.approx(auc)


def test_roc_auc_with_a_single_gold_class_is_undefined():
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    got = classification_scores(["accuracy", "roc_auc"], [1, 1, 1], probs)
    assert got == {"accuracy": pytest.approx(2 / 3), "roc_auc": None}


def test_user_metric_returning_a_dict(tmp_path, monkeypatch):
    (tmp_path / "my_dict_metrics.py").write_text(
        "def errors(y_true, y_pred, probs):\n    return {'errors': int((y_true != y_pred).sum())}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    got = classification_scores(["accuracy", "my_dict_metrics:errors"], [0, 0, 1], probs)
    assert got == {"accuracy": pytest.approx(2 / 3), "errors": 1.0}
