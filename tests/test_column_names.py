"""User columns named as the pipeline names its own columns (`labels`, `input_ids`, the window `document`,
`teacher_logits`, `__row`, ...): each works through train, predict, evaluate, cv and serve, or is refused in
one line before anything is written. go_emotions and many Hub sets name their label column `labels`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli
from test_joins import make_recipe, metrics_of, predicted, predictions_file, scores, write
from test_serve import call, serving

# Every name the data pipeline, the heads, the tokenizer, the window pooling and distillation write.
INTERNAL = ["labels", "label", "input_ids", "attention_mask", "token_type_ids", "special_tokens_mask", "n_tokens",
            "document", "teacher_logits", "__row", "__source", "__verdict"]
# Named where the head writes the encoded label, or as the pipeline's bookkeeping: refused, one line.
REFUSED_AS_TEXT = {"labels": "writes the encoded label into", "__row": "data pipeline's own columns",
                   "__source": "data pipeline's own columns", "__verdict": "data pipeline's own columns"}
REFUSED_AS_LABEL = {"__row": "data pipeline's own columns", "__source": "data pipeline's own columns",
                    "__verdict": "data pipeline's own columns"}


def renamed(recipe: dict, text: str | None = None, label: str | None = None) -> dict:
    """The recipe's files with the text and label columns renamed, and the recipe naming them so."""
    data = recipe["data"]
    for key in ("train_file", "validation_file", "test_file"):
        path = Path(data[key])
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame = frame.rename(columns={**({"text": text} if text else {}), **({"label": label} if label else {})})
        frame.to_csv(path, index=False)
    if text:
        data["text_columns"] = [text]
    if label:
        data["label_column"] = label
    return recipe


def refused(argv, message: str, capsys) -> None:
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def works_end_to_end(folder: Path, recipe: dict, tmp_path: Path) -> None:
    """Trained, then `predict` gives the run's own predictions and `evaluate` its test metrics."""
    path = write(recipe, tmp_path / "recipe.yaml")
    assert run_cli([path]) == 0
    run = metrics_of(folder)
    assert run["status"] == "finished" and run["data"]["sizes"] == {"train": 32, "validation": 12, "test": 10}
    out = tmp_path / "predicted.csv"
    assert run_cli(["predict", folder, "--input", recipe["data"]["test_file"], "--output", out]) == 0
    assert predicted(out) == predicted(predictions_file(folder)) and predicted(out)["predicted"]
    metrics = tmp_path / "evaluation.json"
    assert run_cli(["evaluate", folder, "--input", recipe["data"]["test_file"], "--metrics", metrics]) == 0
    assert json.loads(metrics.read_text())["metrics"] == scores(run["test"]) and 0.0 <= run["test"]["accuracy"] <= 1.0


@pytest.mark.slow  # a run per name
@pytest.mark.parametrize("name", INTERNAL)
def test_a_label_column_of_any_internal_name_works_or_is_refused_in_one_line(request, name, tmp_path, capsys):
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run")
    recipe = renamed(recipe, label=name)
    if name in REFUSED_AS_LABEL:
        refused([write(recipe, tmp_path / "recipe.yaml")], REFUSED_AS_LABEL[name], capsys)
        assert not (tmp_path / "run").exists()
        return
    works_end_to_end(tmp_path / "run", recipe, tmp_path)
    gold = pd.read_csv(predictions_file(tmp_path / "run"), dtype=str)[name].tolist()
    assert gold == pd.read_csv(recipe["data"]["test_file"], dtype=str)[name].tolist()  # the gold labels, as written


@pytest.mark.slow  # a run per name
@pytest.mark.parametrize("name", [n for n in INTERNAL if n != "label"])  # `label` is the label column here
def test_a_text_column_of_any_internal_name_works_or_is_refused_in_one_line(request, name, tmp_path, capsys):
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run")
    recipe = renamed(recipe, text=name)
    if name in REFUSED_AS_TEXT:
        refused([write(recipe, tmp_path / "recipe.yaml")], REFUSED_AS_TEXT[name], capsys)
        assert not (tmp_path / "run").exists()
        return
    works_end_to_end(tmp_path / "run", recipe, tmp_path)


@pytest.mark.slow  # a run and predict
def test_a_text_column_named_label_beside_another_label_column_trains_and_predicts(request, tmp_path):
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run")
    recipe = renamed(renamed(recipe, label="sentiment"), text="label")
    works_end_to_end(tmp_path / "run", recipe, tmp_path)


