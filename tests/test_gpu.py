"""Claims that need a CUDA GPU: mixed precision, torch_compile, SDPA, the length split, flattened batches, predict,
FSDP, resume.

Marked `gpu` and skipped without CUDA, so the CPU suite claims none of them. They run in `make gpu-check`
(bench/gpu_check.py) on a GPU machine: `pytest -m gpu tests/test_gpu.py`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import ROOT, run_cli
from test_batching import gradients_after_one_step
from test_distributed import BIN, SAMPLE, launch, losses, ranks, recipe_for

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run `make gpu-check` on a GPU machine"),
]


# The tiny BERT learns the sample reviews in 6 epochs (test accuracy 0.99 on the CPU; after 1 epoch it is
# still at chance, 0.50), so a run that trains wrongly shows up as an accuracy far below 0.9.
EPOCHS = 6


def train(tiny_model, tmp_path, name: str, batching=None, **training) -> dict:
    out = tmp_path / name
    recipe = recipe_for(tiny_model, out, per_device_train_batch_size=8, num_train_epochs=EPOCHS, **training)
    if batching:
        recipe["batching"] = batching
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(recipe))
    assert run_cli([path]) == 0
    return json.loads((out / "metrics.json").read_text())


def cuda_name() -> str:
    return torch.cuda.get_device_name(0)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_end_to_end_on_the_gpu(precision, tiny_model, tmp_path):
    metrics = train(tiny_model, tmp_path, precision, **{precision: True})
    assert metrics["status"] == "finished"
    assert math.isfinite(metrics["train"]["train_loss"]) and math.isfinite(metrics["test"]["loss"])
    assert metrics["test"]["accuracy"] >= 0.9
    assert cuda_name() in json.dumps(metrics["manifest"]["hardware"])
    assert len(pd.read_csv(tmp_path / precision / "predictions.csv")) == 119


def test_torch_compile_trains_to_the_eager_result(tiny_model, tmp_path):
    # fp32 and unsplit, so the two runs differ only in compiled kernels (fused, reordered sums).
    unsplit = {"length_split_cost": None}  # chunks of changing shapes would recompile at every new one
    eager = train(tiny_model, tmp_path, "eager", unsplit, eval_strategy="no")
    compiled = train(tiny_model, tmp_path, "compiled", unsplit, eval_strategy="no", torch_compile=True)
    assert eager["test"]["accuracy"] >= 0.9
    assert compiled["train"]["train_loss"] == pytest.approx(eager["train"]["train_loss"], rel=5e-2)
    assert compiled["test"]["accuracy"] == pytest.approx(eager["test"]["accuracy"], abs=0.03)


def test_attention_is_sdpa_and_matches_eager_attention(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = tokenizer(["a gem", "a long and winding review that goes on about the plot " * 4], padding=True,
                      return_tensors="pt").to("cuda")
    torch.manual_seed(0)
    default = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).cuda().eval()
    assert default.config._attn_implementation == "sdpa"
    eager = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2, attn_implementation="eager").cuda().eval()
    eager.load_state_dict(default.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(default(**batch).logits, eager(**batch).logits, rtol=1e-4, atol=1e-5)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            torch.testing.assert_close(default(**batch).logits, eager(**batch).logits, rtol=0.05, atol=0.05)


def test_length_split_on_cuda_gives_the_unsplit_gradient(tiny_model, tmp_path):
    whole_loss, whole, _ = gradients_after_one_step(tiny_model, tmp_path, chunk_cost=None, use_cpu=False)
    split_loss, chunked, chunks = gradients_after_one_step(tiny_model, tmp_path, chunk_cost=16, use_cpu=False)
    assert chunks >= 2
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    assert whole.keys() == chunked.keys() and len(whole) > 20
    # Looser than the CPU test's 1e-4: CUDA's attention and embedding backward add in no fixed order. A
    # wrongly normalised chunk would be off by its share of the batch, 15% or more here.
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-3, atol=1e-5, msg=name)


def test_predict_on_the_gpu_matches_predict_on_the_cpu(tiny_model, tmp_path):
    train(tiny_model, tmp_path, "run", eval_strategy="no")
    outputs = {}
    for device, visible in (("gpu", os.environ.get("CUDA_VISIBLE_DEVICES", "0")), ("cpu", "")):
        out = tmp_path / f"{device}.csv"
        done = subprocess.run(
            [sys.executable, "run.py", "predict", str(tmp_path / "run"), "--input", str(SAMPLE / "reviews_test.csv"),
             "--output", str(out)],
            cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": visible}, capture_output=True, text=True, check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[device] = pd.read_csv(out)
    gpu, cpu = outputs["gpu"], outputs["cpu"]
    assert len(gpu) == 120
    probs = [c for c in gpu.columns if c.startswith("prob_")]
    assert probs
    pd.testing.assert_frame_equal(gpu[probs], cpu[probs], rtol=1e-3, atol=1e-4)
    assert (gpu.drop(columns=probs) == cpu.drop(columns=probs)).all().all()


def test_fsdp_trains_on_one_process(tiny_model, tmp_path):
    recipe = recipe_for(tiny_model, tmp_path / "out", per_device_train_batch_size=8, num_train_epochs=EPOCHS)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    launcher = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "recipes" / "accelerate" / "fsdp.yaml"),
                "--num_processes", "1", "--main_process_port", "29571"]
    done = launch(launcher, tmp_path / "probe", str(path), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (rank0,) = ranks(tmp_path / "probe")
    assert "FSDP" in rank0["engine"], rank0["engine"]  # fully_shard swaps in an FSDP<Model> class
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["loss"]) and metrics["test"]["accuracy"] >= 0.9
    # The full state dict is gathered on save: the folder loads as an ordinary model and predicts the test set.
    predict = subprocess.run(
        [sys.executable, "run.py", "predict", str(tmp_path / "out"), "--input", str(SAMPLE / "reviews_test.csv"),
         "--output", str(tmp_path / "again.csv")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert predict.returncode == 0, predict.stderr[-3000:]
    saved = pd.read_csv(tmp_path / "out" / "predictions.csv").drop_duplicates("text")
    again = pd.read_csv(tmp_path / "again.csv").drop_duplicates("text")
    both = saved.merge(again, on="text", suffixes=("", "_again"))
    assert len(both) == len(saved)
    # Trained under bf16, predicted in fp32 from the gathered weights: a flip only for a review near 0.5.
    assert (both["predicted"] == both["predicted_again"]).mean() > 0.97


def test_run_killed_on_the_gpu_resumes_to_the_same_result(tiny_model, tmp_path):
    # As tests/test_distributed.py on the CPU: killed with SIGKILL right after checkpoint 20 of 34 steps.
    recipe = recipe_for(tiny_model, tmp_path / "out", per_device_train_batch_size=8, save_strategy="steps", save_steps=10,
                        eval_strategy="no", logging_steps=5)
    recipe["data"]["validation_split"] = 0.0
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    whole = launch([sys.executable], tmp_path / "probe-whole", str(path), "training.output_dir=whole", tmp=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = launch([sys.executable], tmp_path / "probe-killed", str(path), "training.output_dir=cut",
                    env_extra={"PROBE_KILL_AT_STEP": "20"}, tmp=tmp_path)
    assert killed.returncode == -9
    resumed = launch([sys.executable], tmp_path / "probe-resumed", str(path), "training.output_dir=cut", "--resume", tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first, second = ranks(tmp_path / "probe-whole")[0], ranks(tmp_path / "probe-resumed")[0]
    # CUDA's backward sums in a nondeterministic order (embedding gradients), so close rather than bit-identical.
    whole_metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())["test"]
    resumed_metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())["test"]
    assert resumed_metrics["loss"] == pytest.approx(whole_metrics["loss"], rel=1e-3)
    assert abs(resumed_metrics["accuracy"] - whole_metrics["accuracy"]) <= 2 / 119
    steps = [h["step"] for h in second["log_history"] if "loss" in h]
    assert steps == [h["step"] for h in first["log_history"] if "loss" in h] and steps[:4] == [5, 10, 15, 20]
    assert losses(second) == pytest.approx(losses(first), rel=1e-3)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "gpt2"])
def test_flattened_logits_match_padded_on_cuda(family):
    from test_flatten import FAMILIES, both_ways, family_model, uneven_batch

    model = family_model(family).cuda()
    batch = {k: v.cuda() for k, v in uneven_batch(FAMILIES[family].get("pad_token_id") or 0, token_types=family == "bert").items()}
    with torch.no_grad():
        padded, flat = both_ways(model, batch)
        torch.testing.assert_close(flat, padded, rtol=0, atol=1e-5)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            padded, flat = both_ways(model, batch)
    # bf16 rounds each matmul to 8 bits of mantissa, in another order flattened than padded.
    torch.testing.assert_close(flat.float(), padded.float(), rtol=0, atol=3e-2)


def test_flattened_step_has_the_padded_gradient_on_cuda(tiny_model, tmp_path):
    from test_flatten import head_step

    padded_loss, padded_logits, padded = head_step(tiny_model, tmp_path, "sequence_classification", flatten=False, use_cpu=False)
    flat_loss, flat_logits, flat = head_step(tiny_model, tmp_path, "sequence_classification", flatten=True, use_cpu=False)
    torch.testing.assert_close(flat_logits, padded_logits, rtol=0, atol=1e-5)
    assert flat_loss == pytest.approx(padded_loss, abs=1e-5)
    for key in padded:
        torch.testing.assert_close(flat[key], padded[key], rtol=0, atol=1e-5, msg=key)


def test_flattened_bf16_run_trains_like_the_padded_one(tiny_model, tmp_path):
    flat = train(tiny_model, tmp_path, "flat", {"padding": "flatten"}, bf16=True, eval_strategy="no")
    padded = train(tiny_model, tmp_path, "padded", {"padding": "dynamic"}, bf16=True, eval_strategy="no")
    assert flat["manifest"]["padding"] == "flatten" and flat["train"]["padding_share"] == 0.0
    assert flat["test"]["accuracy"] >= 0.9
    assert flat["test"]["accuracy"] == pytest.approx(padded["test"]["accuracy"], abs=0.03)
