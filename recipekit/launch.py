"""How this process was launched (python, torchrun, accelerate launch) and what that launch can actually run.

Launchers start processes before any of our code runs, so a launch that cannot work (more processes than
GPUs, DeepSpeed that is not installed, `accelerate launch --num_processes 2` that silently started one
process) is caught here, when the recipe is validated, before anything is loaded, trained or written.
"""

from __future__ import annotations

import importlib.util
import os

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
