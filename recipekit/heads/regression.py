"""`regression`: one output per text (or pair), MSE or Huber loss, with optional target standardisation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from datasets import DatasetDict, Features, Value

from ..core.errors import RecipeError
from ..data.steps.base import STREAM_BATCH
from ..data.streaming import is_streamed
from ..evaluation import metrics as M
from ..evaluation import plots
from .base import column_values, first_bad, pick, reduce, register
from .classification import PooledHead
from .distillation import DEFAULT_TEMPERATURE


@dataclass
class RegressionOptions:
    loss: str = field(default="mse", metadata={"help": "mse, or huber (less pulled by outliers)", "choices": ["mse", "huber"]})
    huber_delta: float = field(default=1.0, metadata={"help": "huber: errors above this (in loss units) count linearly"})
    standardize: bool = field(
        default=False, metadata={"help": "train on (y - mean) / std of train; predictions are mapped back to y's units"}
    )

    def problems(self) -> list[str]:
        return [f"huber_delta: {self.huber_delta} must be positive"] if self.huber_delta <= 0 else []


def as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def stream_targets(batch, column: str) -> dict:
    """A streamed batch's targets as numbers; one that is not a finite number stops the run, naming it."""
    out = []
    for value in batch[column]:
        number = as_number(value)
        if number is None:
            raise RecipeError(f"data.label_column: column {column!r} of a streamed training row: target is not a finite number: {value!r}")
        out.append(number)
    return {"labels": out}


