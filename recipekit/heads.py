"""Task heads, chosen by `model.head`: each one owns its labels, model, loss, collator, metrics and predictions.

A head is a `Head` subclass with `@register("name")`. run.py builds one per run,
`head = HEADS[name](model.head_options, model.head_config)`, and calls, in this order:

  encode(splits, data_args, where)   check every row's label and encode it as the `labels` column; sets
                                     `head.labels` (names, [] for heads without classes). Bad rows raise
                                     RecipeError naming `where(split, row)` (file and line) and the column.
  check_train(train) / label_counts(ds)   after carving and subsampling; counts go into metrics.json
  tokenize(splits, tokenizer, data_args)  -> DatasetDict of model inputs + `labels`
  load_model(model_args)             the model, with `config.recipekit` = what predict needs to reload it
  collator(tokenizer, model, pad_to_multiple_of), loss(training_args) (a Trainer `compute_loss_func`,
  or None for the model's own), compute_metrics(metric_names)
  after_training(trainer, tokenized) tune what is tuned on validation (thresholds) and store it in
                                     `model.config.recipekit`, before the model is saved
  scores(metrics), gold(test_split), prediction_columns(output, test_split, trainer)

The language-model heads (`masked_lm`, `causal_lm`) live in lm.py with tokenizer training and packing.

Class attributes say the rest: `Options` (the dataclass of `model.head_options`), `training_args_class`
and `trainer_class` (Seq2Seq* for generation), `predictions_file` (.csv, or .jsonl for lists and text),
`stratify` (carve validation by label), `metric_names`/`default_metrics` (None: metrics.CLASSIFICATION),
`needs_labels` (False: no label column), `accepts_head_config` (whether `model.head_config` builds our EncoderWithHead), `pipeline_task`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, DatasetDict, Sequence
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForSeq2Seq,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
)

from . import metrics as M
from . import plots
from .batching import LengthSplitTrainer
from .custom_head import EncoderWithHead, HeadConfig
from .errors import RecipeError
from .regularize import config_overrides

HEADS: dict[str, type[Head]] = {}


def register(name: str):
    def add(cls):
        cls.name = name
        HEADS[name] = cls
        return cls

    return add


def load_kwargs(model_args) -> dict:
    dtype = model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype)
    return {
        "revision": model_args.revision, "dtype": dtype, "trust_remote_code": model_args.trust_remote_code,
        **config_overrides(model_args),
    }


@dataclass
class NoOptions:
    def problems(self) -> list[str]:
        return []


def first_bad(ds, column: str, bad, where, split: str, what: str, hint: str = "") -> None:
    """Raise for the first row where `bad(value)` is true, naming its place, the column and how many rows share it."""
    rows = [i for i, v in enumerate(column_values(ds, column)) if bad(v)]
    if rows:
        i = rows[0]
        more = f" ({len(rows)} rows like it in {split})" if len(rows) > 1 else ""
        raise RecipeError(
            f"data.label_column: {where(split, source_row(ds, i))}: column {column!r}: {what} {ds[i][column]!r}{more}{hint}"
        )


def column_values(ds, name: str) -> list:
    return ds.with_format("arrow")[name].to_pylist()


def source_row(ds, i: int) -> int:
    """Row i's index in its source file (data.py numbers rows at load); its position if a step dropped the number."""
    return ds[i]["__row"] if "__row" in ds.column_names else i


class Head:
    name = ""
    Options: type = NoOptions
    pipeline_task: str | None = None
    accepts_head_config = False
    training_args_class = TrainingArguments
    trainer_class = Trainer
    predictions_file = "predictions.csv"
    stratify = False
    needs_labels = True  # False for self-supervised heads: the label column may be absent
    text_labels = False  # labels read as text by data.py (so 1 and "1" are one class)
    metric_names: list[str] | tuple[str, ...] | None = None
    default_metrics: tuple[str, ...] = ()
    training_defaults: ClassVar[dict] = {}  # TrainingArguments values this head needs unless the recipe sets them

    def __init__(self, options: dict | None = None, head_config: dict | None = None):
        self.options = self.Options(**(options or {}))
        self.head_config = HeadConfig(**head_config) if head_config else None
        self.labels: list[str] = []
        self.tokenizer = None
        self.stored: dict = {}  # what goes into model.config.recipekit beside head and labels

    @classmethod
    def recipe_problems(cls, options, data_args, training_keys: dict, steps: list) -> list[str]:
        """Problems only this head sees in an otherwise valid recipe; each starts with its full key path."""
        return []

    def encode(self, splits: DatasetDict, args, where) -> DatasetDict:
        raise NotImplementedError

    def check_train(self, train) -> None:
        pass

    def label_counts(self, ds) -> dict | None:
        return None

    def tokenize(self, splits: DatasetDict, tokenizer, args) -> tuple[DatasetDict, dict]:
        """Model inputs and `labels`; and token-length statistics for the data report."""
        from .data import tokenize

        self.tokenizer = tokenizer
        return tokenize(splits, tokenizer, args)

    def load_model(self, model_args):
        raise NotImplementedError

    def record(self, model) -> None:
        model.config.recipekit = {"head": self.name, "labels": list(self.labels), **self.stored}

    def collator(self, tokenizer, model, pad_to_multiple_of):
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def loss(self, training_args):
        return None

    def compute_metrics(self, metric_names: list[str], labels: list[str] | None = None):
        """Trainer's compute_metrics for the recipe's `metrics:`; `labels` are the names of the label ids, if any."""
        return

    def preprocess_logits(self):
        """A Trainer `preprocess_logits_for_metrics` that shrinks logits before evaluation keeps them; None keeps all."""

    def after_training(self, trainer, tokenized) -> dict:
        return {}

    def scores(self, metrics: dict) -> dict:
        return metrics

    def gold(self, test) -> dict[str, list]:
        return {}

    def prediction_columns(self, output, test, trainer) -> dict[str, list]:
        raise NotImplementedError


