"""A finished run's report, plots and model card; predict, evaluate and compare on it; 2-process evaluation."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, run_cli

from recipekit.core.paths import resolve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEST_ROWS = 13  # odd, and not a multiple of the eval batch: the last batch is padded under 2 processes


def sample(split: str, n: int, seed: int) -> pd.DataFrame:
    frame = pd.read_csv(resolve(f"package:recipekit/sample_data/reviews_{split}.csv"))
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    train = sample("train", 48, 0)
    test = sample("test", TEST_ROWS, 0)
    # HTML line breaks as in IMDb: the recipe's regex_replace step removes them, and predict must do the same.
    test["text"] = test["text"].str.replace(". ", ".<br /><br />", n=1, regex=False)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    return folder


def recipe_for(tiny_model, data_files, output_dir, **training) -> dict:
    return {
        "model": {"name_or_path": tiny_model},
        "data": {
            "train_file": str(data_files / "train.csv"),
            "test_file": str(data_files / "test.csv"),
            "validation_split": 0.25,
            "max_length": 64,
        },
        "preprocess": [{"regex_replace": {"pattern": "<br />", "replacement": " "}}, "drop_empty", "dedupe"],
        "metrics": ["accuracy", "f1", "roc_auc"],
        "training": {
            "output_dir": str(output_dir),
            "num_train_epochs": 2,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 4,
            "learning_rate": 1.0e-3,
            "eval_strategy": "epoch",
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "seed": 0,
            **training,
        },
    }


@pytest.fixture(scope="module")
def run_dir(tiny_model, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    path = tmp_path_factory.mktemp("recipes") / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_for(tiny_model, data_files, out)))
    assert run_cli([path]) == 0
    return out


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.slow  # a run with every figure
def test_report_has_every_section_and_plot(run_dir):
    report = (run_dir / "report.md").read_text()
    for section in ("## Recipe", "## Data", "## Metrics", "## Per class (test)", "## Plots"):
        assert section in report
    expected = {"loss.png", "accuracy.png", "confusion_matrix.png", "roc.png", "pr.png", "reliability.png", "gap.png"}
    plots = {p.name for p in (run_dir / "plots").glob("*.png")}
    assert plots == expected
    for name in expected:
        assert f"](plots/{name})" in report
        width, height = png_size(run_dir / "plots" / name)
        assert width >= 500 and height >= 400
        assert (run_dir / "plots" / name).stat().st_size > 10_000  # axes, labels and data, not a blank canvas


def test_metrics_count_every_test_example_once(run_dir):
    record = json.loads((run_dir / "metrics.json").read_text())
    test = record["evaluation"]["test"]
    assert sum(row["support"] for row in test["per_class"]) == TEST_ROWS
    assert sum(map(sum, test["confusion_matrix"])) == TEST_ROWS
    assert test["scores"]["accuracy"] == pytest.approx(record["test"]["accuracy"])
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert len(predictions) == TEST_ROWS
    assert (predictions["label"] == predictions["predicted"]).mean() == pytest.approx(record["test"]["accuracy"])


def test_model_card_metadata(run_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(run_dir / "README.md")
    record = json.loads((run_dir / "metrics.json").read_text())
    results = {r.metric_type: r for r in card.data.eval_results}
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-classification"
    assert "accuracy" in card.data.metrics and "roc_auc" in card.data.metrics
    assert results["accuracy"].metric_value == pytest.approx(record["test"]["accuracy"], abs=1e-4)
    assert results["accuracy"].dataset_split == "test"
    assert card.data.base_model is None  # a local model has no Hub id to name
    ModelCard((run_dir / "README.md").read_text(), ignore_metadata_errors=False)  # strict: a malformed model-index raises


def test_report_opens_with_the_task_the_headline_against_its_baseline_and_the_verdict(run_dir):
    lines = (run_dir / "report.md").read_text().splitlines()
    record = json.loads((run_dir / "metrics.json").read_text())
    train, test = record["data"]["labels"]["train"], record["data"]["labels"]["test"]
    majority = max(record["labels"], key=lambda name: train[name])
    accuracy = record["evaluation"]["test"]["scores"]["accuracy"]
    assert lines[2].startswith("- **Task**: `sequence_classification` on train.csv, 2 classes, from `")
    assert lines[3] == (
        f"- **Result**: test accuracy {accuracy:.4f} vs {test[majority] / TEST_ROWS:.4f} for always the majority class {majority!r}"
    )
    assert lines[4].startswith(("- **Overfitting**: none seen", "- **Overfitting**: likely"))
    assert lines[6] == "## Recipe"


def test_predict_on_the_test_split_equals_the_runs_predictions(run_dir, data_files, tmp_path):
    before = snapshot(run_dir)
    out = tmp_path / "preds.csv"
    assert run_cli(["predict", run_dir, "--input", data_files / "test.csv", "--output", out, "--batch-size", "5"]) == 0
    got, want = pd.read_csv(out), pd.read_csv(run_dir / "predictions.csv")
    assert list(got.columns) == ["text", "label", "predicted", "prob_negative", "prob_positive"]
    assert got["predicted"].tolist() == want["predicted"].tolist()
    np.testing.assert_allclose(got[["prob_negative", "prob_positive"]], want[["prob_negative", "prob_positive"]], atol=1e-6)
    # The input's own text is kept; the cleaning step was applied only to what the model read.
    assert got["text"].str.contains("<br />").all()
    assert snapshot(run_dir) == before


def test_predict_reads_jsonl_parquet_and_stdin(run_dir, data_files, tmp_path, monkeypatch):
    frame = pd.read_csv(data_files / "test.csv")
    frame.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "in.parquet")
    assert run_cli(["predict", run_dir, "--input", data_files / "test.csv", "--output", tmp_path / "csv.jsonl"]) == 0
    want = pd.read_json(tmp_path / "csv.jsonl", lines=True)
    for name in ("in.jsonl", "in.parquet"):
        assert run_cli(["predict", run_dir, "--input", tmp_path / name, "--output", tmp_path / "out.csv"]) == 0
        got = pd.read_csv(tmp_path / "out.csv")
        assert got["predicted"].tolist() == want["predicted"].tolist()
        np.testing.assert_allclose(got["prob_positive"], want["prob_positive"], atol=1e-6)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(frame["text"]) + "\n\n"))
    assert run_cli(["predict", run_dir, "--input", "-", "--output", tmp_path / "stdin.csv"]) == 0
    got = pd.read_csv(tmp_path / "stdin.csv")
    assert list(got.columns) == ["text", "predicted", "prob_negative", "prob_positive"]
    assert got["predicted"].tolist() == want["predicted"].tolist()  # the blank line is skipped


def test_evaluate_scores_equal_the_runs_test_metrics(run_dir, data_files, tmp_path, capsys):
    before = snapshot(run_dir)
    code = run_cli(["evaluate", run_dir, "--input", data_files / "test.csv", "--metrics", tmp_path / "m.json", "--plots", tmp_path / "plots"])
    assert code == 0
    printed = capsys.readouterr().out
    got = json.loads((tmp_path / "m.json").read_text())
    want = json.loads((run_dir / "metrics.json").read_text())["evaluation"]["test"]
    assert got["rows"] == TEST_ROWS
    assert got["confusion_matrix"] == want["confusion_matrix"]
    for name, value in want["scores"].items():
        assert got["scores"][name] == pytest.approx(value, abs=1e-6), name
    assert f"| accuracy | {want['scores']['accuracy']:.4f} |" in printed
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["confusion_matrix.png", "pr.png", "reliability.png", "roc.png"]
    assert snapshot(run_dir) == before


def test_refusals_are_one_line_and_write_nothing(run_dir, data_files, tmp_path, capsys):
    before = snapshot(run_dir)
    (tmp_path / "no_text.csv").write_text("review,label\ngood,positive\n")
    (tmp_path / "no_label.csv").write_text("text\ngood\n")
    (tmp_path / "new_label.csv").write_text("text,label\ngood,neutral\n")
    (tmp_path / "unfinished").mkdir()
    cases = [
        (["predict", run_dir, "--input", tmp_path / "no_text.csv"], "no text column 'text'"),
        (["evaluate", run_dir, "--input", tmp_path / "no_label.csv"], "no gold label column 'label'"),
        (["evaluate", run_dir, "--input", tmp_path / "new_label.csv"], "labels the run was not trained on: 'neutral'"),
        (["predict", run_dir, "--input", data_files / "test.csv", "--output", run_dir / "p.csv"], "is inside the run folder"),
        (["evaluate", run_dir, "--input", data_files / "test.csv", "--plots", run_dir / "plots"], "is inside the run folder"),
        (["predict", run_dir, "--input", data_files / "test.csv", "--output", tmp_path / "p.txt"], "'.txt' is not a supported format"),
        (["predict", tmp_path / "unfinished", "--input", data_files / "test.csv"], "holds no finished run"),
    ]
    for argv, message in cases:
        assert run_cli(argv) == 2, argv
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert snapshot(run_dir) == before


def test_compare_prints_runs_side_by_side_and_plots_validation_curves(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("*.safetensors", "plots"))
    record = json.loads((other / "metrics.json").read_text())
    record["evaluation"]["test"]["scores"]["accuracy"] = 0.125
    (other / "metrics.json").write_text(json.dumps(record))
    assert run_cli(["compare", run_dir, other, "--plot", tmp_path / "compare.png"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("|  |"))
    assert header == f"|  | {run_dir.name} | other |"
    accuracy = next(line for line in out.splitlines() if line.startswith("| test accuracy |"))
    mine = json.loads((run_dir / "metrics.json").read_text())["evaluation"]["test"]["scores"]["accuracy"]
    assert accuracy == f"| test accuracy | {mine:.4f} | 0.1250 |"
    width, _ = png_size(tmp_path / "compare.png")
    assert width >= 1000 and (tmp_path / "compare.png").stat().st_size > 10_000


def test_report_takes_only_what_the_head_provides(tmp_path):
    from recipekit.heads import Head
    from recipekit.outputs.report import write_report

    class ScoreOnlyHead(Head):  # a head without evaluation tables or plots: the report still has its curves and tables
        pass

    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.5, "eval_loss": 0.6}]}))
    record = {"labels": ["a", "b"], "validation": {"loss": 0.6, "accuracy": 0.5}, "evaluation": {}}
    written = write_report(str(tmp_path), {"model": {"name_or_path": "org/base", "head": "x"}, "metrics": ["accuracy"]}, ScoreOnlyHead(), record, {})
    assert [p.name for p in written] == ["report.md", "README.md", "loss.png"]
    assert "| accuracy | 0.5000 |" in (tmp_path / "report.md").read_text()
    assert "base_model: org/base" in (tmp_path / "README.md").read_text()

    (tmp_path / "plots" / "loss.png").unlink()
    written = write_report(str(tmp_path), {"model": {"name_or_path": "org/base", "head": "x"}, "metrics": ["accuracy"]},
                           ScoreOnlyHead(), record, {}, plots_on=False)
    assert [p.name for p in written] == ["report.md", "README.md"] and not any((tmp_path / "plots").iterdir())
    report = (tmp_path / "report.md").read_text()
    assert "| accuracy | 0.5000 |" in report and "Not drawn: the recipe sets `report.plots: false`." in report


@pytest.mark.slow
def test_two_process_evaluation_counts_every_example_once(tiny_model, data_files, tmp_path):
    """accelerate launch with 2 CPU processes (gloo): the last, padded eval batch adds no duplicate rows."""
    out = tmp_path / "ddp"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_for(tiny_model, data_files, out, num_train_epochs=1)))
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, str(ROOT / "run.py"), str(path)], cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "metrics.json").read_text())
    sizes = record["data"]["sizes"]
    for split in ("validation", "test"):
        evaluation = record["evaluation"][split]
        assert sum(map(sum, evaluation["confusion_matrix"])) == sizes[split]
        assert sum(row["support"] for row in evaluation["per_class"]) == sizes[split]
    assert sizes["test"] == TEST_ROWS and sizes["validation"] % 8 != 0  # both splits end on a padded batch
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == TEST_ROWS
    assert (predictions["label"] == predictions["predicted"]).mean() == pytest.approx(record["test"]["accuracy"])
    # A batch-mean loss stays a mean under 2 processes: near ln 2 = 0.693 for a barely trained binary model.
    assert record["validation"]["loss"] < 0.9
