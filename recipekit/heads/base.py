"""The head contract: every task head is a `Head` subclass registered by name, and declares here all it does.

A run builds one head from the recipe (`build_head(recipe.model, recipe.data)`) and calls, in order:

  encode(splits, where)              check every row's label, encode it as `labels`; learns state.labels
  learn(train)                       refuse an unusable training split; learn what the loss needs from it
                                     (class weights, target scale, label rates) into `state`
  label_counts(ds)                   per-label counts for the data report (None: no classes)
  tokenize(splits, tokenizer)        model inputs + `labels`, and token-length statistics; pads with EOS
                                     where the tokenizer has no pad token (state.pad_token)
  load_model(model_args, tokenizer)  a fresh head layer on the encoder, or the same head continued as saved
  collator / loss / compute_metrics / preprocess_logits   what Trainer takes
  soft_targets / teacher_term        with `model.teacher` (heads that declare `distillation`): the teacher run's
                                     targets for each training row, and the student's loss term against them
  after_training(trainer, tokenized) tune decision rules on validation (thresholds) into `state`
  predict(trainer, tokenized, split) the prediction columns of a split: the run's own test predictions and
                                     `run.py predict`/`evaluate` all come from here
  evaluation(label_ids, predictions) / plots(...)   the full tables and pictures, with the run's decision rule

Around a finished run (heads declare whether they take part):
  file_scores(names, frame)          cv: the metrics of a predictions file read back (out-of-fold rows)
  fold_average(folds, frames, names) cv: the test set predicted by the average of the fold models
  file_probabilities(frame)          cv --label-issues (one_class_per_row): rows x labels probabilities
  baseline(record, metric, ids)      the report: the headline metric of the simplest honest predictor

Everything a run learns about its head is `state`, an instance of the head's own `State` dataclass (the
common fields are `Head.State`'s; a head that learns more subclasses its parent's). `save_state` writes it
beside the model and beside a LoRA adapter (head_state.json) and `record` into the model's config.json;
`saved_state(folder)` reads either back as the right head's State. Only heads write it. What a head *is*
(its class attributes) is declared below with its default; no hook is looked up with getattr.

The pooled heads (classification.py's `PooledHead`: softmax, binary, multi_label, regression, custom pooled
heads) share one model and add, each declared there with its default: problem_type (the config's),
num_outputs and id2label (the output layer), continues (whether a saved head layer goes on), encoder (under
a custom head), initialise (a fresh layer's start) and predictions_of (logits -> what the scores read).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from datasets import DatasetDict
from transformers import AutoConfig, DataCollatorWithPadding, Trainer, TrainingArguments

from ..core.errors import RecipeError
from ..core.files import write_json
from ..core.registry import registrar
from ..core.safety import read_json_file
from ..data.checks import label_kind
from ..data.tokenizing import pad_with_eos
from ..data.tokenizing import tokenize as tokenize_texts
from ..modeling.models import config_overrides
from .custom import HeadConfig

HEADS: dict[str, type[Head]] = {}
DEFAULT_HEAD = "sequence_classification"  # model.head when a recipe names none


STATE_FILE = "head_state.json"


register = registrar(HEADS, "head")


def head_synonyms() -> dict[str, str]:
    """What users call each head (`classification`, `ner`, `mlm`) -> its name: `model.head` suggests by meaning."""
    return {alias: name for name, head in HEADS.items() for alias in head.aliases}


@dataclass
class NoOptions:
    def problems(self) -> list[str]:
        return []


@dataclass
class State:
    """What a run learned about its head, the fields every head has (`Head.State`). Produced by training;
    everything that reads a finished run (predict, evaluate, merge, report, card) takes it from here."""

    head: str
    labels: list[str] = field(default_factory=list)  # label id -> name; the regression target's name; [] without classes
    pad_token: str | None = None  # the tokenizer had no pad token; this one (its end-of-text) pads
    init: str = "pretrained"  # how the weights started: pretrained, or scratch (a new model from a config)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict):
        # Keys of other heads are dropped: a run written before each head kept its own state saved every
        # head's fields in one file, those it did not use as null.
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def saved_state(folder) -> State | None:
    """The head state a run saved in `folder`, as its head's State: head_state.json (beside a model or an
    adapter), else the copy in its config.json; None for a folder this project did not train."""
    folder = Path(folder)
    for path, key in ((folder / STATE_FILE, None), (folder / "config.json", "recipekit")):
        if path.is_file():
            raw = read_json_file(path, "head state" if key is None else "model config")
            raw = (raw.get(key) if isinstance(raw, dict) else None) if key else raw
            if isinstance(raw, dict) and "head" in raw:
                return state_of(raw)
    return None


def state_of(raw: dict) -> State:
    """A saved state's dict as the State of the head it names (the common fields only for a head not registered)."""
    return HEADS.get(raw["head"], Head).State.from_dict(raw)