def trained_model(model_args, auto_class):
    """A model this package trained (its config has a `recipekit` entry), loaded as saved; else None."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code)
    if not hasattr(config, "recipekit"):
        return None
    return auto_class.from_pretrained(model_args.path, **load_kwargs(model_args))


def reduce(per_item: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    # Trainer counts the labels of the whole accumulated batch; dividing the sum by that count keeps the
    # gradient the same for any gradient_accumulation_steps (a per-batch mean would not).
    return per_item.sum() / num_items_in_batch if num_items_in_batch is not None else per_item.mean()


def pad_with_eos(tokenizer):
    """GPT-style tokenizers have no pad token; batches need one, and the attention mask (or -100 labels)
    keeps it out of attention and the loss, so end-of-text serves."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def output_layer(model, num_outputs: int):
    """The layer that produces the logits: the last Linear with num_outputs outputs (BERT's classifier,
    RoBERTa's classifier.out_proj, GPT-2's score, our custom head's last layer)."""
    found = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == num_outputs:
            found = module
    return found


def prior_bias(model, positive_rate: np.ndarray) -> str:
    """Start each sigmoid at its label's training frequency: bias = log(p / (1 - p)).

    With a zero bias every sigmoid starts at 0.5 while most labels are rare (GoEmotions: 28 labels,
    4% positive on average), so the first hundreds of steps only push every logit down and the encoder
    gets little else to learn from; started at the prior, the gradient is about the text from step one
    (the prior initialisation of Lin et al. 2017, focal loss, section 3.3)."""
    layer = output_layer(model, len(positive_rate))
    if layer is None or layer.bias is None:
        return f"not applied: {type(model).__name__} has no output bias"
    p = np.clip(np.asarray(positive_rate, dtype=np.float64), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        layer.bias.copy_(torch.as_tensor(np.log(p / (1 - p)), dtype=layer.bias.dtype))
    return "log-odds of the training label frequencies"


def pick(metric_names: list[str], values: dict) -> dict:
    out = {}
    for name in metric_names:
        value = values.get(name)
        out.update(value if isinstance(value, dict) else {name: value})
    return out


# Heads that read one vector per text (or text pair) and put N outputs on it.


class PooledHead(Head):
    accepts_head_config = True
    trainer_class = LengthSplitTrainer  # losses are item sums over num_items_in_batch, so batches may run as chunks
    pipeline_task = "text-classification"
    problem_type = "single_label_classification"

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def load_model(self, model_args):
        trained = trained_model(model_args, AutoModelForSequenceClassification)
        self.fresh_head = trained is None  # False when continuing from a model this package trained
        if trained is not None:
            self.stored.update({k: v for k, v in trained.config.recipekit.items() if k not in ("head", "labels")})
            return trained
        id2label = self.id2label()
        # problem_type is declared, never guessed: transformers would read num_labels=1 as regression.
        common = {
            "id2label": id2label,
            "label2id": {v: k for k, v in id2label.items()},
            "problem_type": self.problem_type,
        }
        if self.head_config:
            model = EncoderWithHead.from_encoder(
                model_args.path, self.head_config, self.num_outputs, load_kwargs(model_args), **common
            )
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                model_args.path, num_labels=self.num_outputs, **common, **load_kwargs(model_args)
            )
        self.record(model)
        return model


class ClassLabels(PooledHead):
    """Labels are one class per row: ints of any range or strings, named and ordered from the training split."""

    stratify = True
    text_labels = True

    def encode(self, splits, args, where):
        from .data import label_names

        column = args.label_column
        self.labels = self.order(label_names(column_values(splits["train"], column)))
        known = set(self.labels)
        for split, ds in splits.items():
            if split != "train" and column in ds.column_names:
                first_bad(ds, column, lambda v: str(v) not in known, where, split, "label not seen in training:",
                          f"; training labels: {', '.join(self.labels)}")
        return DatasetDict({name: self.encode_split(ds, column) for name, ds in splits.items()})

    def order(self, labels: list[str]) -> list[str]:
        return labels

    def encode_split(self, ds, column):
        if column not in ds.column_names:
            return ds
        index = {name: i for i, name in enumerate(self.labels)}
        ds = ds.map(lambda b: {"labels": [index[str(v)] for v in b[column]]}, batched=True, desc="encode labels")
        if column != "labels":
            ds = ds.remove_columns(column)
        return ds.cast_column("labels", ClassLabel(names=self.labels))

    def check_train(self, train):
        present = set(column_values(train, "labels"))
        if len(present) < 2:
            only = self.labels[present.pop()] if present else "none"
            raise RecipeError(f"data.label_column: the training split has a single class ({only!r}); a classifier needs two or more")

    def label_counts(self, ds):
        counts = Counter(column_values(ds, "labels"))
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    def gold(self, test):
        return {"label": [self.labels[i] for i in column_values(test, "labels")]} if "labels" in test.column_names else {}


