"""Task heads, chosen by `model.head`: each one says how to build the model, score it and write predictions.

Adding a head is one class with these methods, one `@register` line, one test and one README row:
`load_model`, `compute_metrics` (the recipe's `metrics:` during training), `prediction_columns`, and for
the report and `run.py evaluate`, `evaluation` (scores and tables for one split) and `plots` (PNG files).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from . import plots
from .metrics import classification_details, classification_scores, softmax
from .regularize import config_overrides

HEADS: dict[str, object] = {}


def register(name: str):
    def add(cls):
        cls.name = name
        HEADS[name] = cls()
        return cls

    return add


def load_kwargs(model_args) -> dict:
    dtype = model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype)
    return {
        "revision": model_args.revision, "dtype": dtype, "trust_remote_code": model_args.trust_remote_code,
        **config_overrides(model_args),
    }


@register("sequence_classification")
class SequenceClassification:
    """Softmax over the labels of the training split, cross-entropy loss."""

    pipeline_task = "text-classification"
    batch_mean_loss = True  # cross-entropy averaged over the batch, not normalised by Trainer's num_items_in_batch

    def load_model(self, model_args, labels: list[str]):
        # problem_type is declared, not guessed: transformers would infer regression from num_labels=1
        # or multi-label from float labels.
        return AutoModelForSequenceClassification.from_pretrained(
            model_args.path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            problem_type="single_label_classification",
            **load_kwargs(model_args),
        )

    def compute_metrics(self, metric_names: list[str], labels: list[str] | None = None):
        def compute(prediction):
            return classification_scores(metric_names, prediction.label_ids, softmax(prediction.predictions), labels)

        return compute

    def evaluation(self, label_ids: np.ndarray, logits: np.ndarray, labels: list[str]) -> dict:
        """{"scores": every built-in metric, "per_class": rows of a table, "confusion_matrix": counts}."""
        return classification_details(label_ids, softmax(logits), labels)

    def plots(self, label_ids: np.ndarray, logits: np.ndarray, labels: list[str], folder, split: str) -> list:
        """(title, path) of each PNG written: confusion matrix, ROC, precision-recall, reliability diagram."""
        return plots.classification(label_ids, softmax(logits), labels, folder, split)

    def prediction_columns(self, logits: np.ndarray, labels: list[str]) -> dict[str, list]:
        probs = softmax(logits)
        columns = {"predicted": [labels[i] for i in probs.argmax(axis=-1)]}
        for i, name in enumerate(labels):
            columns[f"prob_{name}"] = probs[:, i].tolist()
        return columns
