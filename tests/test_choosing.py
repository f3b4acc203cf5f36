"""Sweeps, overfitting controls and sanity checks, on a tiny BERT (seconds each)."""

import json
import random
import re
import shlex

import pandas as pd
import pytest
import yaml
from conftest import run_cli

from recipekit.core.errors import RecipeError
from recipekit.outputs.report import loss_gap, overfitting_verdict
from recipekit.recipe.build import build_recipe

WORDS = {0: ["awful", "dull", "bad"], 1: ["superb", "great", "fine"]}


@pytest.fixture
def files(tmp_path):
    rng = random.Random(0)

    def write(name, n):
        rows = [{"text": f"{rng.choice(WORDS[i % 2])} film {'so ' * (i % 3)}{i}", "label": i % 2} for i in range(n)]
        pd.DataFrame(rows).to_csv(tmp_path / name, index=False)
        return str(tmp_path / name)

    return write("train.csv", 64), write("val.csv", 32)


@pytest.fixture
def recipe(tiny_model, files, tmp_path):
    train, val = files
    return {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": train, "validation_file": val, "max_length": 16},
        "metrics": ["accuracy", "f1"],
        "training": {
            "output_dir": str(tmp_path / "run"), "max_steps": 12, "learning_rate": 3.0e-3, "per_device_train_batch_size": 16,
            "eval_strategy": "steps", "eval_steps": 6, "logging_steps": 2, "report_to": "none", "seed": 1,
            "metric_for_best_model": "accuracy",
        },
    }


def problems(raw) -> list[str]:
    with pytest.raises(RecipeError) as e:
        build_recipe(raw)
    return e.value.problems


# Bad input: one clear error before any trial starts.