@dataclass
class ClassificationOptions:
    class_weights: str | list[float] | None = field(
        default=None,
        metadata={"help": "weight each class's loss: auto (n / (classes * count), sklearn's 'balanced') or one number per label"},
    )

    def problems(self) -> list[str]:
        if isinstance(self.class_weights, str) and self.class_weights != "auto":
            return [f"class_weights: {self.class_weights!r} must be auto or a list of numbers, one per label"]
        if isinstance(self.class_weights, list) and any(w < 0 for w in self.class_weights):
            return [f"class_weights: {self.class_weights} must not be negative"]
        return []


@register("sequence_classification")
class SequenceClassification(ClassLabels):
    """Softmax over the labels of the training split, cross-entropy loss (optionally class-weighted)."""

    Options = ClassificationOptions

    def check_train(self, train):
        super().check_train(train)
        weights = self.options.class_weights
        if weights == "auto":
            counts = np.bincount(column_values(train, "labels"), minlength=len(self.labels)).astype(float)
            # A class missing from train gets weight 0 rather than infinity.
            weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0).tolist()
        elif weights is not None and len(weights) != len(self.labels):
            raise RecipeError(
                f"model.head_options.class_weights: {len(weights)} weights for {len(self.labels)} labels ({', '.join(self.labels)})"
            )
        if weights is not None:
            self.stored["class_weights"] = [round(w, 6) for w in weights]

    def loss(self, training_args):
        weights = self.stored.get("class_weights")
        smoothing = training_args.label_smoothing_factor

        def compute(outputs, labels, num_items_in_batch=None):
            logits = outputs["logits"]
            weight = torch.tensor(weights, dtype=logits.dtype, device=logits.device) if weights else None
            per_item = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing, reduction="none")
            return reduce(per_item, num_items_in_batch)

        return compute

    def compute_metrics(self, metric_names, labels=None):
        def compute(prediction):
            return M.classification_scores(metric_names, prediction.label_ids, M.softmax(prediction.predictions), labels)

        return compute

    def evaluation(self, label_ids: np.ndarray, logits: np.ndarray, labels: list[str]) -> dict:
        """{"scores": every built-in metric, "per_class": rows of a table, "confusion_matrix": counts}."""
        return M.classification_details(label_ids, M.softmax(logits), labels)

    def plots(self, label_ids: np.ndarray, logits: np.ndarray, labels: list[str], folder, split: str) -> list:
        """(title, path) of each PNG written: confusion matrix, ROC, precision-recall, reliability diagram."""
        return plots.classification(label_ids, M.softmax(logits), labels, folder, split)

    def prediction_columns(self, output, test, trainer):
        probs = M.softmax(output.predictions)
        columns = {"predicted": [self.labels[i] for i in probs.argmax(axis=-1)]}
        for i, name in enumerate(self.labels):
            columns[f"prob_{name}"] = probs[:, i].tolist()
        return columns


def threshold_problems(value) -> list[str]:
    if isinstance(value, str) and value != "tune":
        return [f"threshold: {value!r} must be a probability in (0, 1) or tune"]
    if isinstance(value, float) and not 0.0 < value < 1.0:
        return [f"threshold: {value} must be a probability in (0, 1) or tune"]
    return []


def needs_validation(options, data_args) -> list[str]:
    if options.threshold == "tune" and not data_args.has_validation():
        return ["model.head_options.threshold: tune needs a validation set (data.validation_file, validation_split_name or validation_split)"]
    return []


@dataclass
class BinaryOptions:
    threshold: float | str = field(
        default=0.5, metadata={"help": "predict positive at probability >= this; tune: the F1-best cut on validation, saved"}
    )
    positive_label: str | None = field(
        default=None, metadata={"help": "which of the two labels is positive (the sigmoid's 1); default: the second in sorted order"}
    )

    def problems(self) -> list[str]:
        return threshold_problems(self.threshold)


@register("binary")
class Binary(ClassLabels):
    """Two classes, one logit, BCEWithLogitsLoss; probability of the positive label = sigmoid(logit)."""

    Options = BinaryOptions
    # One output with a sigmoid: the text-classification pipeline applies a sigmoid for this problem type.
    problem_type = "multi_label_classification"

    @classmethod
    def recipe_problems(cls, options, data_args, training_keys, steps):
        return needs_validation(options, data_args)

    def order(self, labels):
        if len(labels) != 2:
            raise RecipeError(f"data.label_column: head binary needs exactly 2 labels, the training split has {len(labels)}: {', '.join(labels)}")
        positive = self.options.positive_label
        if positive is None:
            return labels
        if positive not in labels:
            raise RecipeError(f"model.head_options.positive_label: {positive!r} is not a label; labels: {', '.join(labels)}")
        return [l for l in labels if l != positive] + [positive]

    @property
    def num_outputs(self):
        return 1

    def id2label(self):
        return {0: self.labels[1]}

    @property
    def threshold(self) -> float:
        return self.stored.get("threshold", 0.5 if self.options.threshold == "tune" else self.options.threshold)

    def loss(self, training_args):
        def compute(outputs, labels, num_items_in_batch=None):
            logits = outputs["logits"].squeeze(-1)
            per_item = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
            return reduce(per_item, num_items_in_batch)

        return compute

    def probabilities(self, logits) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64).reshape(-1)))

    def compute_metrics(self, metric_names, labels=None):
        def compute(prediction):
            p = self.probabilities(prediction.predictions)
            y = np.asarray(prediction.label_ids).astype(int)
            y_pred = (p >= self.threshold).astype(int)
            probs = np.stack([1 - p, p], axis=1)
            out = {}
            for name in metric_names:
                value = M.resolve(name)(y, y_pred, probs, self.labels)
                out.update({k: M._number(v) for k, v in value.items()} if isinstance(value, dict) else {name: M._number(value)})
            out["threshold"] = self.threshold
            return out

        return compute

    def after_training(self, trainer, tokenized):
        if self.options.threshold != "tune":
            return {}
        output = trainer.predict(tokenized["validation"], metric_key_prefix="tune")
        self.stored["threshold"] = M.best_f1_threshold(output.label_ids, self.probabilities(output.predictions))
        self.record(trainer.model)
        return {"threshold": self.stored["threshold"]}

    def evaluation(self, label_ids, logits, labels) -> dict:
        """The softmax heads' full table, from the two-column probabilities [1 - p, p]."""
        return M.classification_details(np.asarray(label_ids).astype(int), self.two_columns(logits), self.labels)

    def plots(self, label_ids, logits, labels, folder, split) -> list:
        # ROC, precision-recall and reliability do not depend on the threshold; the confusion matrix is at 0.5.
        return plots.classification(np.asarray(label_ids).astype(int), self.two_columns(logits), self.labels, folder, split)

    def two_columns(self, logits) -> np.ndarray:
        p = self.probabilities(logits)
        return np.stack([1 - p, p], axis=1)

    def prediction_columns(self, output, test, trainer):
        p = self.probabilities(output.predictions)
        return {
            "predicted": [self.labels[int(v >= self.threshold)] for v in p],
            f"prob_{self.labels[1]}": p.tolist(),
        }


