"""What a run prints. Quiet by default: the data report, the model line, one line per evaluation, the scores.

Left alone, the libraries print a progress bar for every `datasets.map` (forty for the quickstart's 440
rows), transformers' weight-loading bars and load report (the new head's weights are "MISSING", which is
expected), and Trainer a `{'loss': ...}` dict beside its own bar every few steps. `--verbose` keeps all of
it. Under several processes only rank 0 prints; the others keep stderr, so warnings and tracebacks stay.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

import datasets
import transformers
from transformers.trainer_callback import ProgressCallback

# A map over this many rows takes long enough (tokenizing 50k reviews: tens of seconds) to deserve its bar.
PROGRESS_ROWS = 50_000
_quiet = False


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


_LOAD_REPORT_FILTER = _DropLoadReport()


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def configure(verbose: bool = False) -> None:
    """Set what this process prints; run.py calls it once, before any recipe is read."""
    global _quiet
    _quiet = not verbose
    report_logger = logging.getLogger("transformers.modeling_utils")
    if verbose:
        datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
        report_logger.removeFilter(_LOAD_REPORT_FILTER)
        return
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights", "Writing model shards"; Trainer's own bar stays
    report_logger.addFilter(_LOAD_REPORT_FILTER)
    if rank() != 0:
        transformers.utils.logging.set_verbosity_error()
        datasets.utils.logging.set_verbosity_error()
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - held for the life of the process


def quiet() -> bool:
    return _quiet


@contextmanager
def progress(rows: int):
    """A datasets progress bar for this block when it maps many rows, even on a quiet console."""
    if not _quiet or rows < PROGRESS_ROWS:
        yield
        return
    datasets.enable_progress_bars()
    try:
        yield
    finally:
        datasets.disable_progress_bars()


def evaluation_line(logs: dict) -> str:
    """`epoch 2 (step 34): validation loss 0.0761, accuracy 1.0000, ...` from Trainer's `eval_*` log entry."""
    shown = ", ".join(
        f"{key.removeprefix('eval_')} {value:.4f}"
        for key, value in logs.items()
        if key.startswith("eval_") and isinstance(value, (int, float)) and not key.endswith(("runtime", "_per_second"))
    )
    epoch = logs.get("epoch")
    when = f"epoch {epoch:g}" if isinstance(epoch, (int, float)) else "evaluation"
    return f"{when}: validation {shown}"


class QuietProgress(ProgressCallback):
    """Trainer's progress bars without the log dicts beside them; each evaluation becomes one line."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and any(k.startswith("eval_") for k in logs):
            self.training_bar.write(evaluation_line(logs))


def quiet_trainer(trainer) -> None:
    """Swap Trainer's ProgressCallback for QuietProgress on a quiet console (a disabled tqdm stays disabled)."""
    if not _quiet:
        return
    if any(isinstance(c, ProgressCallback) and not isinstance(c, QuietProgress) for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(QuietProgress())