def starting_state(model_args) -> State | None:
    """What the model a run starts from says about its head: a local run folder, or a Hub model this project
    trained (its config.json's copy); None for any other model, or a new one."""
    if model_args.init == "scratch":
        return None
    state = saved_state(model_args.path)
    if state is not None:
        return state
    config = AutoConfig.from_pretrained(model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code)
    raw = getattr(config, "recipekit", None)
    return state_of(raw) if isinstance(raw, dict) and "head" in raw else None


def pad_like_tokenizer(model, tokenizer) -> None:
    """Give the model the tokenizer's pad id where its config has none: decoder classifiers (GPT-2, Llama) pool
    the last token that is not padding, and generation and tagging pad with it."""
    if model.config.pad_token_id is None and tokenizer is not None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


class Prediction(NamedTuple):
    """One split's predictions: Trainer's output (logits or generated ids, label ids, metrics) and the head's columns."""

    output: object  # transformers.trainer_utils.PredictionOutput, or None for heads that generate outside Trainer
    columns: dict[str, list]


def load_kwargs(model_args) -> dict:
    dtype = model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype)
    return {
        "revision": model_args.revision, "dtype": dtype, "trust_remote_code": model_args.trust_remote_code,
        **config_overrides(model_args),
        # model.config on a pretrained model: num_hidden_layers only (recipe validation), which loads the first N layers.
        **(model_args.config if model_args.init == "pretrained" else {}),
    }


def first_bad(ds, column: str, bad, where, split: str, what: str, hint: str = "") -> None:
    """Raise for the first row where `bad(value)` is true, naming its place, the column and how many rows share it."""
    rows = [i for i, v in enumerate(column_values(ds, column)) if bad(v)]
    if rows:
        i = rows[0]
        more = f" ({len(rows)} rows like it in {split})" if len(rows) > 1 else ""
        raise RecipeError(
            f"data.label_column: {where(split, source_row(ds, i))}: column {column!r}: {what} {ds[i][column]!r}{more}{hint}"
        )


def label_names(values) -> list[str]:
    """Distinct labels of the training split, sorted (numerically when all are numbers, else alphabetically)."""
    distinct = set(values)
    if all(label_kind(v) == "number" for v in distinct):
        return sorted(distinct, key=float)
    return sorted(distinct)


def column_values(ds, name: str) -> list:
    return ds.with_format("arrow")[name].to_pylist()


def source_row(ds, i: int) -> int:
    """Row i's index in its source file (data.py numbers rows at load); its position if a step dropped the number."""
    return ds[i]["__row"] if "__row" in ds.column_names else i


def reduce(per_item: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    # Trainer counts the labels of the whole accumulated batch; dividing the sum by that count keeps the
    # gradient the same for any gradient_accumulation_steps (a per-batch mean would not).
    return per_item.sum() / num_items_in_batch if num_items_in_batch is not None else per_item.mean()


def pick(metric_names, values: dict) -> dict:
    out = {}
    for name in metric_names:
        value = values.get(name)
        out.update(value if isinstance(value, dict) else {name: value})
    return out


def map_splits(splits: DatasetDict, encode, max_length: int) -> tuple[DatasetDict, dict]:
    tokenized = DatasetDict({
        name: ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"tokenize {name}")
        for name, ds in splits.items()
    })
    return tokenized, {"max_length": max_length, "splits": {}}


def reset_head_layers(model) -> None:
    """Draw every module outside the encoder anew, with the model's own initialisation: a saved checkpoint's
    classifier (or LM head) means nothing for a new head or a new label set."""
    for name, module in model.named_children():
        if name != model.base_model_prefix:
            module.apply(model._init_weights)