@pytest.mark.parametrize(
    "sweep, expected",
    [
        ({"values": {"training.learnin_rate": [1.0e-4]}}, "sweep.values.training.learnin_rate: unknown key; did you mean 'learning_rate'?"),
        ({"values": {"training.learning_rate": []}}, "sweep.values.training.learning_rate: expected a non-empty list of values, got []"),
        ({"values": {"trainig.seed": [1]}}, "sweep.values.trainig.seed: 'trainig.seed': 'trainig' is not a section a sweep can vary; did you mean 'training'?"),
        (
            {"method": "optuna", "space": {"training.learning_rate": {"low": 1.0e-3, "high": 1.0e-5}}},
            "sweep.space.training.learning_rate: low 0.001 is above high 1e-05",
        ),
        ({"method": "bayes", "values": {"training.seed": [1]}}, "sweep.method: 'bayes' is not valid. Choices: grid, list, optuna"),
        ({"metric": "acuracy", "values": {"training.seed": [1]}}, "sweep.metric: 'acuracy' is not a computed metric; did you mean 'accuracy'?"),
    ],
)
def test_bad_sweeps_fail_before_any_trial(recipe, write_recipe, tmp_path, capsys, sweep, expected):
    recipe["sweep"] = sweep
    assert run_cli(["sweep", write_recipe(recipe)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert not (tmp_path / "run").exists()


def test_a_bad_value_in_any_trial_fails_before_the_first_one(recipe, write_recipe, tmp_path, capsys):
    recipe["sweep"] = {"values": {"training.learning_rate": [1.0e-3, -1.0]}}
    assert run_cli(["sweep", write_recipe(recipe)]) == 2
    assert "error: sweep trial-001 (training.learning_rate=-1.0): training.learning_rate: -1.0 must be positive" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_plain_run_of_a_sweep_recipe_points_to_the_sweep_command(recipe, write_recipe, capsys):
    recipe["sweep"] = {"values": {"training.seed": [1, 2]}}
    path = write_recipe(recipe)
    assert run_cli([path]) == 2
    assert f"run it with: python run.py sweep {path}" in capsys.readouterr().err


# Sweeps.


@pytest.mark.slow  # sweep trials trained twice
def test_grid_sweep_writes_leaderboard_resumes_and_its_best_trial_reproduces(recipe, write_recipe, tmp_path, capsys):
    recipe["sweep"] = {"values": {"training.learning_rate": [1.0e-4, 3.0e-3]}}
    path = write_recipe(recipe)
    assert run_cli(["sweep", path]) == 0
    root = tmp_path / "run"
    board = pd.read_csv(root / "sweep.csv")
    assert list(board["trial"]) == ["trial-000", "trial-001"]
    assert list(board["training.learning_rate"]) == [1.0e-4, 3.0e-3]
    for i, lr in enumerate([1.0e-4, 3.0e-3]):
        trial = yaml.safe_load((root / f"trial-00{i}" / "recipe.yaml").read_text())
        assert trial["training"]["learning_rate"] == lr and "sweep" not in trial
        assert json.loads((root / f"trial-00{i}" / "metrics.json").read_text())["validation"]["accuracy"] == board["accuracy"][i]
    assert (board["parameters_millions"] > 0).all() and (board["train_time_s"] > 0).all() and (board["eval_examples_per_s"] > 0).all()
    assert (root / "sweep.png").stat().st_size > 1000
    md = (root / "sweep.md").read_text()
    best = board.loc[board["accuracy"].idxmax(), "trial"]
    assert f"Best: **{best}**" in md

    stamp = (root / "trial-000" / "metrics.json").stat().st_mtime_ns
    assert run_cli(["sweep", path]) == 0
    assert "trial-000 already finished, skipped" in capsys.readouterr().out
    assert (root / "trial-000" / "metrics.json").stat().st_mtime_ns == stamp

    command = re.search(r"```bash\n(python run.py .*)\n```", md).group(1)
    assert run_cli(shlex.split(command)[2:]) == 0
    again = json.loads((root / f"{best}-again" / "metrics.json").read_text())["validation"]["accuracy"]
    assert abs(again - board["accuracy"].max()) < 0.005


def test_optuna_sweep_draws_log_uniform_rates_in_bounds_and_resumes(recipe, write_recipe, tmp_path, capsys):
    recipe["training"]["max_steps"] = 6
    recipe["sweep"] = {"method": "optuna", "n_trials": 3, "seed": 7, "space": {"training.learning_rate": {"low": 1.0e-5, "high": 1.0e-2}}}
    path = write_recipe(recipe)
    assert run_cli(["sweep", path]) == 0
    board = pd.read_csv(tmp_path / "run" / "sweep.csv")
    assert len(board) == 3
    assert board["training.learning_rate"].between(1.0e-5, 1.0e-2).all()
    assert run_cli(["sweep", path]) == 0
    assert capsys.readouterr().out.count("already finished, skipped") == 3


# Overfitting controls.


def test_best_checkpoint_is_restored_by_default_with_a_validation_set(recipe):
    training = build_recipe(recipe).training
    assert training.load_best_model_at_end and training.save_strategy == "steps" and training.save_steps == 6
    recipe["training"]["save_strategy"] = "no"
    assert not build_recipe(recipe).training.load_best_model_at_end
    del recipe["data"]["validation_file"]
    recipe["training"].update(eval_strategy="no", save_strategy="steps")
    assert not build_recipe(recipe).training.load_best_model_at_end


def test_early_stopping_ends_before_the_budget_on_the_best_checkpoint(recipe, write_recipe, tmp_path, capsys):
    # A rate this high makes the tiny model's validation accuracy stall within a few evaluations.
    recipe["training"].update(max_steps=400, eval_steps=2, logging_steps=2, learning_rate=5.0e-2)
    recipe["regularization"] = {"early_stopping_patience": 2, "early_stopping_threshold": 0.0}
    assert run_cli([write_recipe(recipe)]) == 0
    out = tmp_path / "run"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] < 400
    stop = json.loads((out / "metrics.json").read_text())["stopped_early"]
    assert stop == {"step": state["global_step"], "max_steps": 400, "epoch": state["epoch"], "patience": 2}
    assert f"stopped early at step {state['global_step']} of 400" in capsys.readouterr().out
    evals = [e["eval_accuracy"] for e in state["log_history"] if "eval_accuracy" in e]
    assert len(evals) >= 3
    final = json.loads((out / "metrics.json").read_text())["validation"]["accuracy"]
    assert final == max(evals) == state["best_metric"]
    assert "- **Training**: stopped early at step" in (out / "report.md").read_text()


def test_a_run_stopped_by_something_else_is_not_called_stopped_early():
    """A sweep trial its pruner stopped, or a run stopped by a signal, ended before its budget with the patience
    not spent: only the EarlyStoppingCallback's own count says early stopping ended it."""
    from transformers import EarlyStoppingCallback, TrainerState

    from recipekit.outputs.checkpoints import stopped_early

    state = TrainerState(global_step=30, max_steps=100, epoch=1.5)
    early = EarlyStoppingCallback(early_stopping_patience=2)
    early.early_stopping_patience_counter = 1
    assert stopped_early(state, [early]) is None
    early.early_stopping_patience_counter = 2
    assert stopped_early(state, [early]) == {"step": 30, "max_steps": 100, "epoch": 1.5, "patience": 2}
    assert stopped_early(state, []) is None


def test_early_stopping_needs_evaluations(recipe):
    recipe["training"].update(eval_strategy="no")
    recipe["regularization"] = {"early_stopping_patience": 2}
    assert problems(recipe) == [
        "regularization.early_stopping_patience: needs evaluations during training (training.eval_strategy: steps or epoch)"
    ]


def test_regularization_values_are_checked(recipe):
    recipe["regularization"] = {"layerwise_lr_decay": 1.5, "freeze_layers": -1, "early_stoping_patience": 1}
    recipe["model"]["hidden_dropout"] = 1.0
    assert problems(recipe) == [
        "model.hidden_dropout: 1.0 must be a probability in [0, 1)",
        (
            "regularization.early_stoping_patience: unknown key; did you mean 'early_stopping_patience'? "
            "Valid keys: early_stopping_patience, early_stopping_threshold, layerwise_lr_decay, freeze_embeddings, freeze_layers"
        ),
        "regularization.layerwise_lr_decay: 1.5 must be in (0, 1]",
        "regularization.freeze_layers: -1 must be 0 or more",
    ]


def tiny_trainer(recipe_dict):
    from conftest import load_splits

    from recipekit.heads import head_for
    from recipekit.modeling.loading import load_tokenizer
    from recipekit.training.trainer import build_trainer

    recipe = build_recipe(recipe_dict)
    tokenizer = load_tokenizer(recipe.model)
    head = head_for(recipe)
    data = load_splits(recipe.data, recipe.preprocess, recipe.training.seed, tokenizer, head)
    tokenized, _ = head.tokenize(data.splits, tokenizer)
    model = head.load_model(recipe.model, tokenizer)
    return build_trainer(recipe, head, model, tokenizer, tokenized), tokenized


def test_dropout_overrides_reach_the_model_config(recipe):
    recipe["model"].update(hidden_dropout=0.3, attention_dropout=0.2, classifier_dropout=0.4)
    trainer, _ = tiny_trainer(recipe)
    config = trainer.model.config
    assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob, config.classifier_dropout) == (0.3, 0.2, 0.4)
    assert trainer.model.dropout.p == 0.4


