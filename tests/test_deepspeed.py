"""DeepSpeed ZeRO-2 and ZeRO-3 for real: the shipped accelerate configs, two CPU processes (DeepSpeed's CPU
accelerator, gloo), compared with a DDP run of the same recipe.

DeepSpeed lives in .deepspeed/ beside the venv (`make install`), so the venv itself keeps testing the
"DeepSpeed is not installed" errors; these runs put it on PYTHONPATH.
"""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT
from test_distributed import launch, ranks, recipe_for

DEEPSPEED = ROOT / ".deepspeed"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DEEPSPEED / "deepspeed").is_dir(),
        reason="DeepSpeed is not in .deepspeed/: `make install` puts it there (the venv itself stays without it)",
    ),
]
ACCELERATE = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "2", "--main_process_port", "29563"]


def run_with(config: str, tiny_model: str, tmp: Path) -> tuple[list[dict], dict, pd.DataFrame]:
    """Train the distributed tests' recipe under an accelerate config; per-rank probes, metrics, predictions."""
    out = tmp / "out"
    path = tmp / "recipe.yaml"
    # 3 epochs of 17 steps: enough for the tiny model to leave chance, so "trains like DDP" means something.
    recipe = recipe_for(tiny_model, out, per_device_train_batch_size=8, num_train_epochs=3, warmup_steps=6)
    # DeepSpeed runs each batch whole; so must DDP here, or its chunks would draw other dropout masks.
    # Flattened batches under ZeRO-3 ended 1e-4 away from DDP flattened (not yet understood): both run padded.
    recipe["batching"] = {"length_split_cost": None, "padding": "dynamic"}
    path.write_text(json.dumps(recipe))
    done = launch(
        [*ACCELERATE, "--config_file", str(ROOT / "recipes" / "accelerate" / config)], tmp / "probe", str(path),
        env_extra={"PYTHONPATH": str(DEEPSPEED)}, tmp=tmp,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    return ranks(tmp / "probe"), metrics, pd.read_csv(out / "predictions.csv")


@pytest.fixture(scope="module")
def ddp(tiny_model, tmp_path_factory):
    return run_with("multi_gpu.yaml", tiny_model, tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize(
    ("config", "stage", "tolerance"),
    [("deepspeed_zero2.yaml", 2, 1e-4), ("deepspeed_zero3.yaml", 3, 1e-4), ("deepspeed_zero3_bf16.yaml", 3, 0.02)],
)
def test_zero_trains_like_ddp_and_saves_a_model_pipeline_loads(config, stage, tolerance, ddp, tiny_model, tmp_path):
    from transformers import pipeline

    probes, metrics, predictions = run_with(config, tiny_model, tmp_path)
    _, ddp_metrics, ddp_predictions = ddp
    assert [(p["engine"], p["zero_stage"]) for p in probes] == [("DeepSpeedEngine", stage)] * 2
    assert ddp[0][0]["engine"] == "DistributedDataParallel"
    # Sharding changes where the optimizer state lives, not the arithmetic: in fp32 the run ends with
    # DDP's test loss; bf16 matmuls (the _bf16 config's precision, followed by the recipe) move it slightly.
    assert metrics["test"]["loss"] == pytest.approx(ddp_metrics["test"]["loss"], abs=tolerance)
    assert metrics["test"]["loss"] < 0.68 and metrics["test"]["accuracy"] >= 0.75  # it learned (chance: ln 2, 0.5)
    assert len(predictions) == 119
    if tolerance < 1e-3:
        assert (predictions["predicted"] == ddp_predictions["predicted"]).all()
    # Only the main process writes; ZeRO-3's shards are gathered into an ordinary model on save.
    assert probes[1]["writes"] == []
    classify = pipeline("text-classification", model=str(tmp_path / "out"), device="cpu")
    labels = [r["label"] for r in classify(list(predictions["text"]), truncation=True, max_length=64, batch_size=32)]
    assert labels == list(predictions["predicted"])