@register("regression")
class Regression(PooledHead):
    """One output, MSE or Huber loss; optional target standardisation, undone at prediction."""
    aliases = ('regressor', 'regress', 'score', 'scoring', 'rating', 'scalar')

    @dataclass
    class State(PooledHead.State):
        target_mean: float | None = None  # with standardize: predictions are y * std + mean
        target_std: float | None = None

    Options = RegressionOptions
    supports_cv = True
    problem_type = "regression"
    metric_names = tuple(M.REGRESSION)
    default_metrics = tuple(M.REGRESSION)
    distillation = "the head's own loss (`mse` or `huber`) to the teacher's prediction, in the target's units; no temperature"

    streams = True  # targets are read row by row; only standardize needs them all first

    @classmethod
    def recipe_problems(cls, options, recipe):
        model, out = recipe.model, []
        if recipe.data.streaming and options.standardize:
            out.append("model.head_options.standardize: needs the mean and spread of every training target, which a stream "
                       "never holds; set standardize: false (data.streaming: true)")
        if model.teacher and model.teacher_temperature != DEFAULT_TEMPERATURE:
            out.append(f"model.teacher_temperature: {model.teacher_temperature} has no effect on head 'regression' (its teacher "
                       "term is the error to the teacher's prediction, a value, not a distribution); leave it out")
        return out

    @property
    def num_outputs(self):
        return 1

    def id2label(self):
        return {0: self.data.label_column}

    def encode(self, splits, where):
        column = self.data.label_column
        self.state.labels = [column]  # the one output's name
        for split, ds in splits.items():
            if column in ds.column_names and not is_streamed(ds):
                first_bad(ds, column, lambda v: as_number(v) is None, where, split, "target is not a finite number:")
        return DatasetDict({split: self.encode_split(ds) for split, ds in splits.items()})

    def encode_split(self, ds):
        column = self.data.label_column
        if column not in ds.column_names:
            return ds
        if is_streamed(ds):
            features = Features({**{k: v for k, v in ds.features.items() if k != column}, "labels": Value("float64")})
            return ds.map(stream_targets, batched=True, batch_size=STREAM_BATCH, fn_kwargs={"column": column}, remove_columns=[column], features=features)
        bad = [v for v in column_values(ds, column) if as_number(v) is None]
        if bad:
            raise RecipeError(f"data.label_column: column {column!r}: target is not a finite number: {bad[0]!r}")
        ds = ds.map(lambda b: {"labels": [as_number(v) for v in b[column]]}, batched=True, desc="encode targets")
        return ds.remove_columns(column) if column != "labels" else ds

    def learn(self, train):
        if is_streamed(train):
            return  # nothing to learn before training without standardize (refused with a stream)
        y = np.asarray(column_values(train, "labels"), dtype=np.float64)
        mean, std = float(y.mean()), float(y.std())
        if self.options.standardize:
            if std == 0:
                raise RecipeError(f"data.label_column: every training target is {mean}; nothing to learn")
            self.state.target_mean, self.state.target_std = mean, std

    def predictions_of(self, logits) -> np.ndarray:
        """The model's outputs in the target's units (standardisation undone)."""
        values = np.asarray(logits, dtype=np.float64).reshape(-1)
        return values * (self.state.target_std or 1.0) + (self.state.target_mean or 0.0)

    def loss(self, training_args):
        def compute(outputs, labels, num_items_in_batch=None):
            return reduce(self.error(outputs["logits"], labels), num_items_in_batch)

        return compute

    def error(self, logits, target) -> torch.Tensor:
        """Per item, the loss of the outputs against targets in y's units (standardised as the outputs are)."""
        predicted = logits.squeeze(-1)
        target = (target.to(predicted.dtype).reshape(predicted.shape) - (self.state.target_mean or 0.0)) / (self.state.target_std or 1.0)
        if self.options.loss == "huber":
            return F.huber_loss(predicted, target, delta=self.options.huber_delta, reduction="none")
        return F.mse_loss(predicted, target, reduction="none")

    def soft_targets(self, logits):
        # The teacher's predictions in y's units: its own standardisation undone, the student's applied in error().
        return self.predictions_of(logits).astype(np.float32).reshape(-1, 1)

    def teacher_term(self, logits, teacher, temperature):
        return self.error(logits, teacher)  # a value, not a distribution: nothing to soften

    def compute_metrics(self, metric_names, tokenizer=None):
        def compute(prediction):
            return pick(metric_names, M.regression_scores(prediction.label_ids, self.predictions_of(prediction.predictions)))

        return compute

    def gold(self, split):
        return {self.data.label_column: column_values(split, "labels")} if "labels" in split.column_names else {}

    def prediction_columns(self, predictions, split, tokenizer):
        return {"predicted": self.predictions_of(predictions).tolist()}

    def evaluation(self, label_ids, predictions):
        return {"scores": M.regression_scores(label_ids, self.predictions_of(predictions))}

    def plots(self, label_ids, predictions, folder, split):
        return [("Predicted vs true", plots.regression_scatter(label_ids, self.predictions_of(predictions), folder / "scatter.png", split))]

    def decision_rule(self):
        if self.state.target_std is not None:
            return f"the model's output times {self.state.target_std:.4g} plus {self.state.target_mean:.4g} (training targets were standardised)"
        return "the model's output, in the target's units"

    def baseline(self, record, metric, label_ids):
        mean = (record.get("data") or {}).get("train_label_mean")
        if mean is None:
            return None
        value = M.regression_scores(np.asarray(label_ids).astype(float), np.full(len(label_ids), mean)).get(metric)
        return value, f"always the training mean {mean:.4g}"

    def file_scores(self, metric_names, frame):
        return pick(metric_names, M.regression_scores(frame[self.data.label_column].to_numpy(dtype=float), frame["predicted"].to_numpy(dtype=float)))

    def fold_average(self, folds, frames, metric_names):
        columns = {f"predicted_fold_{i}": frame["predicted"] for i, frame in enumerate(frames, 1)}
        columns["predicted"] = np.stack([f["predicted"].to_numpy(dtype=float) for f in frames]).mean(axis=0)
        return columns, pick(metric_names, M.regression_scores(frames[0][self.data.label_column].to_numpy(dtype=float), columns["predicted"]))
