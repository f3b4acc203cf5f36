"""Launch configurations: the accelerate configs we ship, and launches or resumes that cannot work."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, run_cli
from safetensors.torch import save_file

from recipekit.core.errors import RecipeError
from recipekit.recipe.build import build_recipe

CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
SAMPLE = ROOT / "recipekit" / "sample_data"


def test_every_launch_config_is_shipped():
    assert [p.stem for p in CONFIGS] == [
        "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_bf16", "fsdp", "multi_gpu", "multi_node", "single_gpu",
    ]
    assert [p.name for p in sorted((ROOT / "recipes" / "slurm").iterdir())] == ["multi_node.sbatch"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_loads_and_says_how_to_use_it(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert len(header) >= 3
    assert f"accelerate launch --config_file recipes/accelerate/{path.name}" in "\n".join(header)
    expected = {
        "single_gpu": ("NO", 1), "multi_gpu": ("MULTI_GPU", 2), "fsdp": ("FSDP", 2),
        "deepspeed_zero2": ("DEEPSPEED", 2), "deepspeed_zero3": ("DEEPSPEED", 2), "deepspeed_zero3_bf16": ("DEEPSPEED", 2),
        "multi_node": ("MULTI_GPU", 16),
    }[path.stem]
    assert (str(config.distributed_type.value), config.num_processes) == expected
    # Machines meet through a c10d rendezvous, which assigns the ranks: a static one hangs, before any of our
    # code runs, on a machine_rank out of range.
    assert (config.num_machines, config.rdzv_backend) == ((2, "c10d") if path.stem == "multi_node" else (1, "static"))
    if path.stem.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == (2 if "zero2" in path.stem else 3)
        # Accumulation and clipping come from the recipe ("auto"), never from two places at once.
        assert "gradient_accumulation_steps" not in config.deepspeed_config
        assert "gradient_clipping" not in config.deepspeed_config
    assert str(config.mixed_precision) == ("bf16" if path.stem in ("single_gpu", "fsdp", "deepspeed_zero3_bf16") else "no")


@pytest.fixture
def base(tmp_path):
    return {
        "model": {"name_or_path": "bert-base-uncased"},
        "data": {"train_file": str(SAMPLE / "reviews_train.csv")},
        "training": {"output_dir": str(tmp_path / "out")},
    }


def problems(raw) -> list[str]:
    with pytest.raises(RecipeError) as e:
        build_recipe(raw)
    return e.value.problems


@pytest.mark.skipif(bool(__import__("importlib.util").util.find_spec("deepspeed")), reason="DeepSpeed is installed")
def test_deepspeed_without_deepspeed_is_one_recipe_error(base, tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}))
    base["training"]["deepspeed"] = str(ds)
    assert problems(base) == [
        (f"training.deepspeed: {str(ds)!r} needs DeepSpeed, which is not installed; pip install deepspeed on a CUDA "
        "machine, or drop the key and launch with recipes/accelerate/multi_gpu.yaml (DDP) or fsdp.yaml")
    ]


def test_more_processes_than_gpus_is_refused(base, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    base["training"]["use_cpu"] = False
    assert problems(base) == [
        ("launch: the launcher started 8 processes on this machine but it has 2 GPU(s); "
        "use --num_processes 2 (accelerate launch) or --nproc_per_node 2 (torchrun)")
    ]


def test_accelerate_starting_one_process_instead_of_several_is_refused(base, monkeypatch):
    # What `accelerate launch --num_processes 2 run.py` leaves in the environment on a machine without GPUs.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert problems(base)[0].startswith("launch: accelerate launch was asked for several processes but started one")


def test_fsdp_on_cpu_processes_is_refused(base, monkeypatch):
    # What `accelerate launch --config_file recipes/accelerate/fsdp.yaml` exports; this machine has no GPU.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    base["training"]["use_cpu"] = True
    assert problems(base) == [
        ("launch: FSDP shards a model across GPUs, but this run trains on the CPU (no GPU found, or training.use_cpu: true), "
        "where accelerate does not apply FSDP; launch CPU processes with recipes/accelerate/multi_gpu.yaml")
    ]


def test_the_launchers_mixed_precision_is_the_recipes_unless_the_recipe_says_otherwise(base, monkeypatch):
    # What `accelerate launch --config_file recipes/accelerate/deepspeed_zero3_bf16.yaml` exports. Without
    # bf16 in TrainingArguments, Trainer refuses DeepSpeed's bf16.enabled ("mismatch TrainingArguments").
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    recipe = build_recipe(base)
    assert (recipe.training.bf16, recipe.training.fp16, recipe.training.mixed_precision) == (True, False, "bf16")
    base["training"]["fp16"] = True
    assert problems(base) == [
        ("training.bf16: the accelerate launch asks for bf16 mixed precision but the recipe sets fp16: true; "
        "drop bf16/fp16 from the recipe to follow the launcher, or launch with --mixed_precision no")
    ]
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    base["training"]["fp16"] = False
    assert build_recipe(base).training.mixed_precision == "no"


@pytest.mark.skipif(bool(__import__("importlib.util").util.find_spec("deepspeed")), reason="DeepSpeed is installed")
def test_accelerate_deepspeed_config_fails_before_anything_is_written(tiny_model, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    out = tmp_path / "out"
    recipe.write_text(yaml.safe_dump({
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(SAMPLE / "reviews_train.csv")},
        "training": {"output_dir": str(out), "max_steps": 1},
    }))
    accelerate = Path(sys.executable).parent / "accelerate"
    config = ROOT / "recipes" / "accelerate" / "deepspeed_zero2.yaml"
    done = subprocess.run(  # noqa: PLW1510 - the exit status is what the test checks
        [str(accelerate), "launch", "--config_file", str(config), str(ROOT / "run.py"), str(recipe)],
        capture_output=True, text=True, timeout=300, env={**os.environ},
    )
    assert done.returncode != 0
    # accelerate's own message, raised before it starts a single process.
    assert "DeepSpeed is not installed" in done.stderr
    assert not out.exists()


@pytest.fixture
def interrupted_run(tmp_path, tiny_model):
    """What a run killed after its first checkpoint leaves: recipe.yaml, status.json and checkpoint-5 with its config."""
    out = tmp_path / "out"
    recipe = {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(SAMPLE / "reviews_train.csv"), "max_train_samples": 40},
        "metrics": ["accuracy"],
        "training": {"output_dir": str(out), "max_steps": 10, "report_to": "none"},
    }
    ckpt = out / "checkpoint-5"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"id2label": {"0": "negative", "1": "positive"}}))
    # Complete as Trainer leaves it (state written last, weights whole): resume checks the model before anything.
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 5, "log_history": []}))
    save_file({"weight": torch.zeros(2)}, str(ckpt / "model.safetensors"))
    (out / "recipe.yaml").write_text(yaml.safe_dump(build_recipe(recipe).to_dict(), sort_keys=False))
    (out / "status.json").write_text('{"status": "interrupted", "step": 5, "signal": 15}')
    return recipe, out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_without_a_checkpoint_is_refused(write_recipe, tmp_path, tiny_model, capsys):
    path = write_recipe({
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(SAMPLE / "reviews_train.csv")},
        "training": {"output_dir": str(tmp_path / "empty")},
    })
    assert run_cli([path, "--resume"]) == 2
    assert capsys.readouterr().err == f"error: --resume: {str(tmp_path / 'empty')!r} has no checkpoint-* folder to resume from\n"


def test_resume_with_another_model_is_refused(interrupted_run, write_recipe, minilm_path, capsys):
    recipe, out = interrupted_run
    before = snapshot(out)
    recipe["model"]["name_or_path"] = minilm_path
    assert run_cli([write_recipe(recipe), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"error: --resume: {out / 'checkpoint-5'} was trained with model.name_or_path ")
    assert err.endswith(f"this recipe has {minilm_path!r}; resume with the original recipe, or use another output_dir")
    assert snapshot(out) == before


def test_resume_with_another_label_set_is_refused(interrupted_run, write_recipe, tmp_path, capsys):
    recipe, out = interrupted_run
    before = snapshot(out)
    relabelled = tmp_path / "train.csv"
    relabelled.write_text("text,label\n" + "".join(f"review {i},{['bad', 'good', 'meh'][i % 3]}\n" for i in range(30)))
    recipe["data"]["train_file"] = str(relabelled)
    assert run_cli([write_recipe(recipe), "--resume"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --resume: {out / 'checkpoint-5'} was trained on labels negative, positive; this recipe's data has "
        "bad, good, meh; resume with the original data, or use another output_dir"
    )
    assert snapshot(out) == before


def test_memory_and_speed_keys_reach_trainer_and_checkpointing_changes_no_number(tiny_model, write_recipe, tmp_path, monkeypatch):
    import run

    trainers = []
    original = run.build_trainer
    monkeypatch.setattr(run, "build_trainer", lambda *a, **k: trainers.append(original(*a, **k)) or trainers[-1])
    losses = {}
    for checkpointing in (False, True):
        recipe = {
            "model": {"name_or_path": tiny_model},
            "data": {"train_file": str(SAMPLE / "reviews_train.csv"), "max_train_samples": 64},
            # One path for both: flattened batches draw other dropout masks, and checkpointing runs the length split.
            "batching": {"padding": "length_split"},
            "training": {"output_dir": str(tmp_path / f"run-{checkpointing}"), "max_steps": 4, "per_device_train_batch_size": 8,
                         "gradient_accumulation_steps": 2, "gradient_checkpointing": checkpointing, "logging_steps": 1,
                         "save_strategy": "no", "report_to": "none", "seed": 1},
        }
        assert run_cli([write_recipe(recipe, f"r-{checkpointing}.yaml")]) == 0
        trainer = trainers[-1]
        assert trainer.model.is_gradient_checkpointing is checkpointing
        assert trainer.args.gradient_accumulation_steps == 2
        losses[checkpointing] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # Recomputing activations in the backward pass trades time for memory; every gradient stays the same.
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    compiled = build_recipe({**recipe, "training": {**recipe["training"], "torch_compile": True, "bf16": True}})
    assert (compiled.training.torch_compile, compiled.training.bf16) == (True, True)


@pytest.mark.parametrize(
    ("cores", "busy", "local", "threads"),
    [(2, 0, 1, 2), (2, 1, 1, 1), (2, 5, 1, 1), (8, 3, 1, 5), (8, 1, 2, 4), (8, 3, 2, 3), (2, 1, 2, 1)],
)
def test_threads_fit_the_free_cores(cores, busy, local, threads, monkeypatch):
    import torch

    from recipekit.core import launch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(launch.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(launch, "busy_elsewhere", lambda: busy)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    try:
        line = launch.choose_threads(on_cpu=True)
        assert torch.get_num_threads() == threads
        assert line.startswith(f"threads: {threads} of {cores} cores")
    finally:
        torch.set_num_threads(before)


def test_threads_set_by_the_user_or_on_a_gpu_are_left_alone(monkeypatch):
    import torch

    from recipekit.core import launch

    before = torch.get_num_threads()
    monkeypatch.setattr(launch, "busy_elsewhere", lambda: 7)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert launch.choose_threads(on_cpu=True) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert launch.choose_threads(on_cpu=False) is None
    assert torch.get_num_threads() == before


def test_a_competing_process_is_seen_as_busy():
    from recipekit.core.launch import busy_elsewhere

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # past its start-up
        assert busy_elsewhere() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_a_global_batch_derives_the_accumulation_and_the_recipe_keeps_it(base, tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    base["model"]["name_or_path"] = tiny_model
    base["training"]["per_device_train_batch_size"] = 4
    base["batching"] = {"global_batch_size": 16}
    recipe = build_recipe(base)
    assert recipe.training.gradient_accumulation_steps == 4
    # recipe.yaml keeps the global batch, not the accumulation derived for this number of processes.
    saved = recipe.to_dict()
    assert saved["batching"]["global_batch_size"] == 16 and "gradient_accumulation_steps" not in saved["training"]


@pytest.mark.parametrize("world, per_device, total, accumulation", [(1, 8, 32, 4), (2, 8, 32, 2), (4, 8, 32, 1), (2, 4, 24, 3)])
def test_the_accumulation_follows_the_number_of_processes(world, per_device, total, accumulation, monkeypatch):
    from recipekit.recipe.sections import BatchingArgs
    from recipekit.recipe.training import derive_accumulation

    monkeypatch.setenv("WORLD_SIZE", str(world))
    kw = {"per_device_train_batch_size": per_device}
    assert derive_accumulation(BatchingArgs(global_batch_size=total), kw) == []
    assert kw["gradient_accumulation_steps"] == accumulation
    assert per_device * world * accumulation == total


def test_a_global_batch_the_processes_cannot_divide_is_refused(monkeypatch):
    from recipekit.recipe.sections import BatchingArgs
    from recipekit.recipe.training import derive_accumulation

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert derive_accumulation(BatchingArgs(global_batch_size=20), {"per_device_train_batch_size": 8}) == [
        ("batching.global_batch_size: 20 is not a multiple of per_device_train_batch_size 8 x 2 processes = 16; use 16 or 32, "
        "or another per_device_train_batch_size")
    ]


def test_a_global_batch_with_its_own_accumulation_or_below_one_is_refused(base, tiny_model):
    base["model"]["name_or_path"] = tiny_model
    base["training"]["gradient_accumulation_steps"] = 2
    base["batching"] = {"global_batch_size": 16}
    assert problems(base) == [
        ("batching.global_batch_size: 16 sets training.gradient_accumulation_steps itself; remove one of the two "
        "(gradient_accumulation_steps is 2)")
    ]
    base["training"].pop("gradient_accumulation_steps")
    base["batching"] = {"global_batch_size": 0}
    assert problems(base) == ["batching.global_batch_size: 0 must be 1 or more (or null)"]


SBATCH = ROOT / "recipes" / "slurm" / "multi_node.sbatch"


def fake_slurm(tmp_path: Path) -> dict:
    """srun that runs its command once, scontrol that lists the job's two nodes, torchrun that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "srun": '#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\nexec "$@"\n',
        "scontrol": "#!/bin/bash\necho gpu-node-07\necho gpu-node-08\n",
        "torchrun": f'#!/bin/bash\nprintf "%s\\n" "$@" > {tmp_path / "torchrun.args"}\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_PER_TASK": "32",
            "SLURM_JOB_NODELIST": "gpu-node-[07-08]", "SLURM_JOB_ID": "4242"}


