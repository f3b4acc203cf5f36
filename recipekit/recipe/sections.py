"""The small sections: `regularization:`, `batching:`, `sanity:` and `report:`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RegularizationArgs:
    """Overfitting controls that TrainingArguments lacks; weight_decay, label_smoothing_factor and
    max_grad_norm are `training:` keys already."""

    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "stop after this many evaluations without improving training.metric_for_best_model; null: never"},
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "smallest change of the metric that counts as an improvement (absolute)"}
    )
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={"help": "each layer below the top learns at this times the rate of the one above (0.8-0.95 is usual; 1.0: off)"},
    )
    freeze_embeddings: bool = field(default=False, metadata={"help": "train no embedding weights"})
    freeze_layers: int = field(default=0, metadata={"help": "train none of the first k encoder layers (the embeddings stay trainable unless frozen too)"})

    def problems(self) -> list[str]:
        out = []
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            out.append(f"early_stopping_patience: {self.early_stopping_patience} must be 1 or more (or null)")
        if self.early_stopping_threshold < 0:
            out.append(f"early_stopping_threshold: {self.early_stopping_threshold} must be 0 or more")
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            out.append(f"layerwise_lr_decay: {self.layerwise_lr_decay} must be in (0, 1]")
        if self.freeze_layers < 0:
            out.append(f"freeze_layers: {self.freeze_layers} must be 0 or more")
        return out


@dataclass
class BatchingArgs:
    """How a training batch is computed, beside TrainingArguments' batch size and accumulation."""

    padding: Literal["auto", "flatten", "length_split", "dynamic"] = field(
        default="auto",
        metadata={"help": "pooled heads: flatten runs each batch's real tokens as one row, attention kept inside each text "
                  "(no padded position computed; a model that cannot falls back to length_split, or to dynamic where "
                  "length_split_cost is null or off); length_split runs length-sorted chunks (length_split_cost); dynamic "
                  "pads each batch to its longest text; auto: flatten on CPU, elsewhere length_split with a "
                  "length_split_cost set and dynamic without"},
    )
    length_split_cost: int | Literal["auto"] | None = field(
        default="auto",
        metadata={"help": "pooled heads: run each training batch as length-sorted chunks where a chunk saves more padded "
                  "tokens than this (same gradient), with padding length_split or a flatten that fell back; auto: 128 on CPU "
                  "or with padding length_split, off on GPU otherwise; null: never"},
    )

    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "examples per optimizer step over all processes; gradient accumulation is derived from it, so the "
                  "recipe trains alike on 1, 2 or 8 processes (null: per_device_train_batch_size x processes x accumulation)"},
    )

    def problems(self) -> list[str]:
        out = []
        if isinstance(self.length_split_cost, int) and self.length_split_cost <= 0:
            out.append(f"length_split_cost: {self.length_split_cost} must be a positive number of padded tokens, auto, or null (never split)")
        elif isinstance(self.length_split_cost, int) and self.padding == "dynamic":
            out.append(f"length_split_cost: {self.length_split_cost} splits batches, which padding: dynamic never does; "
                       "set padding: length_split or leave the cost out")
        elif self.length_split_cost is None and self.padding == "length_split":
            out.append("padding: length_split with length_split_cost: null never splits; set length_split_cost to a number "
                       "of padded tokens or auto, or padding to one of auto, flatten, dynamic")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            out.append(f"global_batch_size: {self.global_batch_size} must be 1 or more (or null)")
        return out


@dataclass
class SanityArgs:
    """Quick checks before a long run; each replaces training and writes only under output_dir/sanity."""

    overfit_batch: bool = field(
        default=False, metadata={"help": "train on one small batch until its loss is near zero: proves the wiring"}
    )
    overfit_batch_size: int = field(default=8, metadata={"help": "examples in that batch"})
    overfit_steps: int = field(default=200, metadata={"help": "most optimizer steps to try"})
    overfit_loss: float = field(default=0.05, metadata={"help": "the loss that counts as memorised"})
    lr_range_test: bool = field(
        default=False,
        metadata={"help": "raise the learning rate exponentially each step, record the loss, plot it and suggest a rate (a heuristic)"},
    )
    lr_range_min: float = field(default=1.0e-7, metadata={"help": "learning rate at the first step"})
    lr_range_max: float = field(default=1.0, metadata={"help": "learning rate at the last step"})
    lr_range_steps: int = field(default=200, metadata={"help": "steps from lr_range_min to lr_range_max"})

    def problems(self) -> list[str]:
        out = []
        if self.overfit_batch and self.lr_range_test:
            out.append("overfit_batch / lr_range_test: choose one")
        for key in ("overfit_batch_size", "overfit_steps", "lr_range_steps"):
            if getattr(self, key) < 1:
                out.append(f"{key}: {getattr(self, key)} must be 1 or more")
        if self.overfit_loss <= 0:
            out.append(f"overfit_loss: {self.overfit_loss} must be positive")
        if not 0 < self.lr_range_min < self.lr_range_max:
            out.append(f"lr_range_min / lr_range_max: need 0 < {self.lr_range_min} < {self.lr_range_max}")
        return out

    @property
    def active(self) -> bool:
        return self.overfit_batch or self.lr_range_test


@dataclass
class ReportArgs:
    """What a finished run writes beside report.md."""

    plots: bool = field(
        default=True,
        metadata={"help": "draw the PNG figures (curves, confusion matrix, ROC...); false skips matplotlib, "
                  "the slowest part of a small run's report (sweep trials, tests)"},
    )
