"""How this process was launched (python, torchrun, accelerate launch) and what that launch can actually run.

Launchers start processes before any of our code runs, so a launch that cannot work (more processes than
GPUs, DeepSpeed that is not installed, `accelerate launch --num_processes 2` that silently started one
process) is caught here, when the recipe is validated, before anything is loaded, trained or written.
"""

from __future__ import annotations

import importlib.util
import os
import time

import torch


def launch_problems(kw: dict) -> list[str]:
    """Problems with `training:` keys (as coerced from the recipe) given how this process was launched."""
    out = []
    env = os.environ
    if kw.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        out.append(
            f"training.deepspeed: {kw['deepspeed']!r} needs DeepSpeed, which is not installed; pip install deepspeed "
            "on a CUDA machine, or drop the key and launch with recipes/accelerate/multi_gpu.yaml (DDP) or fsdp.yaml"
        )
    launched = env.get("ACCELERATE_MIXED_PRECISION")
    if launched in ("bf16", "fp16") and not kw.get(launched):
        given = ", ".join(f"{k}: {str(kw[k]).lower()}" for k in ("bf16", "fp16") if k in kw)
        out.append(
            f"training.{launched}: the accelerate launch asks for {launched} mixed precision but the recipe sets {given}; "
            f"drop bf16/fp16 from the recipe to follow the launcher, or launch with --mixed_precision no"
        )
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" and kw.get("use_cpu"):
        # accelerate drops FSDP for CPU processes, while from_pretrained still leaves the weights of every
        # process but the first on the meta device (fsdp_cpu_ram_efficient_loading): a crash deep in Trainer.
        out.append(
            "launch: FSDP shards a model across GPUs, but this run trains on the CPU (no GPU found, or training.use_cpu: true), "
            "where accelerate does not apply FSDP; launch CPU processes with recipes/accelerate/multi_gpu.yaml"
        )
    local_processes = int(env.get("LOCAL_WORLD_SIZE", "1"))
    gpus = torch.cuda.device_count()
    if local_processes > 1 and not kw.get("use_cpu") and gpus and local_processes > gpus:
        out.append(
            f"launch: the launcher started {local_processes} processes on this machine but it has {gpus} GPU(s); "
            f"use --num_processes {gpus} (accelerate launch) or --nproc_per_node {gpus} (torchrun)"
        )
    # `accelerate launch --num_processes N` without a multi-process config or flag runs ONE process (its
    # simple launcher only sets MASTER_ADDR): training would silently use 1/N of the hardware asked for.
    if "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env and "WORLD_SIZE" not in env:
        out.append(
            "launch: accelerate launch was asked for several processes but started one; add --multi_gpu "
            "(on a CPU-only machine it starts CPU processes that train with gloo), "
            "or pass --config_file recipes/accelerate/multi_gpu.yaml"
        )
    return out


def busy_elsewhere(samples: int = 5, interval_s: float = 0.05) -> int:
    """Runnable processes other than this one, right now: /proc/loadavg's running count, less ourselves,
    the median of a few reads (the load averages lag by a minute and would miss a job that just started)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0  # not Linux: assume the cores are ours
        counts.append(max(running - 1, 0))
        if i + 1 < samples:
            time.sleep(interval_s)
    return sorted(counts)[len(counts) // 2]


def choose_threads(on_cpu: bool) -> str | None:
    """Set torch's CPU threads to the cores free for each of this machine's processes, and say so; None when
    the user chose (OMP_NUM_THREADS) or a GPU computes. OpenMP threads wait for one another at every op: one
    thread descheduled by another busy process stalls the rest (a 1x8 training step went from 0.03 s to 2.2 s
    with one competing process on 2 cores), while one thread fewer costs at most its share."""
    if not on_cpu or os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    others = busy_elsewhere()
    # The other processes of this launch are starting too and count as busy: leave them out of `others`.
    free = max(cores - max(others - (local - 1), 0), 1)
    threads = max(free // local, 1)
    torch.set_num_threads(threads)
    busy = f", {others} runnable elsewhere" if others else ""
    share = f" for each of {local} processes" if local > 1 else ""
    return f"threads: {threads} of {cores} cores{share}{busy} (set OMP_NUM_THREADS to choose)"