def test_freezing_and_layerwise_lr_decay(recipe):
    recipe["regularization"] = {"freeze_embeddings": True, "freeze_layers": 1, "layerwise_lr_decay": 0.5}
    trainer, _ = tiny_trainer(recipe)
    frozen = {n for n, p in trainer.model.named_parameters() if not p.requires_grad}
    assert frozen and all(".embeddings." in n or ".layer.0." in n for n in frozen)
    assert any(".embeddings." in n for n in frozen) and any(".layer.0." in n for n in frozen)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    rates = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = group["lr"]
    assert not frozen & set(rates)
    # Two layers: layer 1 is depth 2, the head (top) depth 3: one halving per layer below the top.
    assert {r for n, r in rates.items() if ".layer.1." in n} == {3.0e-3 * 0.5}
    assert rates["classifier.weight"] == 3.0e-3


def test_label_smoothing_and_gradient_clipping_pass_through(recipe):
    import torch

    recipe["training"].update(label_smoothing_factor=0.2, max_grad_norm=0.5)
    trainer, tokenized = tiny_trainer(recipe)
    assert trainer.args.max_grad_norm == 0.5
    batch = trainer.data_collator([tokenized["train"][i] for i in range(8)])
    model = trainer.model.eval()
    with torch.no_grad():
        smoothed = trainer.compute_loss(model, dict(batch)).item()
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    log_probs = torch.log_softmax(logits, -1)
    expected = (0.8 * torch.nn.functional.nll_loss(log_probs, batch["labels"]) - 0.2 * log_probs.mean(-1).mean()).item()
    assert smoothed == pytest.approx(expected, rel=1e-5)