@dataclass
class MultiLabelOptions:
    label_delimiter: str = field(default=",", metadata={"help": "separator when a row's labels are one string, e.g. '4,27'"})
    allow_empty: bool = field(default=False, metadata={"help": "accept rows with no label (all outputs negative)"})
    threshold: float | str = field(
        default=0.5, metadata={"help": "one cut for every label, or tune: each label's F1-best cut on validation, saved"}
    )
    tune_min_positives: int = field(
        default=10,
        metadata={"help": "with threshold: tune, a label with fewer validation positives shares one cut (the micro-F1-best over all labels)"},
    )
    bias_init: str = field(
        default="prior",
        metadata={"help": "prior: start each sigmoid's bias at its label's training log-odds (rare labels learn far sooner); zero",
                  "choices": ("prior", "zero")},
    )

    def problems(self) -> list[str]:
        out = threshold_problems(self.threshold) + ([] if self.label_delimiter else ["label_delimiter: must not be empty"])
        return out + ([f"tune_min_positives: {self.tune_min_positives} must be 0 or more"] if self.tune_min_positives < 0 else [])


@register("multi_label")
class MultiLabel(PooledHead):
    """N independent sigmoids + BCE; a row's labels are a list or a delimited string."""

    Options = MultiLabelOptions
    problem_type = "multi_label_classification"
    metric_names = M.MULTI_LABEL
    default_metrics = ("f1_micro", "f1_macro", "subset_accuracy", "roc_auc_macro", "f1_per_label")

    @classmethod
    def recipe_problems(cls, options, data_args, training_keys, steps):
        return needs_validation(options, data_args)

    def split_labels(self, value) -> list[str] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else str(value).split(self.options.label_delimiter)
        return [str(v).strip() for v in items if str(v).strip() != ""]

    def encode(self, splits, args, where):
        column = args.label_column
        for split, ds in splits.items():
            if column not in ds.column_names:
                continue
            first_bad(ds, column, lambda v: v is None, where, split, "no label list:")
            if not self.options.allow_empty:
                first_bad(ds, column, lambda v: not self.split_labels(v), where, split, "empty label list:",
                          "; set model.head_options.allow_empty: true if rows may have no label")
        names = {name for v in column_values(splits["train"], column) for name in self.split_labels(v)}
        # Numeric ids sort as numbers, so GoEmotions' 0..27 keep their source order.
        self.labels = sorted(names, key=lambda n: (0, int(n), "") if n.lstrip("-").isdigit() else (1, 0, n))
        known = set(self.labels)
        for split, ds in splits.items():
            if split != "train" and column in ds.column_names:
                first_bad(ds, column, lambda v: not set(self.split_labels(v)) <= known, where, split,
                          "label not seen in training:", f"; training labels: {', '.join(self.labels)}")
        return DatasetDict({name: self.encode_split(ds, column) for name, ds in splits.items()})

    def encode_split(self, ds, column):
        if column not in ds.column_names:
            return ds
        index = {name: i for i, name in enumerate(self.labels)}

        def hot(batch):
            rows = []
            for value in batch[column]:
                row = [0.0] * len(self.labels)
                for name in self.split_labels(value):
                    row[index[name]] = 1.0
                rows.append(row)
            return {"labels": rows}

        ds = ds.map(hot, batched=True, desc="encode labels")
        return ds.remove_columns(column) if column != "labels" else ds

    def check_train(self, train):
        if len(self.labels) < 2:
            raise RecipeError(f"data.label_column: the training split has {len(self.labels)} distinct label(s); multi_label needs two or more")
        self.positive_rate = np.asarray(column_values(train, "labels"), dtype=np.float64).mean(axis=0)

    def load_model(self, model_args):
        model = super().load_model(model_args)
        if self.fresh_head and self.options.bias_init == "prior":
            print(f"multi_label: output biases {prior_bias(model, self.positive_rate)}")
        return model

    def label_counts(self, ds):
        counts = np.asarray(column_values(ds, "labels")).sum(axis=0)
        return {name: int(c) for name, c in zip(self.labels, counts)}

    @property
    def thresholds(self):
        default = 0.5 if self.options.threshold == "tune" else self.options.threshold
        return self.stored.get("thresholds", [default] * len(self.labels))

    def loss(self, training_args):
        def compute(outputs, labels, num_items_in_batch=None):
            logits = outputs["logits"]
            per_item = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
            return reduce(per_item, num_items_in_batch)

        return compute

    def compute_metrics(self, metric_names, labels=None):
        def compute(prediction):
            probs = 1.0 / (1.0 + np.exp(-prediction.predictions.astype(np.float64)))
            return pick(metric_names, M.multi_label_scores(prediction.label_ids, probs, self.thresholds, self.labels))

        return compute

    def after_training(self, trainer, tokenized):
        if self.options.threshold != "tune":
            return {}
        output = trainer.predict(tokenized["validation"], metric_key_prefix="tune")
        probs = 1.0 / (1.0 + np.exp(-output.predictions.astype(np.float64)))
        y = np.asarray(output.label_ids).astype(int)
        self.stored["thresholds"], shared = tune_thresholds(y, probs, self.options.tune_min_positives)
        self.record(trainer.model)
        return {"thresholds": dict(zip(self.labels, self.stored["thresholds"])),
                "shared_threshold_labels": [self.labels[j] for j in shared]}

    def gold(self, test):
        if "labels" not in test.column_names:
            return {}
        d = self.options.label_delimiter
        return {"label": [d.join(n for n, v in zip(self.labels, row) if v) for row in column_values(test, "labels")]}

    def prediction_columns(self, output, test, trainer):
        probs = 1.0 / (1.0 + np.exp(-output.predictions.astype(np.float64)))
        hits = probs >= np.asarray(self.thresholds)
        d = self.options.label_delimiter
        columns = {"predicted": [d.join(n for n, h in zip(self.labels, row) if h) for row in hits]}
        for j, name in enumerate(self.labels):
            columns[f"prob_{name}"] = probs[:, j].tolist()
        return columns


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


