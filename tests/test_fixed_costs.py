"""The fixed costs at the end of a run: validation scored once, evaluation and prediction in length order
with answers in file order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli
from datasets import Dataset
from test_joins import make_recipe, trained_run, write
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer

from recipekit.trainer.evaluations import by_length, in_file_order


@pytest.fixture
def passes(monkeypatch):
    """Every pass Trainer makes over a data set: (description, metric prefix, rows)."""
    seen = []
    loop = Trainer.evaluation_loop

    def counted(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        seen.append((description, metric_key_prefix, len(dataloader.dataset)))
        return loop(self, dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)

    monkeypatch.setattr(Trainer, "evaluation_loop", counted)
    return seen


def test_validation_is_scored_once_when_training_ends_on_an_evaluation(request, tmp_path, passes):
    # A tuned threshold used to cost two more passes over validation after the last epoch's evaluation.
    recipe = make_recipe(request, "binary", tmp_path / "data", tmp_path / "run", eval_strategy="steps", eval_steps=2)
    assert run_cli([write(recipe, tmp_path / "r.yaml")]) == 0
    over_validation = [p for p in passes if p[2] == 12]
    assert over_validation == [("Evaluation", "eval", 12), ("Evaluation", "eval", 12)]  # steps 2 and 4, nothing after
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    last = [e for e in metrics_history(tmp_path / "run") if "eval_loss" in e][-1]
    assert last["step"] == 4 and metrics["validation"]["loss"] == last["eval_loss"]
    assert 0 < metrics["tuned"]["threshold"] < 1


def metrics_history(folder: Path) -> list:
    return json.loads((folder / "trainer_state.json").read_text())["log_history"]


def test_reused_validation_scores_equal_a_fresh_prediction(request, tmp_path):
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run", eval_strategy="steps", eval_steps=4)
    assert run_cli([write(recipe, tmp_path / "r.yaml")]) == 0
    reused = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]
    # `evaluate` predicts the validation file afresh through the saved run.
    out = tmp_path / "fresh.json"
    assert run_cli(["evaluate", tmp_path / "run", "--input", recipe["data"]["validation_file"], "--metrics", out]) == 0
    fresh = json.loads(out.read_text())["metrics"]
    for key in ("accuracy", "f1", "loss"):
        assert reused[key] == pytest.approx(fresh[key], abs=1e-6), key


def test_an_earlier_best_model_is_scored_afresh(request, tmp_path, passes):
    recipe = make_recipe(
        request, "sequence_classification", tmp_path / "data", tmp_path / "run", eval_strategy="steps", eval_steps=2,
        save_strategy="steps", save_steps=2, load_best_model_at_end=True, metric_for_best_model="loss",
        learning_rate=0.5,  # a rate that diverges: the best checkpoint is the first, not the last
    )
    assert run_cli([write(recipe, tmp_path / "r.yaml")]) == 0
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    over_validation = [p for p in passes if p[2] == 12]
    if state["best_model_checkpoint"].endswith("checkpoint-4"):
        pytest.fail("the diverging rate did not make an earlier checkpoint the best; the test proves nothing")
    assert over_validation[-1] == ("Prediction", "eval", 12)
    best = min(e["eval_loss"] for e in state["log_history"] if "eval_loss" in e)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]["loss"] == pytest.approx(best, abs=1e-6)


def test_length_order_halves_padding_and_restores_file_order(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rng = np.random.default_rng(0)
    texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 60, size=64)]
    ds = Dataset.from_dict({"text": texts}).map(lambda b: tokenizer(b["text"]), batched=True)
    ordered, order = by_length(ds)

    def padded(d, batch=8):
        lengths = [len(x) for x in d["input_ids"]]
        return sum(max(lengths[i:i + batch]) * len(lengths[i:i + batch]) for i in range(0, len(lengths), batch))

    real = sum(len(x) for x in ds["input_ids"])
    assert padded(ordered) - real < 0.2 * (padded(ds) - real)
    assert ordered["text"] == [texts[i] for i in order]
    assert in_file_order(list(ordered["text"]), order) == texts
    assert (in_file_order(np.asarray(ordered["text"]), order) == np.asarray(texts)).all()


def test_predict_answers_in_file_order(request, tmp_path_factory, tmp_path):
    run = trained_run(request, tmp_path_factory, "sequence_classification")  # test_joins.py's, trained once
    recipe = run.recipe
    test = pd.read_csv(recipe["data"]["test_file"])
    out = tmp_path / "p.csv"
    assert run_cli(["predict", run.dir, "--input", recipe["data"]["test_file"], "--output", out]) == 0
    answered = pd.read_csv(out)
    assert answered["text"].tolist() == test["text"].tolist()
    # Each row scored alone (no padding, no order) gives that row's answer.
    tokenizer = AutoTokenizer.from_pretrained(run.dir)
    model = AutoModelForSequenceClassification.from_pretrained(run.dir).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    with torch.no_grad():
        for text, (_, row) in zip(test["text"], answered.iterrows()):
            probs = model(**tokenizer(text, truncation=True, max_length=24, return_tensors="pt")).logits.softmax(-1)[0]
            assert row["predicted"] == labels[int(probs.argmax())]
            assert row[f"prob_{labels[0]}"] == pytest.approx(float(probs[0]), abs=1e-5)
