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
import time
from contextlib import contextmanager

import datasets
import transformers
from tqdm.auto import tqdm
from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

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
    if hasattr(sys.stdout, "reconfigure"):
        # A line at a time even into a pipe, so `2>&1 | tee log` keeps stdout's lines in order with stderr's.
        sys.stdout.reconfigure(line_buffering=True)
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


def number(value) -> str:
    """A value of a log line by its kind: an integer as one (never `4.0`), a metric with four decimals."""
    return str(int(value)) if isinstance(value, int) else f"{value:.4f}"


def evaluation_line(logs: dict, step: int | None = None) -> str:
    """`epoch 2 (step 34): validation loss 0.0761, accuracy 1.0000, ...` from Trainer's `eval_*` log entry; an evaluation
    between epochs (eval_strategy: steps) is named by its step: `step 40 (epoch 0.67): ...`."""
    shown = ", ".join(
        f"{key.removeprefix('eval_')} {number(value)}"
        for key, value in logs.items()
        if key.startswith("eval_") and isinstance(value, (int, float)) and not key.endswith(("runtime", "_per_second"))
    )
    epoch = logs.get("epoch")
    if not isinstance(epoch, (int, float)):
        when = "evaluation" if step is None else f"step {step}"
    elif abs(epoch - round(epoch)) < 1e-6:
        when = f"epoch {round(epoch)}" + ("" if step is None else f" (step {step})")
    else:
        when = f"epoch {epoch:.2f}" if step is None else f"step {step} (epoch {epoch:.2f})"
    return f"{when}: validation {shown}"


def elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


class QuietProgress(TrainerCallback):
    """Trainer's progress on a quiet console, and one readable line per evaluation.

    On a terminal, tqdm's bar; when stderr is a pipe or a file (`make run 2>&1 | tee log`), a plain line at each tenth
    of the run instead of carriage-return redraws; with training.disable_tqdm, no progress. No bar for evaluations.
    """

    def __init__(self, show_progress: bool = True, terminal: bool | None = None):
        self.show_progress = show_progress
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.training_bar = None
        self.tenths = 0
        self.training = False  # the evaluations after training are the run's summary's to print

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True
        if not (state.is_world_process_zero and self.show_progress):
            return
        self.start_step, self.started = state.global_step, time.monotonic()
        if self.terminal:
            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step, dynamic_ncols=True)
        self.tenths = state.global_step * 10 // max(state.max_steps, 1)  # a resumed run starts where it was

    def on_step_end(self, args, state, control, **kwargs):
        if not (state.is_world_process_zero and self.show_progress):
            return
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.training_bar.n)
            return
        tenths = state.global_step * 10 // max(state.max_steps, 1)
        if tenths > self.tenths:
            self.tenths = tenths
            spent = time.monotonic() - self.started
            done = state.global_step - self.start_step
            left = spent / done * (state.max_steps - state.global_step) if done else 0.0
            print(f"training: step {state.global_step}/{state.max_steps} ({state.global_step / max(state.max_steps, 1):.0%}), "
                  f"{elapsed(spent)} elapsed, about {elapsed(left)} left", file=sys.stderr, flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (self.training and state.is_world_process_zero and logs and any(k.startswith("eval_") for k in logs)):
            return
        line = evaluation_line(logs, state.global_step)
        if self.training_bar is not None:
            self.training_bar.write(line)  # above the bar, which redraws below it
        else:
            print(line, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False
        if self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None


def quiet_trainer(trainer) -> None:
    """On a quiet console, QuietProgress stands for Trainer's ProgressCallback, or for the PrinterCallback (raw log dicts)
    that Trainer puts in its place under training.disable_tqdm."""
    if not _quiet or any(isinstance(c, QuietProgress) for c in trainer.callback_handler.callbacks):
        return
    for kind in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(kind)
    trainer.add_callback(QuietProgress(show_progress=not trainer.args.disable_tqdm))
