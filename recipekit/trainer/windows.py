"""Evaluation and prediction of windows (`data.long_text: chunks`) pooled into one row per document."""

from __future__ import annotations

import numpy as np
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize

from ..data.windows import DOCUMENT, first, pool


def pool_windows(trainer, how: str) -> None:
    """Make `trainer` score documents, not windows, for any dataset with a `document` column: evaluation during
    training (so early stopping and the best checkpoint judge documents), Trainer.evaluate and Trainer.predict."""
    trainer.window_documents = None
    for name in ("get_eval_dataloader", "get_test_dataloader"):
        setattr(trainer, name, _taking_documents(trainer, getattr(trainer, name)))
    loop = trainer.evaluation_loop

    def evaluation_loop(dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        documents, trainer.window_documents = trainer.window_documents, None
        if documents is None:
            return loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        compute, trainer.compute_metrics = trainer.compute_metrics, None  # scored below, once pooled
        try:
            output = loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        finally:
            trainer.compute_metrics = compute
        predictions = None if output.predictions is None else pool(output.predictions, documents, how)
        label_ids = None if output.label_ids is None else first(output.label_ids, documents)
        metrics = dict(output.metrics)
        if compute is not None and predictions is not None and label_ids is not None:
            scores = denumpify_detensorize(compute(EvalPrediction(predictions=predictions, label_ids=label_ids)))
            metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
        return EvalLoopOutput(predictions=predictions, label_ids=label_ids, metrics=metrics, num_samples=len(np.unique(documents)))

    trainer.evaluation_loop = evaluation_loop


def _taking_documents(trainer, get_dataloader):
    def wrapped(dataset=None):
        if dataset is None or isinstance(dataset, str):  # Trainer.evaluate(): the trainer's own eval_dataset
            dataset = trainer.eval_dataset if dataset is None else trainer.eval_dataset[dataset]
        if dataset is not None and DOCUMENT in getattr(dataset, "column_names", ()):
            trainer.window_documents = np.asarray(dataset.with_format("arrow")[DOCUMENT].to_numpy(zero_copy_only=False))
            dataset = dataset.remove_columns(DOCUMENT)  # the model never sees it, whatever remove_unused_columns says
        return get_dataloader(dataset)

    return wrapped
