"""Quick checks before a long run (`sanity:`): memorise one batch, and the learning-rate range test.

Both reuse the recipe's model, data, head and Trainer with a few TrainingArguments changed, and write only
under `output_dir/sanity/`, so the run's own folder stays free.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pandas as pd
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback

from ..core.files import write_atomic, write_json
from ..evaluation.plots import new_figure, save
from ..recipe.training import with_device_defaults
from .trainer import build_trainer

SANITY = "sanity"


def derived_recipe(recipe, name: str, **changes):
    """The recipe with TrainingArguments changed for a check: no evaluation, no checkpoints, every step logged."""
    kw = {k: v for k, v in recipe.training_keys.items() if k not in ("hub_token", "load_best_model_at_end", "metric_for_best_model")}
    kw.update(
        output_dir=str(Path(recipe.training.output_dir) / SANITY / name), eval_strategy="no", save_strategy="no",
        logging_steps=1, report_to="none", warmup_steps=0, gradient_accumulation_steps=1, **changes,
    )
    return dataclasses.replace(
        recipe,
        # The run's own TrainingArguments class: Seq2SeqTrainingArguments keeps predict_with_generate and friends.
        training=type(recipe.training)(**with_device_defaults(kw)),
        regularization=dataclasses.replace(recipe.regularization, early_stopping_patience=None),
    )


class LossLog(TrainerCallback):
    """Each step's training loss; stops training when `stop(losses)` says so."""

    def __init__(self, stop):
        self.losses: list[tuple[int, float]] = []
        self.stop = stop

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))
            if self.stop(self.losses):
                control.should_training_stop = True


def overfit_batch(recipe, head, model, tokenizer, tokenized) -> int:
    """Train on one batch with a constant learning rate until its loss is below `overfit_loss`.

    A model that cannot memorise 8 examples has a wiring fault (labels misaligned, frozen weights, a
    learning rate far off): better found in a minute than after a night of training.
    """
    s = recipe.sanity
    batch = tokenized["train"].select(range(min(s.overfit_batch_size, len(tokenized["train"]))))
    check = derived_recipe(
        recipe, "overfit_batch", per_device_train_batch_size=len(batch), max_steps=s.overfit_steps,
        lr_scheduler_type="constant", weight_decay=0.0,
    )
    log = LossLog(lambda losses: losses[-1][1] < s.overfit_loss)
    trainer = build_trainer(check, head, model, tokenizer, {"train": batch})
    trainer.add_callback(log)
    trainer.train()
    steps, losses = zip(*log.losses)
    passed = losses[-1] < s.overfit_loss
    if trainer.is_world_process_zero():
        out = Path(check.training.output_dir)
        write_json(out / "overfit_batch.json", {"passed": passed, "target": s.overfit_loss, "examples": len(batch),
                                                 "losses": [{"step": a, "loss": b} for a, b in log.losses]})
        verdict = "memorised" if passed else f"NOT memorised (target {s.overfit_loss})"
        print(f"sanity.overfit_batch: loss {losses[0]:.4f} -> {losses[-1]:.4f} in {steps[-1]} steps on {len(batch)} examples: {verdict}")
        if not passed:
            print(
                "sanity.overfit_batch: a model that cannot memorise one batch usually has misaligned labels, frozen "
                "weights or a learning rate far off; try a higher training.learning_rate or more sanity.overfit_steps",
                file=sys.stderr,
            )
    return 0 if passed else 1


def lr_range_test(recipe, head, model, tokenizer, tokenized) -> int:
    """Raise the learning rate exponentially from lr_range_min to lr_range_max, one step each, recording the loss.

    A heuristic (Smith 2015, "Cyclical learning rates"): the suggestion is a tenth of the rate at which the
    smoothed loss was lowest, which usually lands where the loss still falls fast. Confirm it with a sweep.
    """
    s = recipe.sanity
    check = derived_recipe(recipe, "lr_range_test", learning_rate=s.lr_range_min, max_steps=s.lr_range_steps, lr_scheduler_type="constant")
    growth = (s.lr_range_max / s.lr_range_min) ** (1 / max(s.lr_range_steps - 1, 1))
    # Stop once the smoothed loss is 4x its minimum: the rate has diverged, later points say nothing.
    log = LossLog(lambda losses: len(losses) > 10 and smooth([b for _, b in losses])[-1] > 4 * min(smooth([b for _, b in losses])))

    def schedule(optimizer):
        return LambdaLR(optimizer, lambda step: growth**step)

    trainer = build_trainer(check, head, model, tokenizer, {"train": tokenized["train"]}, schedule=schedule)
    trainer.add_callback(log)
    trainer.train()
    rates = [s.lr_range_min * growth ** (step - 1) for step, _ in log.losses]
    losses = [b for _, b in log.losses]
    smoothed = smooth(losses)
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    suggestion = rates[best] / 10
    if trainer.is_world_process_zero():
        out = Path(check.training.output_dir)
        frame = pd.DataFrame({"step": [a for a, _ in log.losses], "learning_rate": rates, "loss": losses, "smoothed_loss": smoothed})
        write_atomic(out / "lr_range_test.csv", frame.to_csv(index=False))
        write_json(out / "lr_range_test.json", {"suggested_learning_rate": suggestion, "lowest_loss_at": rates[best],
                                                  "heuristic": "a tenth of the rate at the lowest smoothed loss"})
        plot_range_test(rates, losses, smoothed, suggestion, out / "lr_range_test.png")
        print(
            f"sanity.lr_range_test (a heuristic, not a measurement of the best rate): lowest smoothed loss at "
            f"{rates[best]:.2e}; suggested training.learning_rate about {suggestion:.1e}. Plot: {out / 'lr_range_test.png'}"
        )
    return 0


def smooth(values: list[float], beta: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction: one step's loss is too noisy to read."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def plot_range_test(rates, losses, smoothed, suggestion: float, path: Path) -> Path:
    fig = new_figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.plot(rates, losses, alpha=0.3, label="loss per step")
    ax.plot(rates, smoothed, label="smoothed loss")
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggestion {suggestion:.1e}")
    ax.set_xscale("log")
    top = min(max(smoothed) * 1.1, 4 * min(smoothed)) if all(map(math.isfinite, smoothed)) else None
    if top:
        ax.set_ylim(top=top)
    ax.set(title="Learning-rate range test (a heuristic)", xlabel="learning rate", ylabel="training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)
