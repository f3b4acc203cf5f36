"""Everything a run, export, merge, cv or sweep writes follows the user's umask, weights and checkpoints included:
teammates sharing a runs folder read a model as they read its metrics.json (safetensors 0.8 writes 0600 files)."""

import os
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import run_cli

from recipekit.commands.merge import merge
from recipekit.core.files import follow_umask


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def wrong_modes(root: Path, mask: int) -> list[str]:
    """Every file and folder under root (root too) whose mode is not what a plain open()/mkdir() gives under mask."""
    out = []
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        want = (0o777 if stat.S_ISDIR(st.st_mode) else 0o666) & ~mask
        if stat.S_IMODE(st.st_mode) != want:
            out.append(f"{path.relative_to(root.parent)} {oct(stat.S_IMODE(st.st_mode))}, want {oct(want)}")
    return out


def toy(tiny_model, tmp_path, **training) -> dict:
    rows = ["text,label"] + [f"{['awful', 'superb'][i % 2]} film {i},{['neg', 'pos'][i % 2]}" for i in range(32)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "validation.csv").write_text("\n".join(rows[:9]) + "\n")
    return {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(tmp_path / "train.csv"), "validation_file": str(tmp_path / "validation.csv"), "max_length": 16},
        "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 2, "per_device_train_batch_size": 16,
                     "eval_strategy": "epoch", "logging_steps": 1, "report_to": "none", "seed": 1, **training},
    }


@pytest.mark.slow  # a run, export and merge per case
@pytest.mark.parametrize("mask, peft", [(0o022, None), (0o027, {"r": 4, "lora_alpha": 8})], ids=["022-full", "027-lora"])
def test_a_run_its_checkpoints_export_and_merge_follow_the_umask(tiny_model, tmp_path, write_recipe, umask, mask, peft):
    umask(mask)
    recipe = toy(tiny_model, tmp_path)
    recipe["model"]["peft"] = peft
    assert run_cli([write_recipe(recipe)]) == 0
    run = tmp_path / "run"
    weights = "adapter_model.safetensors" if peft else "model.safetensors"
    assert (run / weights).is_file() and sorted(p.name for p in run.glob(f"checkpoint-*/{weights}"))
    assert wrong_modes(run, mask) == []
    assert run_cli(["export", run, "--format", "onnx", "--output", tmp_path / "onnx"]) == 0
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    assert wrong_modes(tmp_path / "onnx", mask) == []
    if peft:
        merge(str(run), str(tmp_path / "merged"))
        assert (tmp_path / "merged" / "model.safetensors").is_file()
        assert wrong_modes(tmp_path / "merged", mask) == []


@pytest.mark.slow  # cv folds trained
def test_cv_folds_follow_the_umask(tiny_model, tmp_path, write_recipe, umask):
    umask(0o027)
    recipe = toy(tiny_model, tmp_path, num_train_epochs=1)
    del recipe["data"]["validation_file"], recipe["training"]["eval_strategy"]
    assert run_cli(["cv", write_recipe(recipe), "--folds", 2]) == 0
    assert (tmp_path / "run" / "fold-1" / "model.safetensors").is_file()
    assert wrong_modes(tmp_path / "run", 0o027) == []


@pytest.mark.slow  # sweep trials trained
def test_sweep_trials_follow_the_umask(tiny_model, tmp_path, write_recipe, umask):
    umask(0o027)
    recipe = toy(tiny_model, tmp_path, num_train_epochs=1)
    recipe["sweep"] = {"values": {"training.seed": [1, 2]}}
    assert run_cli(["sweep", write_recipe(recipe)]) == 0
    assert len(list((tmp_path / "run").glob("*/model.safetensors"))) == 2
    assert wrong_modes(tmp_path / "run", 0o027) == []


def test_follow_umask_changes_what_the_block_wrote_and_nothing_else(tmp_path, umask):
    umask(0o022)
    mine = tmp_path / "notes.txt"
    mine.write_text("a user's own private file")
    mine.chmod(0o600)
    with follow_umask(tmp_path):
        fd, tmp = tempfile.mkstemp(dir=tmp_path)  # 0600, as safetensors' save_file writes
        os.close(fd)
        os.replace(tmp, tmp_path / "model.safetensors")
        os.rename(tempfile.mkdtemp(dir=tmp_path), tmp_path / "export")  # 0700
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
    assert stat.S_IMODE(mine.stat().st_mode) == 0o600
