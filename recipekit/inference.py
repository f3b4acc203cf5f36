"""A finished run as a predictor: its head (with the state it learned), model, tokenizer and the one
prediction path that its own test predictions, `run.py predict` and `run.py evaluate` all take.

That path is the run's: the head's tokenization, collator and decision rule, a Trainer set up as the run's
was (batch size, precision, generation settings), and the model as saved (a LoRA adapter folded into its
base), so a finished run's predictions on its test file are, field for field, the ones it wrote.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict
from transformers import TrainingArguments

from .adapters import ADAPTER_CONFIG, load_adapter
from .errors import RecipeError
from .evaluation_cache import by_length, in_file_order
from .heads import Head, HeadState, Prediction, build_head
from .onnxmodel import OnnxModel, is_exported
from .outputs import FINISHED_MARKER
from .preprocess import Context
from .recipe import DataArgs, ModelArgs, build_steps, read_yaml
from .schema import build_kwargs
from .train import inference_trainer, load_tokenizer


@dataclass
class TrainedRun:
    folder: Path
    data: DataArgs
    steps: list
    head: Head  # built from the run's recipe, carrying the state the run learned
    model_args: ModelArgs  # the run's folder; for a LoRA run, the base model the adapter sits on
    adapter: bool  # the folder holds a LoRA adapter (and its head layer), not a whole model
    batch_size: int  # the run's per_device_eval_batch_size: its own test predictions were made in batches of this
    metric_names: list[str]
    training: dict  # the run's `training:` section as written (precision, generation settings)

    @property
    def labels(self) -> list[str]:
        return self.head.labels

    @property
    def exported(self) -> bool:
        """The folder is `run.py export`'s: an ONNX graph stands in for the PyTorch model."""
        return is_exported(self.folder)

    def load_model(self):
        """The trained model for inference: as saved, the base model with the adapter folded in, or the ONNX graph."""
        if self.exported:
            return OnnxModel(self.folder)
        if not self.adapter:
            return self.head.load_trained(str(self.folder), self.model_args)
        tokenizer = load_tokenizer(self.model_args_for_tokenizer)
        return load_adapter(self.head.load_model(self.model_args, tokenizer), str(self.folder))

    @property
    def model_args_for_tokenizer(self) -> ModelArgs:
        # The run saved its tokenizer (with any pad token it chose) beside the model or the adapter.
        return ModelArgs(**{**self.model_args.__dict__, "name_or_path": str(self.folder), "peft": None})


def open_run(folder: str, finished: bool = True) -> TrainedRun:
    """Read a run's recipe.yaml and head state; refuse a folder that holds no finished run (unless `finished`
    is False: the run itself, predicting its test split once the model is saved)."""
    out = Path(folder)
    if not out.is_dir():
        raise RecipeError(f"{folder}: not a folder; give the output_dir of a finished run")
    if finished and (not (out / FINISHED_MARKER).exists() or not (out / "recipe.yaml").exists()):
        raise RecipeError(f"{folder}: holds no finished run (no {FINISHED_MARKER} or recipe.yaml); train it first")
    raw = read_yaml(str(out / "recipe.yaml"))
    errors: list[str] = []
    data = DataArgs(**build_kwargs(DataArgs, raw.get("data"), "data", errors))
    steps = build_steps(raw.get("preprocess"), errors)
    section = raw.get("model") or {}
    adapter = (out / ADAPTER_CONFIG).exists()
    # A whole model is in the run's folder, its config.json in the shape it trained in; an adapter sits on the
    # recipe's own base model, loaded as the run loaded it (with a pretrained model.config: the layers it kept).
    base_config = (section.get("config") or {}) if adapter and section.get("init", "pretrained") == "pretrained" else {}
    model_args = ModelArgs(**build_kwargs(ModelArgs, {**section, "name_or_path": section.get("name_or_path") if adapter else str(out),
                                                      "peft": None, "init": "pretrained", "config": base_config}, "model", errors))
    if errors:
        raise RecipeError([f"{out / 'recipe.yaml'}: {e}" for e in errors])
    state = HeadState.load(out)
    if state is None:
        raise RecipeError(f"{folder}: holds no head state (head_state.json); it was not written by this version's run.py")
    head = build_head(model_args.head, model_args.head_options, model_args.head_config, data, state)
    if head.predictions_file is None:  # the pretraining heads: a corpus has nothing to predict
        raise RecipeError(
            f"{folder}: a {head.name} pretraining run has nothing to predict; fine-tune it (model.name_or_path: {folder}) "
            f"or {head.pipeline_use} with transformers.pipeline('{head.pipeline_task}', model='{folder}')"
        )
    training = raw.get("training") or {}
    batch_size = training.get("per_device_eval_batch_size") or TrainingArguments.per_device_eval_batch_size
    metrics = raw.get("metrics") or list(head.default_metrics)
    return TrainedRun(out, data, steps, head, model_args, adapter, int(batch_size), list(metrics), training)


def inference_steps(steps: list) -> list:
    """Steps re-applied to new inputs: those that rewrite text and cover the test split.

    A step may declare `at_inference`; otherwise steps that change rows count (cleaning) and steps that
    remove or add rows (dedupe, filters, augmentation) do not.
    """
    return [s for s in steps if getattr(s, "at_inference", s.effect == "changed") and s.applies_to("test")]


def clean(ds: Dataset, run: TrainedRun) -> Dataset:
    """The text the model reads: the input after the run's inference steps, row for row."""
    ctx = Context(columns=run.data.text_columns, label=run.data.label_column)
    for step in inference_steps(run.steps):
        rows_in = len(ds)
        ds, *_ = step(ds, ctx)
        if len(ds) != rows_in:
            raise RecipeError(f"preprocess step {step.name} changed the number of rows ({rows_in} -> {len(ds)}); it cannot run at inference")
    return ds


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
            inference_trainer(self.run.head, self.model, self.tokenizer, self.run.training, self.batch_size, self.metric_names))
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def predict(self, view) -> Prediction:
        """The head's Prediction for `view`: the text columns the model reads (and `labels`, encoded by the head)."""
        # Under several processes one tokenizes, the others read its cache (a no-op on one process).
        with self.trainer.args.main_process_first(desc="tokenize for prediction"):
            tokenized, _ = self.run.head.tokenize(DatasetDict({"input": view}), self.tokenizer)
        # Predicted in length order (half the padded positions of file order), answered in file order.
        ordered, order = by_length(tokenized["input"])
        prediction = self.run.head.predict(self.trainer, ordered, view if order is None else view.select(order), prefix="test")
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
