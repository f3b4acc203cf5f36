"""Checkpoints: two are kept by default (the best and the last), the console, metrics.json and report.md name the
one the run's model is and why, and `--resume` of a finished run refuses unless more training is asked for."""

import io
import json
from contextlib import redirect_stdout

import pytest
import yaml
from conftest import run_cli

from recipekit.outputs.checkpoints import kept_text
from recipekit.recipe.build import build_recipe

EPOCHS, STEPS_PER_EPOCH = 4, 4


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory):
    """4 epochs of 4 steps, evaluated and saved each epoch. The best is chosen by the *highest* validation loss,
    so that the first evaluations win while the loss falls: the kept checkpoint is not the last."""
    folder = tmp_path_factory.mktemp("kept")
    rows = ["text,label"] + [f"{['awful', 'superb'][i % 2]} film {i},{['neg', 'pos'][i % 2]}" for i in range(32)]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    (folder / "validation.csv").write_text("\n".join(rows[:9]) + "\n")
    recipe = {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(folder / "train.csv"), "validation_file": str(folder / "validation.csv"), "max_length": 16},
        "training": {"output_dir": str(folder / "run"), "num_train_epochs": EPOCHS, "per_device_train_batch_size": 8,
                     "learning_rate": 1.0e-3, "eval_strategy": "epoch", "metric_for_best_model": "loss",
                     "greater_is_better": True, "logging_steps": 1, "report_to": "none", "seed": 1},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert run_cli([path]) == 0
    return path, folder / "run", printed.getvalue()


def evaluations(run) -> list[dict]:
    state = json.loads((run / "trainer_state.json").read_text())
    return [e for e in state["log_history"] if "eval_loss" in e]


def test_the_best_and_the_last_checkpoint_are_kept(finished):
    _, run, _ = finished
    evals = evaluations(run)
    assert [e["step"] for e in evals] == [STEPS_PER_EPOCH * (i + 1) for i in range(EPOCHS)]
    best = max(evals, key=lambda e: e["eval_loss"])
    assert best["step"] != evals[-1]["step"]  # the fixture's point: the kept checkpoint is an earlier one
    assert sorted(p.name for p in run.glob("checkpoint-*")) == sorted({f"checkpoint-{best['step']}", f"checkpoint-{EPOCHS * STEPS_PER_EPOCH}"})


def test_console_metrics_and_report_name_the_kept_checkpoint(finished):
    _, run, printed = finished
    evals = evaluations(run)
    best, last = max(evals, key=lambda e: e["eval_loss"]), evals[-1]
    record = json.loads((run / "metrics.json").read_text())
    kept = record["kept_checkpoint"]
    assert kept == {
        "checkpoint": f"checkpoint-{best['step']}", "step": best["step"], "epoch": best["epoch"], "metric": "loss",
        "value": best["eval_loss"], "greater_is_better": True, "evaluations": EPOCHS,
        "last_step": last["step"], "last_epoch": last["epoch"], "last_value": last["eval_loss"],
    }
    # The validation scores are the restored checkpoint's: re-evaluated, its loss is the one it was kept for.
    assert record["validation"]["loss"] == pytest.approx(best["eval_loss"], rel=1e-5)
    text = kept_text(kept)
    assert text == (
        f"checkpoint-{best['step']} (epoch {best['epoch']:g}, step {best['step']}), whose validation loss {best['eval_loss']:.4f} "
        f"was the highest of 4 evaluations (training.load_best_model_at_end); the last evaluation (epoch 4, step 16) "
        f"had {last['eval_loss']:.4f}"
    )
    lines = printed.splitlines()
    at = lines.index(f"kept {text}")
    assert lines[at + 1:].count(next(x for x in lines if x.startswith("validation: loss"))) == 1
    assert lines[at - 1].startswith(f"epoch {EPOCHS} (step {last['step']}): validation loss {last['eval_loss']:.4f}")
    report = (run / "report.md").read_text()
    assert f"- **Model kept**: {text}; the run's model and every score in this report are this checkpoint's" in report
    assert "ended at" not in report


def test_save_total_limit_defaults_to_two_and_the_recipe_wins(finished):
    path, _, _ = finished
    recipe = yaml.safe_load(path.read_text())
    assert build_recipe(recipe).training.save_total_limit == 2
    for value in (5, None):  # null: keep every checkpoint
        recipe["training"]["save_total_limit"] = value
        assert build_recipe(recipe).training.save_total_limit == value


def test_resume_of_a_finished_run_is_refused_unless_more_is_asked(finished, capsys):
    path, run, _ = finished
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    capsys.readouterr()
    assert run_cli([path, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [(
        f"error: --resume: {str(run)!r} holds a finished run, trained to step 16 (epoch 4), as far as this recipe asks "
        "(training.max_steps, num_train_epochs); pass --overwrite to train it again, or ask for more steps or epochs to continue it"
    )]
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing written, not even the status
    assert run_cli([path, "--resume", "training.max_steps=16"]) == 2  # as far as it went, counted in steps

    assert run_cli([path, "--resume", f"training.num_train_epochs={EPOCHS + 1}"]) == 0
    state = json.loads((run / "trainer_state.json").read_text())
    record = json.loads((run / "metrics.json").read_text())
    assert state["global_step"] == (EPOCHS + 1) * STEPS_PER_EPOCH and state["epoch"] == EPOCHS + 1
    assert record["train"]["resumed_from_step"] == EPOCHS * STEPS_PER_EPOCH
    assert len(evaluations(run)) == EPOCHS + 1


def test_a_finished_run_continued_is_unfinished_until_it_ends_again(finished, monkeypatch):
    """Its metrics.json goes when the continued run starts: a run that then fails cannot pass for finished."""
    import run as entry

    path, run, _ = finished
    assert (run / "metrics.json").exists()

    def fail(*args, **kwargs):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(entry, "finish_run", fail)
    with pytest.raises(RuntimeError, match="disk gone"):  # an unexpected crash keeps its traceback
        run_cli([path, "--resume", f"training.num_train_epochs={EPOCHS + 2}"])
    assert not (run / "metrics.json").exists()
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
