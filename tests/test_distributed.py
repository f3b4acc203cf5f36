"""Real multi-process training on this CPU (gloo), and resuming a run killed with SIGKILL.

Each run goes through tests/probe_run.py: the real run.py plus a record per process of its final weights,
the texts it tokenized, the files it wrote and the Trainer's log history.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

BIN = Path(sys.executable).parent
SAMPLE = ROOT / "recipekit" / "sample_data"


def recipe_for(model: str, output_dir: Path, **training) -> dict:
    return {
        "model": {"name_or_path": model},
        "data": {
            "train_file": str(SAMPLE / "reviews_train.csv"),
            "test_file": str(SAMPLE / "reviews_test.csv"),
            "validation_split": 0.15,
            "max_length": 64,
            # An odd count: the distributed sampler pads it with a duplicate that evaluation must drop.
            "max_test_samples": 119,
        },
        # Cheap chunks, so that batches of 8 reviews of 19-64 words really run as several length-sorted
        # chunks: gradients must still be reduced across processes once per step, after the last chunk.
        "batching": {"padding": "length_split", "length_split_cost": 16},
        "preprocess": ["drop_empty", "dedupe"],
        "metrics": ["accuracy"],
        "training": {
            "output_dir": str(output_dir),
            "num_train_epochs": 1,
            "per_device_eval_batch_size": 16,
            "learning_rate": 1.0e-3,
            "logging_steps": 1,
            "eval_strategy": "epoch",
            "save_strategy": "no",
            "report_to": "none",
            "seed": 7,
            **training,
        },
    }


def launch(launcher: list[str], probe: Path, recipe: str, *args, env_extra=None, tmp: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_DATASETS_CACHE": str(tmp / "datasets-cache"),  # fresh: the first process must really preprocess
        "OMP_NUM_THREADS": "1",
        **(env_extra or {}),
    }
    cmd = [*launcher, str(ROOT / "tests" / "probe_run.py"), str(probe), recipe, *args]
    return subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=600, check=False)


def ranks(probe: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(probe.glob("rank*.json"))]


def losses(record: dict) -> list[float]:
    return [h["loss"] for h in record["log_history"] if "loss" in h]


def global_batch(model: str, output_dir: Path) -> dict:
    """16 examples per optimizer step, 8 per device: the same recipe derives 2 accumulation steps on one process
    and 1 on two."""
    recipe = recipe_for(model, output_dir, per_device_train_batch_size=8)
    recipe["batching"]["global_batch_size"] = 16
    return recipe


def batch_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "metrics.json").read_text())["manifest"]["batch"]


@pytest.fixture(scope="module")
def single_process(tiny_model, tmp_path_factory):
    """The reference: one process, 8 per batch x 2 accumulation steps = 16 examples per optimizer step."""
    tmp = tmp_path_factory.mktemp("single")
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(global_batch(tiny_model, tmp / "out")))
    done = launch([sys.executable], tmp / "probe", str(path), tmp=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return ranks(tmp / "probe")[0], tmp / "out"


LAUNCHERS = {
    "torchrun": [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29561"],
    "accelerate": [
        str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "recipes" / "accelerate" / "multi_gpu.yaml"),
        "--num_processes", "2", "--main_process_port", "29562",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_processes_train_like_one(launcher, single_process, tiny_model, tmp_path):
    # The reference's own recipe: 2 processes x 8 per batch = 16 examples per optimizer step, no accumulation.
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(global_batch(tiny_model, tmp_path / "out")))
    done = launch(LAUNCHERS[launcher], tmp_path / "probe", str(path), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = ranks(tmp_path / "probe")
    reference, reference_dir = single_process
    assert batch_of(tmp_path / "out") == {"per_device": 8, "processes": 2, "gradient_accumulation_steps": 1, "global": 16}
    assert batch_of(reference_dir) == {"per_device": 8, "processes": 1, "gradient_accumulation_steps": 2, "global": 16}

    assert rank0["weights_sha256"] == rank1["weights_sha256"]
    # Only rank 0 prints: one data report, one model line, one line per evaluation.
    assert done.stdout.count("data report") == 1 and done.stdout.count("model: ") == 1, done.stdout
    assert done.stdout.count("validation loss") == 1
    # More forward passes than the 17 micro-batches per process (34 with accumulation on one process):
    # the batches were split, and the ranks still agree to the bit.
    assert rank0["training_forwards"] > 17 and rank1["training_forwards"] > 17
    assert reference["training_forwards"] > 34

    # The first logged loss is the untrained model's mean cross-entropy on two balanced classes: ln 2.
    # Trainer 5 used to multiply it by the process count (1.39) or the accumulation steps.
    assert losses(rank0)[0] == pytest.approx(math.log(2), abs=0.03)
    assert losses(reference)[0] == pytest.approx(math.log(2), abs=0.03)
    assert len(losses(rank0)) == len(losses(reference)) == 17  # 272 training rows / 16 per step
    mean2, mean1 = (sum(losses(r)) / len(losses(r)) for r in (rank0, reference))
    assert mean2 / mean1 == pytest.approx(1.0, abs=0.05)

    # Preprocessing and tokenization ran once: process 1 read process 0's cached Arrow files.
    assert rank0["tokenized_texts"] >= 272 + 48 + 119
    assert rank1["tokenized_texts"] == 0

    # Only the main process writes the run's files.
    assert rank1["writes"] == []
    assert {"recipe.yaml", "predictions.csv", "metrics.json"} <= set(rank0["writes"])

    # Every test example is predicted exactly once, though 119 does not split evenly over 2 processes,
    # and the reported accuracy is the accuracy of exactly those predictions.
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(predictions) == 119
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx((predictions["label"] == predictions["predicted"]).mean())
    assert metrics["data"]["sizes"] == {"train": 272, "test": 119, "validation": 48}


@pytest.mark.slow
def test_two_processes_train_flattened_like_one(tiny_model, tmp_path):
    # Flattened batches under DDP: each process's encoder reads its own batch as one row; the gradients reduce as usual.
    records, outs = {}, {}
    for name, launcher in (("one", [sys.executable]), ("two", LAUNCHERS["torchrun"])):
        recipe = global_batch(tiny_model, tmp_path / name)
        recipe["batching"] = {"padding": "flatten", "global_batch_size": 16}
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(recipe))
        done = launch(launcher, tmp_path / f"probe-{name}", str(path), tmp=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("(flattened batches)") == 1, done.stdout
        records[name], outs[name] = ranks(tmp_path / f"probe-{name}"), json.loads((tmp_path / name / "metrics.json").read_text())
    (reference,), (rank0, rank1) = records["one"], records["two"]
    assert outs["one"]["manifest"]["padding"] == outs["two"]["manifest"]["padding"] == "flatten"
    assert outs["two"]["train"]["padding_share"] == 0.0
    assert rank0["weights_sha256"] == rank1["weights_sha256"]
    # One forward per micro-batch: nothing split.
    assert (rank0["training_forwards"], reference["training_forwards"]) == (17, 34)
    assert losses(rank0)[0] == pytest.approx(math.log(2), abs=0.03)
    assert len(losses(rank0)) == len(losses(reference)) == 17
    mean2, mean1 = (sum(losses(r)) / len(losses(r)) for r in (rank0, reference))
    assert mean2 / mean1 == pytest.approx(1.0, abs=0.05)
    assert outs["two"]["test"]["accuracy"] == pytest.approx(outs["one"]["test"]["accuracy"], abs=0.05)


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_to_the_same_result(tiny_model, tmp_path):
    # 272 rows / 8 = 34 steps in one epoch; checkpoints every 10 steps; killed right after checkpoint-20.
    recipe = recipe_for(
        tiny_model, tmp_path / "out", per_device_train_batch_size=8, save_strategy="steps", save_steps=10,
        eval_strategy="no", logging_steps=5,
    )
    recipe["data"]["validation_split"] = 0.0
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    whole = launch([sys.executable], tmp_path / "probe-whole", str(path), "training.output_dir=whole", tmp=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = launch(
        [sys.executable], tmp_path / "probe-killed", str(path), "training.output_dir=cut",
        env_extra={"PROBE_KILL_AT_STEP": "20"}, tmp=tmp_path,
    )
    assert killed.returncode == -9
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    assert not (tmp_path / "cut" / "metrics.json").exists()

    again = launch([sys.executable], tmp_path / "probe-again", str(path), "training.output_dir=cut", tmp=tmp_path)
    assert again.returncode == 2
    assert "holds an unfinished run" in again.stderr

    resumed = launch([sys.executable], tmp_path / "probe-resumed", str(path), "training.output_dir=cut", "--resume", tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first = ranks(tmp_path / "probe-whole")[0]
    second = ranks(tmp_path / "probe-resumed")[0]
    assert second["weights_sha256"] == first["weights_sha256"]
    whole_metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())["test"]
    resumed_metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())["test"]
    assert resumed_metrics["loss"] == pytest.approx(whole_metrics["loss"], rel=1e-6)
    assert resumed_metrics["accuracy"] == whole_metrics["accuracy"]
    # The log is continuous: steps 5-20 restored from the checkpoint, the rest trained after the restart.
    steps = [h["step"] for h in second["log_history"] if "loss" in h]
    assert steps[:5] == [5, 10, 15, 20, 25]
    assert steps == [h["step"] for h in first["log_history"] if "loss" in h]
    assert losses(second) == pytest.approx(losses(first), rel=1e-6)


@pytest.mark.slow
def test_optuna_sweep_runs_the_same_trial_on_every_rank(tiny_model, tmp_path):
    # Rank 0 draws each trial's learning rate and broadcasts it. Had rank 1 drawn its own, the two
    # optimizers would step with different rates and the ranks' weights would part after the first step.
    recipe = recipe_for(tiny_model, tmp_path / "sweep", per_device_train_batch_size=8, max_steps=4)
    recipe["sweep"] = {"method": "optuna", "n_trials": 2, "seed": 3, "space": {"training.learning_rate": {"low": 1.0e-4, "high": 1.0e-1}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    done = launch(LAUNCHERS["torchrun"], tmp_path / "probe", "sweep", str(path), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = ranks(tmp_path / "probe")
    assert rank0["weights_sha256"] == rank1["weights_sha256"]  # the last trial, identical on both ranks
    board = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert len(board) == 2 and board["training.learning_rate"].nunique() == 2
    assert rank1["writes"] == []


@pytest.mark.slow
def test_two_processes_pool_each_documents_windows_as_one_does(tiny_model, tmp_path):
    # long_text: chunks at 24 tokens cuts every review into windows; the processes share the windows of the
    # validation and test sets, and a document's windows may land on both. Pooled after gathering, the
    # predictions file must hold one row per review, equal to what one process predicts from the saved run.
    recipe = recipe_for(tiny_model, tmp_path / "out", per_device_train_batch_size=8, max_steps=3)
    recipe["data"].update(long_text="chunks", max_length=24, chunk_overlap=4)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    launcher = [*LAUNCHERS["torchrun"][:-1], "29564"]
    done = launch(launcher, tmp_path / "probe", str(path), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert run["data"]["tokens"]["splits"]["test"]["windows"] > 2 * 119
    written = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(written) == 119
    assert run["test"]["accuracy"] == pytest.approx((written["label"] == written["predicted"]).mean())
    test = tmp_path / "test.csv"
    written[["text", "label"]].to_csv(test, index=False)
    again = subprocess.run([sys.executable, str(ROOT / "run.py"), "predict", str(tmp_path / "out"), "--input", str(test),
                            "--output", str(tmp_path / "again.csv")], capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    one = pd.read_csv(tmp_path / "again.csv")
    assert list(one["predicted"]) == list(written["predicted"])
    assert one["prob_positive"].to_numpy() == pytest.approx(written["prob_positive"].to_numpy(), abs=1e-5)
