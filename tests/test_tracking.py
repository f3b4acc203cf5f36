"""Experiment tracking: TensorBoard out of the box, and trackers that cannot work refused before anything runs."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from test_joins import make_recipe, write


def test_tensorboard_event_files_hold_the_runs_losses(request, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run", report_to="tensorboard",
                         logging_steps=1, eval_strategy="steps", eval_steps=2)
    assert run_cli([write(recipe, tmp_path / "r.yaml")]) == 0
    (folder,) = (tmp_path / "run" / "runs").iterdir()  # `tensorboard --logdir runs` finds it under the run
    events = EventAccumulator(str(folder))
    events.Reload()
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    logged = [(e["step"], e["loss"]) for e in history if "loss" in e]
    written = [(s.step, s.value) for s in events.Scalars("train/loss")]
    assert len(written) == len(logged) == 4
    assert [step for step, _ in written] == [step for step, _ in logged]
    assert [v for _, v in written] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert [s.step for s in events.Scalars("eval/accuracy")] == [2, 4]


@pytest.mark.parametrize(
    ("report_to", "expected"),
    [
        ("wandb", "error: training.report_to: 'wandb' is not installed; pip install wandb, or use one that is: none, tensorboard"),
        ("tensorbord", "error: training.report_to: 'tensorbord' is not a tracker Trainer knows; did you mean 'tensorboard'?"),
        (["tensorboard", "mlflow"], "error: training.report_to: 'mlflow' is not installed; pip install mlflow"),
    ],
)
def test_a_tracker_that_cannot_work_is_refused_before_anything_is_written(request, tmp_path, capsys, report_to, expected):
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run", report_to=report_to)
    assert run_cli([write(recipe, tmp_path / "r.yaml")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert not (tmp_path / "run").exists()
