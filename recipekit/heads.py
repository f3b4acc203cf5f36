"""Task heads, chosen by `model.head`: each one says how to build the model, score it and write predictions.

Adding a head is one class with these four methods, one `@register` line, one test and one README row.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from .metrics import classification_scores, softmax

HEADS: dict[str, object] = {}


def register(name: str):
    def add(cls):
        cls.name = name
        HEADS[name] = cls()
        return cls

    return add


def load_kwargs(model_args) -> dict:
    dtype = model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype)
    return {"revision": model_args.revision, "dtype": dtype, "trust_remote_code": model_args.trust_remote_code}


@register("sequence_classification")
class SequenceClassification:
    """Softmax over the labels of the training split, cross-entropy loss."""

    pipeline_task = "text-classification"

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

    def compute_metrics(self, metric_names: list[str]):
        def compute(prediction):
            return classification_scores(metric_names, prediction.label_ids, softmax(prediction.predictions))

        return compute

    def prediction_columns(self, logits: np.ndarray, labels: list[str]) -> dict[str, list]:
        probs = softmax(logits)
        columns = {"predicted": [labels[i] for i in probs.argmax(axis=-1)]}
        for i, name in enumerate(labels):
            columns[f"prob_{name}"] = probs[:, i].tolist()
        return columns
