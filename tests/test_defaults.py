"""Defaults are visible and fitted to the run: recipe.yaml and --check show the TrainingArguments values in
effect, and logging (and step-based evaluation) follow the run's length where the recipe sets none."""

import json
import math

import pytest
import yaml
from conftest import run_cli

from recipekit.recipe.build import build_recipe
from recipekit.recipe.training import EVAL_SHARE, LOG_SHARE

TRAIN = "package:recipekit/sample_data/reviews_train.csv"


def base(tmp_path, model="bert-base-uncased", **training) -> dict:
    return {
        "model": {"name_or_path": model},
        "data": {"train_file": TRAIN, "validation_split": 0.1, "max_length": 32},
        "training": {"output_dir": str(tmp_path / "out"), **training},
    }


def test_logging_is_a_share_of_the_run_unless_written(tmp_path):
    recipe = build_recipe(base(tmp_path, num_train_epochs=3))
    assert recipe.training.logging_steps == LOG_SHARE == 0.02
    assert "logging_steps" not in recipe.to_dict()["training"]  # derived, so a re-run derives it again
    # Trainer reads a value below 1 as a ratio of the steps: the README's 60-step run logs every 2 steps, not never.
    assert math.ceil(60 * recipe.training.logging_steps) == 2
    assert build_recipe(base(tmp_path, logging_steps=7)).training.logging_steps == 7
    assert build_recipe(base(tmp_path, logging_strategy="epoch")).training.logging_steps == 500  # not steps: untouched


def test_step_evaluations_are_a_share_of_the_run_unless_written(tmp_path):
    recipe = build_recipe(base(tmp_path, eval_strategy="steps"))
    assert (recipe.training.eval_steps, recipe.training.save_steps) == (EVAL_SHARE, EVAL_SHARE)
    assert recipe.training.load_best_model_at_end
    # A written logging_steps keeps Trainer's rule (evaluate every logging_steps); a written eval_steps stays.
    assert build_recipe(base(tmp_path, eval_strategy="steps", logging_steps=4)).training.eval_steps == 4
    assert build_recipe(base(tmp_path, eval_strategy="steps", eval_steps=9)).training.eval_steps == 9
    # A written checkpoint interval becomes the evaluations' too (a ratio beside it is refused by Trainer).
    assert build_recipe(base(tmp_path, eval_strategy="steps", save_steps=30)).training.eval_steps == 30


def test_check_lists_the_training_values_in_effect_with_recipekits_reasons(tmp_path, write_recipe, capsys):
    assert run_cli([write_recipe(base(tmp_path, num_train_epochs=3, eval_strategy="epoch")), "--check"]) == 0
    text = capsys.readouterr().out
    training = text.split("\ntraining:\n")[1].split("\nregularization:")[0].splitlines()
    assert training[:3] == [f"  output_dir: {tmp_path / 'out'}", "  num_train_epochs: 3.0", "  eval_strategy: epoch"]
    comments = dict(line.removeprefix("  # ").split(": ", 1) for line in training[4:])
    assert comments["logging_steps"].startswith("0.02  # recipekit: a ratio of the run's steps: ~50 loss points")
    assert comments["load_best_model_at_end"].startswith("true  # recipekit:")
    assert comments["save_strategy"].startswith("epoch  # recipekit:")
    # Trainer's own defaults, as the TrainingArguments object holds them (metric_for_best_model follows load_best).
    for key, value in {"learning_rate": "5.0e-05", "per_device_train_batch_size": "8", "lr_scheduler_type": "linear",
                       "warmup_steps": "0", "seed": "42", "metric_for_best_model": "loss"}.items():
        assert comments[key] == value, key
    assert yaml.safe_load(text)["training"] == {"output_dir": str(tmp_path / "out"), "num_train_epochs": 3.0, "eval_strategy": "epoch"}


@pytest.mark.slow  # trains a 2-layer model for 60 steps: ~15-30 s on 2 busy cores
def test_a_short_run_logs_its_loss_and_its_recipe_yaml_checks_again(tiny_model, tmp_path, write_recipe, capsys):
    raw = base(tmp_path, tiny_model, max_steps=60, per_device_train_batch_size=8, eval_strategy="steps",
               learning_rate=1.0e-3, report_to="none", save_total_limit=1, disable_tqdm=True)
    assert run_cli([write_recipe(raw)]) == 0
    out = tmp_path / "out"
    history = json.loads(max(out.glob("checkpoint-*/trainer_state.json")).read_text())["log_history"]
    # Every ceil(60 * 0.02) = 2 steps a loss, every ceil(60 * 0.1) = 6 steps an evaluation (Trainer's default: none).
    assert [e["step"] for e in history if "loss" in e] == list(range(2, 61, 2))
    assert [e["step"] for e in history if "eval_loss" in e] == list(range(6, 61, 6))
    capsys.readouterr()
    # The run's recipe.yaml is a recipe: --check accepts it and prints it back unchanged.
    assert run_cli([out / "recipe.yaml", "--check"]) == 0
    assert capsys.readouterr().out == (out / "recipe.yaml").read_text()