@register("regression")
class Regression(PooledHead):
    """One output, MSE or Huber loss; optional target standardisation, undone at prediction."""

    Options = RegressionOptions
    problem_type = "regression"
    metric_names = M.REGRESSION
    default_metrics = M.REGRESSION

    @property
    def num_outputs(self):
        return 1

    def id2label(self):
        return {0: self.target}

    def encode(self, splits, args, where):
        column = self.target = args.label_column
        out = {}
        for split, ds in splits.items():
            if column in ds.column_names:
                first_bad(ds, column, lambda v: as_number(v) is None, where, split, "target is not a finite number:")
                ds = ds.map(lambda b: {"labels": [as_number(v) for v in b[column]]}, batched=True, desc="encode targets")
                ds = ds.remove_columns(column) if column != "labels" else ds
            out[split] = ds
        return DatasetDict(out)

    def check_train(self, train):
        y = np.asarray(column_values(train, "labels"), dtype=np.float64)
        mean, std = float(y.mean()), float(y.std())
        if self.options.standardize:
            if std == 0:
                raise RecipeError(f"data.label_column: every training target is {mean}; nothing to learn")
            self.stored.update(target_mean=mean, target_std=std)

    def unscale(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        return values * self.stored.get("target_std", 1.0) + self.stored.get("target_mean", 0.0)

    def loss(self, training_args):
        mean, std = self.stored.get("target_mean", 0.0), self.stored.get("target_std", 1.0)
        huber, delta = self.options.loss == "huber", self.options.huber_delta

        def compute(outputs, labels, num_items_in_batch=None):
            predicted = outputs["logits"].squeeze(-1)
            target = (labels.to(predicted.dtype) - mean) / std
            per_item = (
                F.huber_loss(predicted, target, delta=delta, reduction="none") if huber
                else F.mse_loss(predicted, target, reduction="none")
            )
            return reduce(per_item, num_items_in_batch)

        return compute

    def compute_metrics(self, metric_names, labels=None):
        def compute(prediction):
            return pick(metric_names, M.regression_scores(prediction.label_ids, self.unscale(prediction.predictions)))

        return compute

    def gold(self, test):
        return {"label": list(test["labels"])} if "labels" in test.column_names else {}

    def prediction_columns(self, output, test, trainer):
        return {"predicted": self.unscale(output.predictions).tolist()}

    def evaluation(self, label_ids, predictions, labels) -> dict:
        return {"scores": M.regression_scores(label_ids, self.unscale(predictions))}

    def plots(self, label_ids, predictions, labels, folder, split) -> list:
        return [("Predicted vs true", plots.regression_scatter(label_ids, self.unscale(predictions), folder / "scatter.png", split))]


@register("token_classification")
class TokenClassification(Head):
    """Word-level tags (BIO): text_columns = [the tokens list column], label_column = the tags list column.

    Only a word's first sub-token carries its tag; the others get -100, which the loss and metrics skip.
    Metrics are entity-level (seqeval's default rules) plus per-word tag accuracy.
    """

    pipeline_task = "token-classification"
    predictions_file = "predictions.jsonl"
    batch_mean_loss = True  # the model's cross-entropy is a batch mean; Trainer must not rescale it (train.py)
    metric_names = M.TOKENS
    default_metrics = M.TOKENS

    @classmethod
    def recipe_problems(cls, options, data_args, training_keys, steps):
        out = []
        if len(data_args.text_columns) != 1:
            out.append(f"data.text_columns: token_classification reads one column of word lists, got {data_args.text_columns}")
        if steps:
            out.append("preprocess: steps edit text strings; token_classification data is already split into words")
        return out

    def encode(self, splits, args, where):
        words, column = args.text_columns[0], args.label_column
        splits = DatasetDict({name: self.tag_names(ds, column) for name, ds in splits.items()})
        for split, ds in splits.items():
            first_bad(ds, words, lambda v: not isinstance(v, list) or not all(isinstance(w, str) for w in v), where, split,
                      "expected a list of words, got")
            if column in ds.column_names:
                first_bad(ds, column, lambda v: not isinstance(v, list), where, split, "expected a list of tags, got")
                pairs = [len(w) != len(t) for w, t in zip(column_values(ds, words), column_values(ds, column))]
                if any(pairs):
                    i = pairs.index(True)
                    raise RecipeError(
                        f"data.label_column: {where(split, source_row(ds, i))}: {len(ds[i][words])} words in {words!r} "
                        f"but {len(ds[i][column])} tags in {column!r} ({sum(pairs)} rows like it in {split})"
                    )
        self.labels = sorted({t for tags in column_values(splits["train"], column) for t in tags}, key=lambda t: (t != "O", t[2:], t))
        known = set(self.labels)
        for split, ds in splits.items():
            if split != "train" and column in ds.column_names:
                first_bad(ds, column, lambda v: not set(v) <= known, where, split, "tag not seen in training in",
                          f"; training tags: {', '.join(self.labels)}")
        index = {t: i for i, t in enumerate(self.labels)}

        def encode_split(ds):
            if column not in ds.column_names:
                return ds
            ds = ds.map(lambda b: {"labels": [[index[t] for t in tags] for tags in b[column]]}, batched=True, desc="encode tags")
            return ds.remove_columns(column) if column != "labels" else ds

        self.words = words
        return DatasetDict({name: encode_split(ds) for name, ds in splits.items()})

    @staticmethod
    def tag_names(ds, column):
        # Hub sets (conll2003) store tags as ids with the names in the feature; use the names.
        feature = ds.features.get(column)
        inner = getattr(feature, "feature", None)
        if isinstance(feature, (Sequence, list)) or inner is not None:
            inner = inner if inner is not None else feature[0]
            if isinstance(inner, ClassLabel):
                return ds.map(lambda b: {column: [[inner.int2str(t) for t in tags] for tags in b[column]]}, batched=True)
        return ds

    def check_train(self, train):
        if not any(t != "O" for t in self.labels):
            raise RecipeError("data.label_column: the training split has no tag other than 'O'; nothing to learn")

    def label_counts(self, ds):
        counts = Counter(t for tags in column_values(ds, "labels") for t in tags)
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    def tokenize(self, splits, tokenizer, args):
        self.tokenizer = tokenizer

        def encode(batch):
            enc = tokenizer(batch[self.words], is_split_into_words=True, truncation=True, max_length=args.max_length)
            if "labels" in batch:
                enc["labels"] = [align(enc.word_ids(i), tags) for i, tags in enumerate(batch["labels"])]
            return enc

        return map_splits(splits, encode, args.max_length)

    def load_model(self, model_args):
        model = AutoModelForTokenClassification.from_pretrained(
            model_args.path,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={t: i for i, t in enumerate(self.labels)},
            **load_kwargs(model_args),
        )
        self.record(model)
        return model

    def collator(self, tokenizer, model, pad_to_multiple_of):
        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def compute_metrics(self, metric_names, labels=None):
        def compute(prediction):
            predicted = prediction.predictions.argmax(-1)
            true_tags, pred_tags = [], []
            for gold, guess in zip(prediction.label_ids, predicted):
                keep = gold != -100
                true_tags.append([self.labels[i] for i in gold[keep]])
                pred_tags.append([self.labels[i] for i in guess[keep]])
            return pick(metric_names, M.entity_scores(true_tags, pred_tags))

        return compute

    def gold(self, test):
        return {"tags": [[self.labels[i] for i in row] for row in column_values(test, "labels")]} if "labels" in test.column_names else {}

    def prediction_columns(self, output, test, trainer):
        predicted = output.predictions.argmax(-1)
        words = list(test[self.words])
        enc = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=predicted.shape[1] if predicted.ndim == 2 else None)
        return {"predicted": self.word_tags(predicted, enc, words)}

    def word_tags(self, predicted, enc, words) -> list[list[str]]:
        rows = []
        for i, row in enumerate(words):
            # A word cut off by max_length gets no prediction: "O", so every word has a tag.
            tags = ["O"] * len(row)
            ids = enc.word_ids(i)
            for position, word in enumerate(ids):
                if word is not None and (position == 0 or ids[position - 1] != word):
                    tags[word] = self.labels[int(predicted[i, position])]
            rows.append(tags)
        return rows

    def infer(self, model, tokenizer, texts, run) -> dict[str, list]:
        """`run.py predict`: one tag per word; a row is a list of words (JSONL) or a text split on whitespace."""
        words = [w if isinstance(w, list) else str(w or "").split() for w in texts[0]]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=run.data.max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            predicted = model(**enc.to(model.device)).logits.argmax(-1).cpu().numpy()
        tags = {"predicted": self.word_tags(predicted, enc, words)}
        # Texts were split here: show the words the tags belong to.
        return tags if all(isinstance(w, list) for w in texts[0]) else {"words": words, **tags}


