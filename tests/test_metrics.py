"""Local metrics agree with scikit-learn called directly, and undefined scores are None, not a crash."""

import numpy as np
import pytest
from sklearn import metrics as skm

from recipekit.metrics import DEFAULT_CLASSIFICATION, classification_scores


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


def test_user_metric_by_module_and_function(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(
        "def errors(y_true, y_pred, probs):\n    return {'errors': int((y_true != y_pred).sum())}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    got = classification_scores(["accuracy", "my_metrics:errors"], [0, 0, 1], probs)
    assert got == {"accuracy": pytest.approx(2 / 3), "errors": 1.0}