def test_report_flags_overfitting_in_words():
    history = [
        {"loss": 0.7, "step": 10}, {"eval_loss": 0.60, "step": 10},
        {"loss": 0.4, "step": 20}, {"eval_loss": 0.50, "step": 20},
        {"loss": 0.1, "step": 30}, {"eval_loss": 0.65, "step": 30},
    ]
    gap = loss_gap(history)
    assert gap == [(10, 0.7, 0.60), (20, 0.4, 0.50), (30, 0.1, 0.65)]
    verdict = overfitting_verdict(gap)
    assert verdict.startswith("**Likely overfitting**: validation loss rose from 0.5000 (step 20) to 0.6500 (step 30)")
    history[-1]["eval_loss"] = 0.45
    assert overfitting_verdict(loss_gap(history)).startswith("No sign of overfitting")


def test_run_report_has_the_gap_table(recipe, write_recipe, tmp_path):
    assert run_cli([write_recipe({**recipe, "report": {"plots": True}})]) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Training vs validation" in report and "| step | training loss | validation loss | gap |" in report
    assert (tmp_path / "run" / "plots" / "gap.png").is_file()


# Sanity checks.


def test_overfit_batch_memorises_one_batch(recipe, write_recipe, tmp_path, capsys):
    recipe["sanity"] = {"overfit_batch": True, "overfit_batch_size": 8, "overfit_steps": 150}
    recipe["training"]["learning_rate"] = 1.0e-2
    assert run_cli([write_recipe(recipe)]) == 0
    result = json.loads((tmp_path / "run" / "sanity" / "overfit_batch" / "overfit_batch.json").read_text())
    assert result["passed"] and result["losses"][-1]["loss"] < 0.05 < result["losses"][0]["loss"]
    assert not (tmp_path / "run" / "recipe.yaml").exists()  # the run's own folder stays free


def test_overfit_batch_fails_when_nothing_can_learn(recipe, write_recipe, capsys):
    recipe["sanity"] = {"overfit_batch": True, "overfit_steps": 10}
    recipe["training"]["learning_rate"] = 1.0e-9
    assert run_cli([write_recipe(recipe)]) == 1
    assert "NOT memorised" in capsys.readouterr().out


@pytest.mark.slow  # a range test of its own
def test_lr_range_test_raises_the_rate_geometrically_and_suggests_one(recipe, write_recipe, tmp_path, capsys):
    recipe["sanity"] = {"lr_range_test": True, "lr_range_min": 1.0e-6, "lr_range_max": 1.0, "lr_range_steps": 60}
    assert run_cli([write_recipe(recipe)]) == 0
    out = tmp_path / "run" / "sanity" / "lr_range_test"
    frame = pd.read_csv(out / "lr_range_test.csv")
    assert frame["learning_rate"].iloc[0] == pytest.approx(1.0e-6)
    ratios = frame["learning_rate"].iloc[1:].to_numpy() / frame["learning_rate"].iloc[:-1].to_numpy()
    assert ratios == pytest.approx([(1.0e6) ** (1 / 59)] * len(ratios))
    suggestion = json.loads((out / "lr_range_test.json").read_text())["suggested_learning_rate"]
    assert 1.0e-7 <= suggestion <= 0.1
    assert (out / "lr_range_test.png").is_file()
    assert "a heuristic" in capsys.readouterr().out