def tune_thresholds(y: np.ndarray, probs: np.ndarray, min_positives: int) -> tuple[list[float], list[int]]:
    """Each label's F1-best cut on validation; a label with fewer than min_positives positives there gets
    the one cut that maximises micro-F1 over all labels instead, since an F1-best cut fitted to a
    handful of rows is mostly noise (on GoEmotions' rarest labels it fell below 0.02).
    Returns the cuts and the indices of the labels that share the global one."""
    shared = [j for j in range(y.shape[1]) if y[:, j].sum() < min_positives]
    common = M.best_f1_threshold(y.ravel(), probs.ravel()) if shared else None
    return [common if j in shared else M.best_f1_threshold(y[:, j], probs[:, j]) for j in range(y.shape[1])], shared


def map_splits(splits: DatasetDict, encode, max_length: int) -> tuple[DatasetDict, dict]:
    tokenized = DatasetDict({
        name: ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"tokenize {name}")
        for name, ds in splits.items()
    })
    return tokenized, {"max_length": max_length, "splits": {}}


def align(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """One label per sub-token: the word's tag on its first sub-token, -100 on the rest and on special tokens."""
    out, previous = [], None
    for word in word_ids:
        out.append(-100 if word is None or word == previous else tags[word])
        previous = word
    return out


@dataclass
class Seq2SeqOptions:
    source_prefix: str = field(default="", metadata={"help": "text put before every source, e.g. 'summarize: ' for T5"})
    max_target_length: int = field(default=128, metadata={"help": "target tokens after truncation"})

    def problems(self) -> list[str]:
        return [f"max_target_length: {self.max_target_length} must be positive"] if self.max_target_length <= 0 else []


def text_targets(splits, args, where, kind: str):
    column = args.label_column
    for split, ds in splits.items():
        if column in ds.column_names:
            first_bad(ds, column, lambda v: not isinstance(v, str) or not v.strip(), where, split, f"{kind} must be non-empty text, got")
    return splits


def text_problems(data_args, what: str) -> list[str]:
    if len(data_args.text_columns) != 1:
        return [f"data.text_columns: {what} reads one input column, got {data_args.text_columns}"]
    return []


@register("seq2seq")
class Seq2Seq(Head):
    """Encoder-decoder generation (T5, BART): text_columns = [source], label_column = target text.

    Trained with Seq2SeqTrainer; `training.predict_with_generate` (on by default for this head) makes
    evaluation generate, with `training.generation_max_length` / `generation_num_beams`, and score ROUGE.
    """

    pipeline_task = "text2text-generation"
    training_args_class = Seq2SeqTrainingArguments
    trainer_class = Seq2SeqTrainer
    predictions_file = "predictions.jsonl"
    Options = Seq2SeqOptions
    metric_names = M.GENERATION
    default_metrics = M.GENERATION
    training_defaults: ClassVar[dict] = {"predict_with_generate": True}

    @classmethod
    def recipe_problems(cls, options, data_args, training_keys, steps):
        return text_problems(data_args, "seq2seq")

    def encode(self, splits, args, where):
        self.source, self.target = args.text_columns[0], args.label_column
        return text_targets(splits, args, where, "the target")

    def tokenize(self, splits, tokenizer, args):
        self.tokenizer, self.max_length = tokenizer, args.max_length
        prefix = self.options.source_prefix

        def encode(batch):
            enc = tokenizer([prefix + t for t in batch[self.source]], truncation=True, max_length=args.max_length)
            if self.target in batch:
                enc["labels"] = tokenizer(
                    text_target=batch[self.target], truncation=True, max_length=self.options.max_target_length
                )["input_ids"]
            return enc

        return map_splits(splits, encode, args.max_length)

    def load_model(self, model_args):
        model = AutoModelForSeq2SeqLM.from_pretrained(model_args.path, **load_kwargs(model_args))
        self.record(model)
        return model

    def collator(self, tokenizer, model, pad_to_multiple_of):
        return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=pad_to_multiple_of)

    def decode(self, ids) -> list[str]:
        ids = np.where(np.asarray(ids) < 0, self.tokenizer.pad_token_id, ids)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def compute_metrics(self, metric_names, labels=None):
        def compute(prediction):
            predictions = prediction.predictions
            if isinstance(predictions, tuple) or np.asarray(predictions).ndim == 3:
                return {}  # logits, not generated ids: predict_with_generate is off; the loss is the score
            return pick(metric_names, M.rouge_scores(self.decode(prediction.label_ids), self.decode(predictions)))

        return compute

    def gold(self, test):
        return {"target": list(test[self.target])} if self.target in test.column_names else {}

    def prediction_columns(self, output, test, trainer):
        if np.asarray(output.predictions).ndim == 3:
            return {"generated": self.generated(trainer.model, self.tokenizer, test[self.source], trainer.args.per_device_eval_batch_size,
                                                generation_settings(trainer.args), self.max_length)}
        return {"generated": self.decode(output.predictions)}

    def generated(self, model, tokenizer, sources, batch_size, settings, max_length) -> list[str]:
        prompts = [self.options.source_prefix + (t or "") for t in sources]
        return generate(model, tokenizer, prompts, batch_size, prompt_max_length=max_length, **settings)

    def infer(self, model, tokenizer, texts, run) -> dict[str, list]:
        """`run.py predict`: the generated target for each source text."""
        return {"generated": self.generated(model, tokenizer, texts[0], len(texts[0]), generation_settings(run.training),
                                            run.data.max_length)}


