"""Ctrl-C or SIGTERM during training: finish the current step, save a checkpoint, stop cleanly.

`python run.py RECIPE --resume` then loses at most the step that was running. A second Ctrl-C stops at
once (KeyboardInterrupt), for when a step itself hangs.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist
from transformers import TrainerCallback


class StopOnSignal(TrainerCallback):
    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self._anyone_received():
            control.should_save = True
            control.should_training_stop = True
        return control

    def _anyone_received(self) -> bool:
        # Every rank must stop at the same step, or the others wait forever in the next all-reduce.
        if not (dist.is_available() and dist.is_initialized()):
            return self.received is not None
        flag = torch.tensor([0 if self.received is None else self.received], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.received is None:
            self.received = int(flag.item())
        return bool(flag.item())
