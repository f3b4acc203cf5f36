"""`run.py cv`: folds, out-of-fold predictions, the mean/std table, the averaged test set, resume, groups,
label issues and refusals, on the tiny BERT and small synthetic sets (test_joins.py's)."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from test_joins import make_recipe, row, write, write_split

from recipekit.commands.cv import assign_folds

FLIPPED = [0, 1, 2]  # training rows whose label the fixture swaps: label_issues.csv must find them
TRAIN_ROWS = 96


def flip(path: str, rows: list[int]) -> None:
    frame = pd.read_csv(path)
    frame.loc[rows, "label"] = frame.loc[rows, "label"].map({"pos": "neg", "neg": "pos"})
    frame.to_csv(path, index=False)


@pytest.fixture(scope="module")
def cv_run(request, tmp_path_factory):
    """3-fold CV of a two-class recipe (48 rows, 3 labels flipped) with a test file, run once for the module."""
    folder = tmp_path_factory.mktemp("cv")
    recipe = make_recipe(request, "sequence_classification", folder / "data", folder / "out", max_steps=40,
                           learning_rate=3.0e-3, per_device_train_batch_size=16)
    recipe["data"]["train_file"] = write_split(folder / "data", "two", "train", TRAIN_ROWS, 1)
    recipe["data"]["validation_file"] = write_split(folder / "data", "two", "validation", 12, 2)
    recipe["data"]["test_file"] = write_split(folder / "data", "two", "test", 10, 3)
    flip(recipe["data"]["train_file"], FLIPPED)
    # One padding path pinned: dropout draws its masks per batch shape, so the two paths train this tiny model
    # apart (flattened, it named 9 rows against the 2x bound; the length split 4). With dropout off both give the
    # same out-of-fold probabilities within 5e-6 and name the same 8 rows: the bound holds for one draw, not all.
    recipe["batching"] = {"padding": "length_split"}
    path = folder / "recipe.yaml"
    write(recipe, path)
    assert run_cli(["cv", path, "--folds", 3, "--label-issues"]) == 0
    return path, folder / "out", recipe


@pytest.mark.slow  # 5 folds trained
def test_folds_cover_every_row_once_stratified(cv_run):
    _, out, recipe = cv_run
    plan = pd.read_csv(out / "folds.csv")
    assert sorted(plan["row"]) == list(range(TRAIN_ROWS))
    labels = pd.read_csv(recipe["data"]["train_file"])["label"].to_numpy()
    held_rows = []
    for k in (1, 2, 3):
        held = pd.read_parquet(out / "data" / f"fold-{k}" / "validation.parquet")
        trained = pd.read_parquet(out / "data" / f"fold-{k}" / "train.parquet")
        assert len(held) == 32 and len(trained) == 64
        record = json.loads((out / f"fold-{k}" / "metrics.json").read_text())
        assert record["data"]["sizes"] == {"train": 64, "validation": 32, "test": 10}
        rows = plan.loc[plan["fold"] == k, "row"].to_numpy()
        held_rows += list(rows)
        assert list(held["text"]) == list(pd.read_csv(recipe["data"]["train_file"])["text"].iloc[rows])
        for label in ("pos", "neg"):  # each fold holds a third of each class, within one row
            assert abs((labels[rows] == label).sum() - (labels == label).sum() / 3) <= 1
    assert sorted(held_rows) == list(range(TRAIN_ROWS))


@pytest.mark.slow  # reads the module's 3-fold cv run
def test_out_of_fold_predictions_one_per_row(cv_run):
    _, out, recipe = cv_run
    oof = pd.read_csv(out / "oof_predictions.csv")
    train = pd.read_csv(recipe["data"]["train_file"])
    assert list(oof["row"]) == list(range(TRAIN_ROWS))
    assert list(oof["text"]) == list(train["text"]) and list(oof["label"]) == list(train["label"])
    assert np.allclose(oof["prob_neg"] + oof["prob_pos"], 1.0)
    assert set(oof["predicted"]) <= {"pos", "neg"}
    plan = pd.read_csv(out / "folds.csv")
    assert list(oof["fold"]) == list(plan.sort_values("row")["fold"])
    for k in (1, 2, 3):  # each fold's out-of-fold predictions are the ones its run validated with
        part = oof[oof["fold"] == k]
        validation = json.loads((out / f"fold-{k}" / "metrics.json").read_text())["validation"]
        assert (part["predicted"] == part["label"]).mean() == pytest.approx(validation["accuracy"])


@pytest.mark.slow  # reads the module's 3-fold cv run
def test_mean_and_std_are_the_folds_metrics(cv_run):
    _, out, _ = cv_run
    summary = json.loads((out / "cv.json").read_text())
    records = [json.loads((out / f"fold-{k}" / "metrics.json").read_text()) for k in (1, 2, 3)]
    for split in ("validation", "test"):
        for metric in ("accuracy", "loss", "f1"):
            values = [r[split][metric] for r in records]
            assert summary[split][metric]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert summary[split][metric]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    text = (out / "cv.md").read_text()
    assert f"{summary['validation']['accuracy']['mean']:.4f}" in text and "fold-3" in text


@pytest.mark.slow  # reads the module's 3-fold cv run
def test_averaged_test_probabilities_are_the_mean_of_the_folds(cv_run):
    _, out, _ = cv_run
    folds = [pd.read_csv(out / f"fold-{k}" / "predictions.csv") for k in (1, 2, 3)]
    averaged = pd.read_csv(out / "test_predictions.csv")
    assert len(averaged) == 10
    for label in ("neg", "pos"):
        assert np.allclose(averaged[f"prob_{label}"], np.mean([f[f"prob_{label}"] for f in folds], axis=0), atol=1e-12)
    summary = json.loads((out / "cv.json").read_text())
    expected = np.mean(np.where(averaged["prob_pos"] > averaged["prob_neg"], "pos", "neg") == averaged["label"])
    assert summary["test_average"]["accuracy"] == pytest.approx(expected)


@pytest.mark.slow  # reads the module's 3-fold cv run
def test_a_fold_is_a_finished_run(cv_run, tmp_path):
    """`run.py evaluate` on a fold's held-out file gives the fold's validation metrics exactly."""
    _, out, _ = cv_run
    scores = tmp_path / "scores.json"
    assert run_cli(["evaluate", out / "fold-2", "--input", out / "data" / "fold-2" / "validation.parquet", "--metrics", scores]) == 0
    validation = json.loads((out / "fold-2" / "metrics.json").read_text())["validation"]
    assert json.loads(scores.read_text())["metrics"]["accuracy"] == pytest.approx(validation["accuracy"])


@pytest.mark.slow  # reads the module's 3-fold cv run
def test_label_issues_find_the_flipped_labels(cv_run):
    _, out, _ = cv_run
    issues = pd.read_csv(out / "label_issues.csv")
    assert set(FLIPPED) <= set(issues["row"])
    assert len(issues) <= 2 * len(FLIPPED)
    assert list(issues["label_quality"]) == sorted(issues["label_quality"])  # most likely wrong first
    flipped = issues[issues["row"].isin(FLIPPED)]
    assert (flipped["suggested_label"] != flipped["given_label"]).all()


@pytest.mark.slow  # folds trained twice
def test_rerun_skips_finished_folds(cv_run, capsys):
    path, out, _ = cv_run
    stamps = {k: (out / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in (1, 2, 3)}
    (out / "fold-2" / "metrics.json").unlink()  # fold-2 unfinished: only it trains again
    capsys.readouterr()
    assert run_cli(["cv", path, "--folds", 3, "--label-issues"]) == 0
    printed = capsys.readouterr().out
    assert "cv: fold-1 already finished, skipped" in printed and "cv: fold-3 already finished, skipped" in printed
    assert "cv: fold-2: fold=2" in printed
    assert (out / "fold-1" / "metrics.json").stat().st_mtime_ns == stamps[1]
    assert (out / "fold-3" / "metrics.json").stat().st_mtime_ns == stamps[3]
    # Other folds (a different --folds) over the same folder are refused before anything is written.
    assert run_cli(["cv", path, "--folds", 4]) == 2
    assert "holds folds of a different split" in capsys.readouterr().err


def grouped_rows(kind: str, n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    frame = pd.DataFrame([row(kind, rng) for _ in range(n)])
    frame["speaker"] = [f"s{i // 3}" for i in range(n)]  # groups of 3 rows
    return frame


@pytest.mark.slow  # folds trained
def test_regression_with_groups(request, tmp_path):
    """Regression folds (not stratified) keep each --group-column value whole; the averaged test value is the mean."""
    recipe = make_recipe(request, "regression", tmp_path / "data", tmp_path / "out", max_steps=2)
    grouped_rows("count", 24, 1).to_csv(tmp_path / "data" / "train.csv", index=False)
    recipe["data"]["train_file"] = str(tmp_path / "data" / "train.csv")
    recipe["data"]["max_length"] = 16
    path = tmp_path / "recipe.yaml"
    write(recipe, path)
    assert run_cli(["cv", path, "--folds", 2, "--group-column", "speaker"]) == 0
    out = tmp_path / "out"
    plan = pd.read_csv(out / "folds.csv")
    assert (plan.groupby("group")["fold"].nunique() == 1).all()
    assert sorted(plan["row"]) == list(range(24)) and plan["fold"].value_counts().to_dict() == {1: 12, 2: 12}
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert len(oof) == 24 and np.isfinite(oof["predicted"]).all()
    folds = [pd.read_csv(out / f"fold-{k}" / "predictions.csv")["predicted"] for k in (1, 2)]
    assert np.allclose(pd.read_csv(out / "test_predictions.csv")["predicted"], np.mean(folds, axis=0))
    summary = json.loads((out / "cv.json").read_text())
    rmse = [json.loads((out / f"fold-{k}" / "metrics.json").read_text())["validation"]["rmse"] for k in (1, 2)]
    assert summary["validation"]["rmse"]["mean"] == pytest.approx(np.mean(rmse))


@pytest.mark.slow  # folds trained
def test_chunks_folds_predict_one_row_per_document(request, tmp_path):
    """With long_text: chunks each held-out text is scored from its pooled windows: one out-of-fold row per row."""
    recipe = make_recipe(request, "chunks", tmp_path / "data", tmp_path / "out", max_steps=2)
    path = tmp_path / "recipe.yaml"
    write(recipe, path)
    assert run_cli(["cv", path, "--folds", 2]) == 0
    out, rows = tmp_path / "out", len(pd.read_csv(recipe["data"]["train_file"]))
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert list(oof["row"]) == list(range(rows))
    for k in (1, 2):
        record = json.loads((out / f"fold-{k}" / "metrics.json").read_text())
        assert record["data"]["tokens"]["splits"]["validation"]["windows"] > rows // 2  # the held-out texts were cut
        part = oof[oof["fold"] == k]
        assert (part["predicted"] == part["label"]).mean() == pytest.approx(record["validation"]["accuracy"])
    assert len(pd.read_csv(out / "test_predictions.csv")) == len(pd.read_csv(recipe["data"]["test_file"]))


def test_stratified_group_folds_never_split_a_group():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{i}" for i in range(30)], rng.integers(1, 6, size=30))
    labels = rng.integers(0, 2, size=len(groups))
    fold_of = assign_folds(len(groups), 5, 0, labels, groups, ["a", "b"])
    assert set(fold_of) == set(range(5))
    assert all(len(set(fold_of[groups == g])) == 1 for g in set(groups))
    assert np.array_equal(fold_of, assign_folds(len(groups), 5, 0, labels, groups, ["a", "b"]))  # seeded


def test_check_prints_the_folds_and_writes_nothing(request, tmp_path, capsys):
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "out")
    path = tmp_path / "recipe.yaml"
    write(recipe, path)
    assert run_cli(["cv", path, "--folds", 4, "--check"]) == 0
    assert "| fold-4 | 24 | 8 |" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, argv, message", [
    ("token_classification", [], "cv: head 'token_classification' is not supported"),
    ("regression", ["--label-issues"], "--label-issues: ranks labels of one class per row"),
    ("sequence_classification", ["--folds", 1], "--folds: 1; cross-validation needs 2 or more folds"),
    ("sequence_classification", ["--group-column", "speaker"], "--group-column: 'speaker' is not a column"),
    ("sequence_classification", ["--folds", 20], "have fewer training rows than folds"),
])
def test_refusals_are_one_line(request, tmp_path, capsys, case, argv, message):
    recipe = make_recipe(request, case, tmp_path / "data", tmp_path / "out")
    path = tmp_path / "recipe.yaml"
    write(recipe, path)
    assert run_cli(["cv", path, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_cleanlab_is_one_line(request, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cleanlab", None)  # import cleanlab now raises ImportError
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "out")
    path = tmp_path / "recipe.yaml"
    write(recipe, path)
    assert run_cli(["cv", path, "--label-issues"]) == 2
    assert capsys.readouterr().err.strip() == "error: --label-issues needs cleanlab: pip install 'recipekit[cv]'"


def test_a_run_folder_is_refused(request, tmp_path, capsys):
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "recipe.yaml").write_text("a run\n")
    path = tmp_path / "recipe.yaml"
    write(recipe, path)
    assert run_cli(["cv", path]) == 2
    assert capsys.readouterr().err.strip() == (f"error: cv: {tmp_path / 'out'} holds a run; fold-K folders go beside nothing else: "
                                               f"choose another training.output_dir (e.g. training.output_dir={tmp_path / 'out'}-cv)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["recipe.yaml"]
