"""The tokenizer, the Trainer a run trains with, and the Trainer a finished run predicts with."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from contextlib import ExitStack, contextmanager

from datasets import DatasetDict

from ..heads import Prediction
from ..modeling.loading import load_tokenizer
from ..recipe.training import with_device_defaults
from ..trainer.common import logits_only, pad_multiple
from ..trainer.evaluations import by_length, in_file_order
from ..trainer.flatten import resolve_padding
from ..trainer.trainer import trainer_class
from ..trainer.windows import chunk_pooling
from .onnxmodel import OnnxModel
from .runs import TrainedRun

# What a finished run's `training:` section says about how it predicted; everything else is for training.
PREDICTION_SETTINGS = ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval", "use_cpu", "predict_with_generate",
                       "generation_max_length", "generation_num_beams", "remove_unused_columns")


@contextmanager
def inference_trainer(head, model, tokenizer, settings: dict, batch_size: int, metric_names, padding: str):
    """The run's Trainer class, only predicting, set up as the run's own was at its end (batch size, precision, generation,
    collator, metrics, flattened batches), so a finished run's predictions on its test file are the ones it wrote."""
    fields = {f.name for f in dataclasses.fields(head.training_args_class)}
    folder = tempfile.mkdtemp(prefix="recipekit-predict-")
    kw = {"output_dir": folder, "per_device_eval_batch_size": batch_size, "report_to": "none", "disable_tqdm": True,
          **{k: settings[k] for k in PREDICTION_SETTINGS if k in settings and k in fields}}
    try:
        args = head.training_args_class(**with_device_defaults(kw))
        yield trainer_class(head.trainer_base)(
            model=model, args=args, processing_class=tokenizer, data_collator=head.collator(tokenizer, model, pad_multiple(args)),
            compute_loss_func=head.loss(args),
            compute_metrics=head.compute_metrics(metric_names, tokenizer) if metric_names else None,
            preprocess_logits_for_metrics=head.preprocess_logits() or logits_only,
            chunk_pooling=chunk_pooling(head.data),
            batch_mean_loss=head.batch_mean_loss,
            # An exported run's ONNX graph keeps its padded input: only a PyTorch model flattens.
            flatten=head.flattens and not isinstance(model, OnnxModel) and resolve_padding(padding, args) == "flatten",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Predictor:
    """A finished run loaded once (model, tokenizer and the inference Trainer), predicting view after view: `run.py
    predict` gives it chunks of a file, `run.py serve` the requests of each server-side batch."""

    def __init__(self, run: TrainedRun, batch_size: int | None = None, with_gold: bool = False):
        self.run = run
        self.tokenizer = load_tokenizer(run.model_args_for_tokenizer)
        self.model = run.load_model().eval()
        self.batch_size = batch_size or run.batch_size
        self.metric_names = run.metric_names if with_gold else None
        self.stack = ExitStack()
        self.trainer = None

    def __enter__(self):
        self.trainer = self.stack.enter_context(
            inference_trainer(self.run.head, self.model, self.tokenizer, self.run.training, self.batch_size, self.metric_names,
                              self.run.padding))
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def predict(self, view) -> Prediction:
        """The head's Prediction for `view`: the text columns the model reads (and `labels`, encoded by the head)."""
        # Under several processes one tokenizes, the others read its cache (a no-op on one process).
        with self.trainer.args.main_process_first(desc="tokenize for prediction"):
            tokenized, _ = self.run.head.tokenize(DatasetDict({"input": view}), self.tokenizer)
        return predict_in_length_order(self.run.head, self.trainer, tokenized["input"], view)


def predict_in_length_order(head, trainer, tokenized, split, prefix: str = "test") -> Prediction:
    """The head's Prediction for `split` (`tokenized` its model inputs), predicted in length order (half the padded
    positions of file order) and answered in file order."""
    ordered, order = by_length(tokenized)
    prediction = head.predict(trainer, ordered, split if order is None else split.select(order), prefix=prefix)
    return in_file_order_prediction(prediction, order)


def in_file_order_prediction(prediction: Prediction, order) -> Prediction:
    if order is None:
        return prediction
    output = prediction.output
    if output is not None:
        output = output._replace(predictions=in_file_order(output.predictions, order), label_ids=in_file_order(output.label_ids, order))
    return Prediction(output, {name: in_file_order(values, order) for name, values in prediction.columns.items()})


def predict_rows(run: TrainedRun, view, batch_size: int | None, chunk: int, with_gold: bool):
    """Yield (row range, Prediction) for `view` (the text columns the model reads, and `labels` encoded by the
    head when with_gold), `chunk` rows at a time; scores are computed only with gold labels."""
    chunk = max(chunk, 1)
    with Predictor(run, batch_size, with_gold) as predictor:
        for start in range(0, len(view), chunk):
            rows = range(start, min(start + chunk, len(view)))
            yield rows, predictor.predict(view.select(rows))
