"""`run.py` with instruments, for the multi-process and resume tests: python tests/probe_run.py PROBE_DIR RECIPE [args].

Each process runs the real `run.main` and then writes PROBE_DIR/rank<N>.json: a hash of its final weights,
how many texts it tokenized, how many training forward passes it ran and on which rows, which files it wrote through recipekit.core.files, and the Trainer's log
history. With PROBE_KILL_AT_STEP=N the process kills itself with SIGKILL right after checkpoint N is saved,
the way an out-of-memory killer or a pre-empted node would stop it: no cleanup, no exception; it first
writes the time to PROBE_DIR/killed-rank<N>.
"""

import hashlib
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from transformers import TrainerCallback

import run
from recipekit.core import files

RANK = int(os.environ.get("RANK", "0"))
probe = {"rank": RANK, "tokenized_texts": 0, "writes": [], "training_forwards": 0, "training_rows": []}
captured = {}


class KillAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            # When, for the survivors' tests: how soon after this kill they stopped.
            probe_dir = Path(sys.argv[1])
            probe_dir.mkdir(parents=True, exist_ok=True)
            (probe_dir / f"killed-rank{RANK}").write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)


def build_trainer(*args, **kwargs):
    trainer = original_build_trainer(*args, **kwargs)
    if os.environ.get("PROBE_KILL_AT_STEP"):
        trainer.add_callback(KillAfterSave(int(os.environ["PROBE_KILL_AT_STEP"])))
    captured["trainer"] = trainer

    def count_training_forward(module, args):
        probe["training_forwards"] += module.training

    trainer.model.register_forward_pre_hook(count_training_forward)

    def record_training_rows(module, args, kwargs):
        # Which examples this process trained on, in order: a short digest of each row's input_ids.
        if module.training and kwargs.get("input_ids") is not None:
            probe["training_rows"] += [hashlib.sha256(row.numpy().tobytes()).hexdigest()[:16] for row in kwargs["input_ids"]]

    trainer.model.register_forward_pre_hook(record_training_rows, with_kwargs=True)
    return trainer


def load_tokenizer(*args, **kwargs):
    tokenizer = original_load_tokenizer(*args, **kwargs)
    if tokenizer is None:  # tokenizer.train: run.py learns one from the data, uncounted
        return None
    cls = type(tokenizer)
    encode = cls.__call__

    def counting(self, text, *rest, **kw):
        probe["tokenized_texts"] += len(text) if isinstance(text, list) else 1
        return encode(self, text, *rest, **kw)

    cls.__call__ = counting
    return tokenizer


@contextmanager
def atomic_file(path, *args, **kwargs):
    # Every file recipekit writes goes through core.files.atomic_file (write_atomic, write_json, --output).
    probe["writes"].append(Path(path).name)
    with original_atomic_file(path, *args, **kwargs) as f:
        yield f


original_build_trainer, run.build_trainer = run.build_trainer, build_trainer
original_load_tokenizer, run.load_tokenizer = run.load_tokenizer, load_tokenizer
original_atomic_file, files.atomic_file = files.atomic_file, atomic_file

if __name__ == "__main__":
    probe_dir = Path(sys.argv[1])
    status = run.guarded(run.main, sys.argv[2:])
    trainer = captured.get("trainer")
    if trainer is not None:
        digest = hashlib.sha256()
        for name, tensor in sorted(trainer.model.state_dict().items()):
            if hasattr(tensor, "full_tensor"):  # FSDP2 shards parameters as DTensors; gathering is collective, same order on every rank
                tensor = tensor.full_tensor()
            digest.update(name.encode())
            # The raw bytes, whatever the dtype (numpy has no bfloat16).
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        probe["weights_sha256"] = digest.hexdigest()
        probe["log_history"] = trainer.state.log_history
        engine = trainer.model_wrapped  # DistributedDataParallel, DeepSpeedEngine, or the model itself
        probe["engine"] = type(engine).__name__
        probe["zero_stage"] = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / f"rank{RANK}.json").write_text(json.dumps(probe, default=str))
    sys.exit(status)
