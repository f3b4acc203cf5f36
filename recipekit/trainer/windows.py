"""Evaluation and prediction of windows (`data.long_text: chunks`) pooled into one row per document."""

from __future__ import annotations

import numpy as np
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize

from ..data.windows import DOCUMENT, first, pool


def chunk_pooling(data) -> str | None:
    """How a head's windows pool into documents (`data.chunk_pooling`); None where texts are not cut into windows."""
    return data.chunk_pooling if data is not None and data.long_text == "chunks" else None


class WindowPooling:
    """Trainer part: with `chunk_pooling` set, any dataset with a `document` column is scored per document, not per
    window: evaluation during training (so early stopping and the best checkpoint judge documents), Trainer.evaluate
    and Trainer.predict."""

    def __init__(self, *args, chunk_pooling: str | None = None, **kwargs):
        self.chunk_pooling = chunk_pooling
        # The document of each row of the dataset whose dataloader was asked for last, for the loop that reads it.
        self.window_documents = None
        super().__init__(*args, **kwargs)

    def get_eval_dataloader(self, eval_dataset=None):
        if self.chunk_pooling is None:
            return super().get_eval_dataloader(eval_dataset)
        if eval_dataset is None or isinstance(eval_dataset, str):  # Trainer.evaluate(): the trainer's own eval_dataset
            eval_dataset = self.eval_dataset if eval_dataset is None else self.eval_dataset[eval_dataset]
        return super().get_eval_dataloader(self.take_documents(eval_dataset))

    def get_test_dataloader(self, test_dataset):
        if self.chunk_pooling is None:
            return super().get_test_dataloader(test_dataset)
        return super().get_test_dataloader(self.take_documents(test_dataset))

    def take_documents(self, dataset):
        if dataset is not None and DOCUMENT in getattr(dataset, "column_names", ()):
            self.window_documents = np.asarray(dataset.with_format("arrow")[DOCUMENT].to_numpy(zero_copy_only=False))
            dataset = dataset.remove_columns(DOCUMENT)  # the model never sees it, whatever remove_unused_columns says
        return dataset

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        documents, self.window_documents = self.window_documents, None
        if documents is None:
            return super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        compute, self.compute_metrics = self.compute_metrics, None  # scored below, once pooled
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        finally:
            self.compute_metrics = compute
        predictions = None if output.predictions is None else pool(output.predictions, documents, self.chunk_pooling)
        label_ids = None if output.label_ids is None else first(output.label_ids, documents)
        metrics = dict(output.metrics)
        if compute is not None and predictions is not None and label_ids is not None:
            scores = denumpify_detensorize(compute(EvalPrediction(predictions=predictions, label_ids=label_ids)))
            metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
        return EvalLoopOutput(predictions=predictions, label_ids=label_ids, metrics=metrics, num_samples=len(np.unique(documents)))