# Every head whose encode writes `labels`, and the heads that keep the target as text, with its label column
# named `labels`; and long texts as windows, whose rows carry `labels` and the `document` column.
@pytest.mark.slow  # a run per head
@pytest.mark.parametrize("case", ["binary", "multi_label", "regression", "token_classification", "seq2seq", "chunks"])
def test_a_label_column_named_labels_works_with_every_head(request, case, tmp_path):
    recipe = make_recipe(request, case, tmp_path / "data", tmp_path / "run")
    data = recipe["data"]
    old = data["label_column"]
    for key in ("train_file", "validation_file", "test_file"):
        path = Path(data[key])
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            path.write_text("".join(json.dumps({("labels" if k == old else k): v for k, v in r.items()}) + "\n" for r in rows))
        else:
            pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns={old: "labels"}).to_csv(path, index=False)
    data["label_column"] = "labels"
    path = write(recipe, tmp_path / "recipe.yaml")
    assert run_cli([path]) == 0
    run, folder = metrics_of(tmp_path / "run"), tmp_path / "run"
    out = tmp_path / f"predicted{predictions_file(folder).suffix}"
    assert run_cli(["predict", folder, "--input", data["test_file"], "--output", out]) == 0
    assert predicted(out) == predicted(predictions_file(folder))
    metrics = tmp_path / "evaluation.json"
    assert run_cli(["evaluate", folder, "--input", data["test_file"], "--metrics", metrics]) == 0
    assert json.loads(metrics.read_text())["metrics"] == scores(run["test"])


def test_unused_columns_of_internal_names_are_left_out_with_a_note(request, tmp_path):
    """A `labels` column beside the label column (a second annotation, say) and a `__row` column: the first
    would be overwritten by the encoded label, or on a test split without labels read as gold."""
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run")
    for key in ("train_file", "validation_file", "test_file"):
        frame = pd.read_csv(recipe["data"][key], dtype=str, keep_default_na=False)
        frame["labels"], frame["__row"] = "7", "x"
        if key == "test_file":
            frame = frame.drop(columns="label")
        frame.to_csv(recipe["data"][key], index=False)
    assert run_cli([write(recipe, tmp_path / "recipe.yaml")]) == 0
    run = metrics_of(tmp_path / "run")
    assert "test" not in run["evaluation"] and run["data"]["sizes"]["test"] == 10
    notes = [n for n in run["data"]["notes"] if "left out" in n]
    assert len(notes) == 3 and "'labels', '__row'" in notes[0]
    written = pd.read_csv(predictions_file(tmp_path / "run"), dtype=str, keep_default_na=False)
    assert "label" not in written.columns and set(written["predicted"]) <= {"pos", "neg", "mid"}


@pytest.mark.slow  # cv folds and a served model
def test_cv_and_serve_take_a_labels_column_and_a_document_text_column(request, tmp_path):
    recipe = make_recipe(request, "binary", tmp_path / "data", tmp_path / "run")
    recipe = renamed(recipe, text="document", label="labels")
    path = write(recipe, tmp_path / "recipe.yaml")
    assert run_cli(["cv", path, "--folds", 2]) == 0
    folds = [metrics_of(tmp_path / "run" / f"fold-{k}") for k in (1, 2)]
    assert all(f["status"] == "finished" and f["data"]["sizes"]["train"] == 16 for f in folds)
    fold = tmp_path / "run" / "fold-1"
    test = recipe["data"]["test_file"]
    out = tmp_path / "predicted.csv"
    assert run_cli(["predict", fold, "--input", test, "--output", out]) == 0
    want = pd.read_csv(out, dtype=str, keep_default_na=False)["predicted"].tolist()
    texts = pd.read_csv(test, dtype=str, keep_default_na=False)["document"].tolist()
    with serving(fold) as port:
        status, body = call(port, "POST", "/predict", {"texts": texts})
    assert status == 200 and [p["predicted"] for p in body["predictions"]] == want


def test_long_texts_as_windows_with_a_document_text_column_and_a_labels_column(request, tmp_path):
    """Windows write `document` (the row each came from) and `labels` per window, beside the user's columns of those names."""
    recipe = make_recipe(request, "chunks", tmp_path / "data", tmp_path / "run")
    works_end_to_end(tmp_path / "run", renamed(recipe, text="document", label="labels"), tmp_path)
    windows = metrics_of(tmp_path / "run")["data"]["tokens"]["splits"]["test"]["windows"]
    assert windows > 10  # test rows cut into several windows each, pooled back to one prediction per row
