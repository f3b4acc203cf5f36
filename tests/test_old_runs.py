"""Run folders written by an earlier version (tests/fixtures/run_v1: one merged head_state.json) still open for
predict, evaluate, export and serve, and predict what that version predicted for their test file."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

OLD = Path(__file__).parent / "fixtures" / "run_v1"
HEADS = sorted(p.name for p in OLD.iterdir() if p.is_dir())


@pytest.fixture(params=HEADS)
def old_run(request, tmp_path) -> Path:
    folder = tmp_path / request.param
    shutil.copytree(OLD / request.param, folder)
    return folder


def same_predictions(written: Path, expected: Path, tolerance: float = 1e-5) -> None:
    got, want = pd.read_csv(written), pd.read_csv(expected)
    numeric = want["predicted"].dtype.kind == "f"  # regression: values, compared as numbers below
    if not numeric:
        assert list(got["predicted"].astype(str)) == list(want["predicted"].astype(str))
    for column in [c for c in want.columns if c.startswith("prob_")] + (["predicted"] if numeric else []):
        assert (got[column] - want[column]).abs().max() < tolerance, column


def test_predict_as_the_old_version_did(old_run, tmp_path):
    out = tmp_path / "preds.csv"
    assert run_cli(["predict", old_run, "--input", old_run / "test.csv", "--output", out]) == 0
    same_predictions(out, old_run / "predictions.csv")


def test_evaluate_scores_the_old_run_as_it_scored_itself(old_run, capsys):
    assert run_cli(["evaluate", old_run, "--input", old_run / "test.csv"]) == 0
    table = dict(line.strip("|").split("|")[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line)
    scores = {k.strip(): v.strip() for k, v in table.items()}
    written = json.loads((old_run / "metrics.json").read_text())["test"]
    for name in ("loss", "accuracy", "f1_micro", "rmse"):
        if name in written:
            assert scores[name] == f"{written[name]:.4f}", name


def test_the_old_runs_onnx_export_predicts_as_the_old_version_did(old_run, tmp_path):
    out = tmp_path / "onnx"
    assert run_cli(["export", old_run, "--format", "onnx", "--output", out]) == 0
    predicted = tmp_path / "preds.csv"
    assert run_cli(["predict", out, "--input", old_run / "test.csv", "--output", predicted]) == 0
    same_predictions(predicted, old_run / "predictions.csv", tolerance=1e-4)  # ONNX fp32 against PyTorch