def generate(model, tokenizer, prompts: list[str], batch_size: int, prompt_max_length: int | None = None,
             decoder_only: bool = False, **generation) -> list[str]:
    """Greedy (or beam) generation, batch by batch, for prediction files. Prompts longer than
    prompt_max_length tokens are cut as in training (a decoder-only model keeps the prompt's end, next to
    its answer); `generation` goes to model.generate (max_new_tokens, max_length, num_beams)."""
    model.eval()
    out = []
    side, cut = tokenizer.padding_side, tokenizer.truncation_side
    # A decoder-only model continues the last position: pad on the left so every prompt ends there.
    tokenizer.padding_side = tokenizer.truncation_side = "left" if decoder_only else side
    try:
        for start in range(0, len(prompts), batch_size):
            # No token_type_ids: a BERT tokenizer makes them, and T5's or GPT-2's generate refuses or misreads them.
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True, truncation=prompt_max_length is not None,
                              max_length=prompt_max_length, add_special_tokens=not decoder_only, return_token_type_ids=False).to(model.device)
            with torch.no_grad():
                ids = model.generate(**batch, do_sample=False, pad_token_id=tokenizer.pad_token_id, **generation)
            if decoder_only:
                ids = ids[:, batch["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, cut
    return out


def generation_settings(args) -> dict:
    """What Seq2SeqTrainer's predict_with_generate uses, from TrainingArguments or a finished run's `training:`
    section: generation_max_length (decoder tokens, as generate's max_length) and generation_num_beams;
    unset, the model's generation_config decides."""
    get = args.get if isinstance(args, dict) else lambda k: getattr(args, k, None)
    names = {"generation_max_length": "max_length", "generation_num_beams": "num_beams"}
    return {to: get(name) for name, to in names.items() if get(name)}


@dataclass
class CompletionOptions:
    max_new_tokens: int = field(default=64, metadata={"help": "tokens generated per test prompt for predictions.jsonl"})

    def problems(self) -> list[str]:
        return [f"max_new_tokens: {self.max_new_tokens} must be positive"] if self.max_new_tokens <= 0 else []


@register("causal_lm_sft")
class CausalLMCompletion(Head):
    """Decoder-only prompt -> completion fine-tuning: text_columns = [prompt], label_column = completion.

    The model reads prompt + completion + end-of-text; only completion and end-of-text tokens are in the
    loss (the prompt's labels are -100), so it learns to answer, not to repeat prompts. `causal_lm` is
    left to plain language-model pretraining on raw text.
    """

    pipeline_task = "text-generation"
    predictions_file = "predictions.jsonl"
    Options = CompletionOptions
    metric_names = ("perplexity",)
    default_metrics = ("perplexity",)

    @classmethod
    def recipe_problems(cls, options, data_args, training_keys, steps):
        return text_problems(data_args, "causal_lm_sft")

    def encode(self, splits, args, where):
        self.prompt, self.completion = args.text_columns[0], args.label_column
        return text_targets(splits, args, where, "the completion")

    def tokenize(self, splits, tokenizer, args):
        self.tokenizer, self.max_length = tokenizer, args.max_length
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        pad_with_eos(tokenizer)
        limit = args.max_length

        def encode(batch):
            prompts = tokenizer(batch[self.prompt], add_special_tokens=False)["input_ids"]
            if self.completion not in batch:  # a test split of prompts only: generation needs no labels
                ids = [p[-limit:] for p in prompts]
                return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
            answers = tokenizer(batch[self.completion], add_special_tokens=False)["input_ids"]
            ids, labels = [], []
            for p, c in zip(prompts, answers):
                c = (c + [end])[: max(limit // 2, limit - len(p))]
                p = p[-(limit - len(c)):] if limit > len(c) else []  # keep the end of a long prompt, next to its answer
                ids.append(p + c)
                labels.append([-100] * len(p) + c)
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels}

        return map_splits(splits, encode, args.max_length)

    def load_model(self, model_args):
        model = AutoModelForCausalLM.from_pretrained(model_args.path, **load_kwargs(model_args))
        if model.config.pad_token_id is None and self.tokenizer is not None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        self.record(model)
        return model

    def collator(self, tokenizer, model, pad_to_multiple_of):
        # Pads input_ids with the pad id and labels with -100, which is all a decoder-only batch needs.
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=pad_to_multiple_of)

    def scores(self, metrics):
        if "loss" in metrics:
            metrics["perplexity"] = float(math.exp(min(metrics["loss"], 50.0)))
        return metrics

    def gold(self, test):
        return {"completion": list(test[self.completion])} if self.completion in test.column_names else {}

    def prediction_columns(self, output, test, trainer):
        return {"generated": generate(trainer.model, self.tokenizer, list(test[self.prompt]), trainer.args.per_device_eval_batch_size,
                                      self.max_length, decoder_only=True, max_new_tokens=self.options.max_new_tokens)}

    def infer(self, model, tokenizer, texts, run) -> dict[str, list]:
        """`run.py predict`: the completion generated for each prompt."""
        pad_with_eos(tokenizer)
        prompts = [t or "" for t in texts[0]]
        return {"generated": generate(model, tokenizer, prompts, len(prompts), run.data.max_length, decoder_only=True,
                                      max_new_tokens=self.options.max_new_tokens)}


from . import lm  # noqa: F401  (registers masked_lm and causal_lm, which build on Head)
