"""predictions.csv keeps the test file's own columns (ids, metadata, text) and the gold label under its own
name; `predict` / `evaluate --text-column NAME` read a file whose text column is named otherwise."""

import json
import random

import pandas as pd
import pytest
from conftest import run_cli

WORDS = {"pos": ["good", "great", "lovely"], "neg": ["bad", "awful", "dull"]}


def rows(rng, n, start):
    out = []
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        out.append({"id": f"r{start + i}", "text": " ".join(rng.choice(WORDS[label]) for _ in range(4)) + " film",
                    "source": rng.choice(["web", "mail"]), "sentiment": label, "stars": 5.0 if label == "pos" else 1.0})
    return out


@pytest.fixture(scope="module", params=["sequence_classification", "regression"])
def run(request, tiny_model, tmp_path_factory):
    head = request.param
    folder = tmp_path_factory.mktemp(head)
    rng = random.Random(0)
    label = "sentiment" if head == "sequence_classification" else "stars"
    pd.DataFrame(rows(rng, 64, 0)).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(rows(rng, 12, 100)).to_csv(folder / "test.csv", index=False)
    recipe = {
        "model": {"name_or_path": tiny_model, "head": head},
        "data": {"train_file": str(folder / "train.csv"), "test_file": str(folder / "test.csv"), "label_column": label, "max_length": 16},
        "training": {"output_dir": str(folder / "out"), "max_steps": 6, "per_device_train_batch_size": 16, "learning_rate": 1.0e-3,
                     "save_strategy": "no", "report_to": "none", "seed": 0, "disable_tqdm": True},
    }
    (folder / "recipe.yaml").write_text(json.dumps(recipe))
    assert run_cli([folder / "recipe.yaml"]) == 0
    return head, label, folder


@pytest.mark.slow  # a run per head
def test_predictions_keep_the_test_files_columns_and_the_gold_under_its_name(run):
    head, label, folder = run
    test = pd.read_csv(folder / "test.csv")
    written = pd.read_csv(folder / "out" / "predictions.csv")
    predicted = ["predicted", "prob_neg", "prob_pos"] if head == "sequence_classification" else ["predicted"]
    # Every column of the test file but the label, in its order; then the gold, decoded, under its own name.
    others = [c for c in test.columns if c != label]
    assert list(written.columns) == [*others, label, *predicted]
    for column in [*others, label]:
        assert written[column].tolist() == test[column].tolist(), column


def test_predict_and_evaluate_read_a_text_column_named_otherwise(run, tmp_path):
    head, _, folder = run
    test = pd.read_csv(folder / "test.csv").rename(columns={"text": "review_body"})
    test.to_csv(tmp_path / "renamed.csv", index=False)
    out = tmp_path / "p.csv"
    assert run_cli(["predict", folder / "out", "--input", tmp_path / "renamed.csv", "--text-column", "review_body", "--output", out]) == 0
    got = pd.read_csv(out)
    # The input's own columns and names, and the run's own predictions for those texts, field for field.
    assert list(got.columns)[: len(test.columns)] == list(test.columns)
    want = pd.read_csv(folder / "out" / "predictions.csv")
    assert got["predicted"].tolist() == want["predicted"].tolist()
    metrics = tmp_path / "m.json"
    assert run_cli(["evaluate", folder / "out", "--input", tmp_path / "renamed.csv", "--text-column", "review_body", "--metrics", metrics]) == 0
    record = json.loads((folder / "out" / "metrics.json").read_text())["test"]
    key = "accuracy" if head == "sequence_classification" else "rmse"
    assert json.loads(metrics.read_text())["metrics"][key] == pytest.approx(record[key], abs=1e-6)


def test_without_text_column_a_renamed_file_says_how(run, tmp_path, capsys):
    _, _, folder = run
    pd.read_csv(folder / "test.csv").rename(columns={"text": "review_body"}).to_csv(tmp_path / "renamed.csv", index=False)
    assert run_cli(["predict", folder / "out", "--input", tmp_path / "renamed.csv"]) == 2
    assert capsys.readouterr().err.strip().endswith("name yours with --text-column NAME")
    assert run_cli(["predict", folder / "out", "--input", tmp_path / "renamed.csv", "--text-column", "body"]) == 2
    assert "error: --text-column: 'body' is not a column of" in capsys.readouterr().err
