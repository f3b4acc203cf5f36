"""Long documents as windows (`data.long_text: chunks`): a text over max_length becomes overlapping windows, each
one example carrying the document's label, and the windows' outputs are pooled back into one per document
before any score, threshold, table or prediction sees them.

The windows of an evaluated or predicted split carry a `document` column (the row they came from). A Trainer
with `pool_windows` takes that column off before batching, runs its evaluation loop on the windows, and returns
one row of logits per document (the windows' mean, or their per-output max) with the document's label, in
document order. Loss stays the windows' mean: it is what was optimised.
"""

from __future__ import annotations

import numpy as np
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize

DOCUMENT = "document"


def windows(tokenizer, texts: list[str], limit: int, overlap: int) -> tuple[dict, list[int]]:
    """The windows of `texts` (each at most `limit` tokens with its special tokens, consecutive windows sharing
    `overlap` tokens) and, for each window, the index of its text: the tokenizer's own overflow handling."""
    out = tokenizer(texts, truncation=True, max_length=limit, stride=overlap, return_overflowing_tokens=True, verbose=False)
    source = list(out.pop("overflow_to_sample_mapping"))
    return dict(out), source


def pool(values: np.ndarray, documents: np.ndarray, how: str) -> np.ndarray:
    """One row per document (in document order) from the rows of its windows: their mean or per-column max."""
    ids, where = np.unique(documents, return_inverse=True)
    values = np.asarray(values, dtype=np.float64)
    shape = (len(ids), *values.shape[1:])
    if how == "max":
        out = np.full(shape, -np.inf)
        np.maximum.at(out, where, values)
    else:
        out = np.zeros(shape)
        np.add.at(out, where, values)
        out /= np.bincount(where, minlength=len(ids)).reshape(-1, *[1] * (values.ndim - 1))
    return out.astype(np.float32)


def first(values: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """Each document's label: its first window's (every window of a document carries the same one)."""
    _, at = np.unique(documents, return_index=True)
    return np.asarray(values)[at]


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