def test_slurm_script_is_valid_bash_and_runs_torchrun_with_a_c10d_rendezvous_from_the_slurm_variables(tmp_path):
    assert subprocess.run(["bash", "-n", str(SBATCH)], check=False).returncode == 0
    text = SBATCH.read_text()
    for variable in ("SLURM_NNODES", "SLURM_GPUS_ON_NODE", "SLURM_JOB_NODELIST", "SLURM_JOB_ID"):
        assert f"${variable}" in text or f"${{{variable}" in text, variable
    # Every #SBATCH setting says what it is for, on the comment line above it.
    lines = text.splitlines()
    assert all(lines[i - 1].startswith("# ") for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    env = fake_slurm(tmp_path)
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run(["bash", str(SBATCH), "recipes/quickstart.yaml", "training.max_steps=5", "--resume"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "torchrun.args").read_text().splitlines() == [
        "--nnodes", "2", "--nproc_per_node", "8", "--rdzv_backend", "c10d", "--rdzv_endpoint", "gpu-node-07:29742",
        "--rdzv_id", "4242", "--max_restarts", "0", "run.py", "recipes/quickstart.yaml", "training.max_steps=5", "--resume",
    ]


@pytest.mark.parametrize(("variables", "message"), [
    ({"SLURM_NNODES": None}, "SLURM_NNODES: not inside a SLURM job: submit with sbatch"),
    ({"SLURM_NNODES": "two"}, "error: SLURM_NNODES=two: the node count must be a whole number, 1 or more"),
    ({"SLURM_GPUS_ON_NODE": "0"}, "error: SLURM_GPUS_ON_NODE=0: the processes per node must be a whole number, 1 or more (set #SBATCH --gpus-per-node)"),
])
def test_slurm_script_refuses_a_job_it_cannot_run_in_one_line(tmp_path, variables, message):
    env = fake_slurm(tmp_path)
    for key, value in variables.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    done = subprocess.run(["bash", str(SBATCH), "recipes/quickstart.yaml"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.strip().endswith(message), done.stderr
    assert not (tmp_path / "torchrun.args").exists()


def test_a_node_or_process_rank_out_of_range_is_refused(base, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert problems(base) == [
        ("launch: process rank 3 (RANK) is out of range for 2 (WORLD_SIZE); valid: 0 to 1; "
         "number the nodes from 0 (torchrun --node_rank, accelerate --machine_rank, SLURM_NODEID)")
    ]
    monkeypatch.setenv("GROUP_RANK", "x")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    assert problems(base) == ["launch: GROUP_RANK='x', GROUP_WORLD_SIZE='2': a node rank and a count must be whole numbers, the count 1 or more"]


@pytest.mark.parametrize("own", [False, True], ids=["every-rank-meets-it", "own-shard"])
def test_a_rank_other_than_0_prints_only_a_problem_it_alone_may_have_met(monkeypatch, capsys, own):
    """Rank 0 prints the problems every process finds alike; another rank prints only its own (a bad record in its
    shard), named by rank. Either way the others are told, so survivors whose collective fails say why."""
    from recipekit.commands.cli import guarded
    from recipekit.core.errors import OwnError
    from recipekit.outputs import folder

    told = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(folder, "tell_peers", lambda problem: told.append(problem) or f"rank 1 of 2: {problem}")
    problem = "part-02.jsonl line 5: not valid JSON" if own else "data.label_column: 'y' is not a column"

    def fine_tune(argv):
        raise (OwnError if own else RecipeError)(problem)

    assert guarded(folder.guard_run(fine_tune), []) == 2
    assert told == [problem]
    assert capsys.readouterr().err.splitlines() == ([f"error: rank 1 of 2: {problem}"] if own else [])