class Head:
    """A task head. Subclasses override what differs; every hook a caller may use is declared here."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()  # other names users give the task, lowercase with underscores
    Options: ClassVar[type] = NoOptions  # the dataclass of `model.head_options`
    State: ClassVar[type[State]] = State  # the dataclass of what a run learns about the head; a subclass's adds fields
    pipeline_task: ClassVar[str | None] = None  # the transformers pipeline that loads a finished run's model
    pipeline_use: ClassVar[str] = ""  # what that pipeline does, for heads that `predict` refuses (pretraining)
    accepts_head_config: ClassVar[bool] = False  # whether `model.head_config` builds a custom pooled head
    training_args_class: ClassVar[type] = TrainingArguments
    trainer_base: ClassVar[type] = Trainer  # what trainer/trainer.py's RecipeTrainer sits on (Seq2SeqTrainer to generate)
    predictions_file: ClassVar[str | None] = "predictions.csv"  # .jsonl for lists and free text; None: nothing to predict
    stratify: ClassVar[bool] = False  # carve validation by label
    streams: ClassVar[bool] = False  # trains on a streamed split (data.streaming): tokenize takes an IterableDataset
    given_labels: ClassVar[bool] = False  # on a stream, its label set is data.label_names (no pass over the corpus first)
    needs_labels: ClassVar[bool] = True  # False for self-supervised heads: the label column may be absent
    text_labels: ClassVar[bool] = False  # labels read as text by data.py (so 1 and "1" are one class)
    # An empty label cell (blank, null, NaN) is a missing label, dropped and counted by data.py for every head;
    # True where an empty cell is a value of the head's own (multi_label: a row with no label).
    empty_label_is_value: ClassVar[bool] = False
    metric_names: ClassVar[tuple[str, ...] | None] = None  # the metrics it accepts; None: metrics.py's classification registry
    default_metrics: ClassVar[tuple[str, ...]] = ()
    training_defaults: ClassVar[dict] = {}  # TrainingArguments values this head needs unless the recipe sets them
    batch_mean_loss: ClassVar[bool] = False  # the loss is a batch mean (the model's own), not an item sum
    splits_batches: ClassVar[bool] = False  # its losses are item sums, so training batches may run as length-sorted chunks
    flattens: ClassVar[bool] = False  # one vector per text from the model's own head: batches may run flattened (trainer/flatten.py)
    tokenizer_algorithm: ClassVar[str] = "wordpiece"  # what tokenizer.train learns for this head by default
    tokenizer_template: ClassVar[bool] = True  # a trained tokenizer wraps texts in [CLS] ... [SEP] (False: decoder-only)
    # The data.long_text strategies its tokenize applies; chunks also needs one row of logits per window, which
    # trainer/windows.py's WindowPooling pools per document.
    long_text: ClassVar[tuple[str, ...]] = ("head", "head_tail", "chunks")
    # Why `run.py export` refuses the head; None: one forward pass gives logits that `prediction_columns` reads, so the
    # ONNX graph of that pass (export.py) predicts as the run does.
    not_exportable: ClassVar[str | None] = "its predictions are not one forward pass to logits"
    # The teacher's term of the loss under `model.teacher`, in words (the docs' table); None: the head refuses a teacher,
    # since its loss cannot take soft targets. A head that declares one implements soft_targets and teacher_term.
    distillation: ClassVar[str | None] = None
    # Whether `run.py cv` cross-validates it: a fold's predictions file scores on its own (file_scores) and the
    # folds' test predictions average into one (fold_average).
    supports_cv: ClassVar[bool] = False
    # Labels are one class per row: `cv --label-issues` ranks them (file_probabilities), and the report compares
    # the headline metric with always predicting the majority class.
    one_class_per_row: ClassVar[bool] = False
    # Labels are classes (the report's opening line counts them); False where they name outputs or tags.
    labels_are_classes: ClassVar[bool] = False
    # The columns `encode` writes into a split beside the user's text columns; a text column of the same name
    # would be overwritten, so the recipe refuses it (tokenize replaces every column, so its names never collide).
    written_columns: ClassVar[tuple[str, ...]] = ("labels",)

    def __init__(self, options: dict | None = None, head_config: dict | None = None, data=None, state: State | None = None):
        """`data` is the recipe's `data:` section (DataArgs): its columns and max_length; `state` a finished run's."""
        self.options = self.Options(**(options or {}))
        self.head_config = HeadConfig(**head_config) if head_config else None
        self.data = data
        if state is not None and not isinstance(state, self.State):
            state = self.State.from_dict(state.to_dict())
        self.state = state if state is not None else self.State(self.name)

    @property
    def labels(self) -> list[str]:
        return self.state.labels

    @classmethod
    def recipe_problems(cls, options, recipe) -> list[str]:
        """Problems only this head sees in an otherwise valid recipe; each starts with its full key path.
        `recipe` has model, data, training_keys, steps and data_keys (the data: keys the recipe itself sets)."""
        return []

    def as_input(self, ds):
        """New rows for `run.py predict` in the form the text columns take in training (default: as they are)."""
        return ds

    def encode(self, splits: DatasetDict, where) -> DatasetDict:
        """Check every row's label and encode it as `labels`; bad rows raise RecipeError naming `where(split, row)`."""
        raise NotImplementedError

    def encode_split(self, ds):
        """One split's labels, encoded with the labels already learned (a finished run's, for `evaluate`)."""
        raise NotImplementedError

    def learn(self, train) -> None:
        """Refuse a training split the head cannot learn from; record into `state` what the loss needs."""

    def label_counts(self, ds) -> dict | None:
        return None

    def prepare_tokenizer(self, tokenizer):
        padded = pad_with_eos(tokenizer)
        if padded is not None:
            self.state.pad_token = padded
        return tokenizer

    def tokenize(self, splits: DatasetDict, tokenizer) -> tuple[DatasetDict, dict]:
        """Model inputs and `labels`; and token-length statistics for the data report."""
        return tokenize_texts(splits, self.prepare_tokenizer(tokenizer), self.data)

    def load_model(self, model_args, tokenizer):
        """The model to train: a fresh head layer, or this head continued as saved (same head, same labels)."""
        raise NotImplementedError

    def load_trained(self, path: str, model_args):
        """A finished run's model for inference, as saved (never a fresh head)."""
        raise NotImplementedError

    def peft_defaults(self, model) -> dict:
        """LoRA settings this head's model needs unless `model.peft` sets them (peft infers the rest from the model type)."""
        return {}

    def record(self, model) -> None:
        """Keep the state in the model's config too: a checkpoint or a merged model then describes itself."""
        model.config.recipekit = self.state.to_dict()

    def save_state(self, folder) -> None:
        """Write the state beside a saved model or adapter (head_state.json), where `saved_state` reads it."""
        write_json(Path(folder) / STATE_FILE, self.state.to_dict())

    def with_state(self, **changes) -> Head:
        """This head with some of its state's fields replaced (the head itself unchanged)."""
        other = copy.copy(self)
        other.state = dataclasses.replace(self.state, **changes)
        return other

    def collator(self, tokenizer, model, pad_to_multiple_of):
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def loss(self, training_args):
        """A Trainer `compute_loss_func`, or None for the model's own loss."""
        return

    def soft_targets(self, logits) -> np.ndarray:
        """What a student learns from this head as a teacher, one row per text (`run.py predict`'s logits, in file
        order): the logits themselves, or values in the target's units where the logits are standardised."""
        raise NotImplementedError

    def teacher_term(self, logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """The student's loss against a teacher's soft targets, per item as the head's own loss counts items, so that
        both reduce by the same `num_items_in_batch`."""
        raise NotImplementedError

    def compute_metrics(self, metric_names, tokenizer=None):
        """Trainer's compute_metrics for the recipe's `metrics:`, with the decision rule in `state`."""
        return

    def preprocess_logits(self):
        """A Trainer `preprocess_logits_for_metrics` that shrinks logits before evaluation keeps them; None keeps all."""
        return

    def after_training(self, trainer, tokenized) -> dict:
        """Tune on validation what is tuned there (thresholds), into `state`; return what to report."""
        return {}

    def scores(self, metrics: dict) -> dict:
        """Trainer's metrics of a split with what the head derives from them (e.g. perplexity from the loss)."""
        return metrics

    def gold(self, split) -> dict[str, list]:
        """The gold columns of a split for the predictions file, as the user wrote them."""
        return {}

    def predict(self, trainer, tokenized, split, prefix: str = "test") -> Prediction:
        """A split's predictions through Trainer: the columns of the predictions file and Trainer's output."""
        output = trainer.predict(tokenized, metric_key_prefix=prefix)
        return Prediction(output, self.prediction_columns(output.predictions, split, trainer.processing_class))

    def prediction_columns(self, predictions, split, tokenizer) -> dict[str, list]:
        """The prediction columns from a split's logits (with the run's decision rule)."""
        raise NotImplementedError

    def evaluation(self, label_ids, predictions) -> dict | None:
        """Every built-in score of a labelled split with the run's decision rule, and its tables; None: no table."""
        return None

    def plots(self, label_ids, predictions, folder, split: str) -> list:
        """(title, path) of each PNG written for a labelled split."""
        return []

    def decision_rule(self) -> str | None:
        """In words, how a prediction is made from the model's output (for the report and the model card)."""
        return None

    def baseline(self, record: dict, metric: str, label_ids) -> tuple[float | None, str] | None:
        """The headline `metric` of the simplest honest predictor on the same gold `label_ids`, and what it was, from
        metrics.json's `record` (its data report: the training labels); None: no baseline for this head."""
        return None

    def file_scores(self, metric_names, frame) -> dict:
        """The recipe's metrics from a predictions file read back (a DataFrame: gold `label` and the prediction
        columns, rows decided by different fold models): cv's out-of-fold scores. Heads with `supports_cv`."""
        raise NotImplementedError

    def fold_average(self, folds: list[Head], frames: list, metric_names) -> tuple[dict[str, list], dict]:
        """The test set predicted by the average of cv's fold models (`folds`, this head the first; `frames` their
        predictions files read back): the prediction columns, and the recipe's metrics on them with the folds'
        decision rule averaged too. Heads with `supports_cv`."""
        raise NotImplementedError

    def file_probabilities(self, frame) -> np.ndarray:
        """Rows x labels probabilities from a predictions file read back: what `cv --label-issues` ranks the given
        labels by. Heads with `one_class_per_row`."""
        raise NotImplementedError
