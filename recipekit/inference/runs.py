"""A finished run as a predictor: its head (with the state it learned), model, tokenizer and the one
prediction path that its own test predictions, `run.py predict` and `run.py evaluate` all take.

That path is the run's: the head's tokenization, collator and decision rule, a Trainer set up as the run's
was (batch size, precision, generation settings), and the model as saved (a LoRA adapter folded into its
base), so a finished run's predictions on its test file are, field for field, the ones it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import TrainingArguments

from ..core.errors import RecipeError
from ..core.schema import build_kwargs
from ..data.steps import Context
from ..heads import Head, build_head, saved_state
from ..modeling.adapters import ADAPTER_CONFIG, load_adapter
from ..modeling.loading import load_tokenizer
from ..outputs.folder import FINISHED_MARKER
from ..recipe.build import build_steps, read_yaml
from ..recipe.data import DataArgs
from ..recipe.model import ModelArgs
from ..recipe.sections import BatchingArgs
from .onnxmodel import OnnxModel, is_exported


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
    padding: str  # the run's batching.padding: a run that flattens predicts flattened too

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
    state = saved_state(out)
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
    padding = (raw.get("batching") or {}).get("padding", BatchingArgs.padding)  # a recipe.yaml from before the key
    return TrainedRun(out, data, steps, head, model_args, adapter, int(batch_size), list(metrics), training, padding)


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


def model_input(run: TrainedRun, ds: Dataset, columns: list[str] | None = None) -> Dataset:
    """What the model reads of new rows (`run.py predict`, `evaluate`, `serve`): the text columns in the form they
    take in training (the head's as_input; rows already in that form stay as they are), cleaned by the run's
    inference steps; only `columns` are kept (default: the text columns)."""
    return clean(run.head.as_input(ds), run).select_columns(columns or run.data.text_columns)
