"""Pooled heads that classify: one vector per text (or text pair) and one output per class.

`PooledHead` is the model every one of them shares; `sequence_classification` (softmax) and `binary` (the
article's single logit with BCE and a decision threshold) read one class per row. `multi_label`
(independent sigmoids with per-label cuts) is multi_label.py; regression is the same model with one output
(regression.py); a custom pooled head on any of them is `model.head_config` (custom.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, DatasetDict, Features
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from ..core.errors import RecipeError
from ..data.steps.base import STREAM_BATCH
from ..data.streaming import is_streamed
from ..evaluation import metrics as M
from ..evaluation import plots
from ..modeling.models import scratch_config
from .base import (
    Head,
    State,
    column_values,
    first_bad,
    label_names,
    load_kwargs,
    pad_like_tokenizer,
    reduce,
    register,
    reset_head_layers,
    starting_state,
)
from .custom import EncoderWithHead, EncoderWithHeadConfig
from .distillation import sigmoid_kl, softmax_kl

LENGTH_KEY = "data.max_length"


class PooledHead(Head):
    """One vector per text, N outputs on it: AutoModelForSequenceClassification, or our custom pooled head."""

    accepts_head_config = True
    splits_batches = True  # losses are item sums over num_items_in_batch, so batches may run as chunks
    flattens = True  # the model pools one vector per text, so its encoder may read the texts as one row
    pipeline_task = "text-classification"
    not_exportable = None  # one vector per text, logits out: the whole prediction is one graph
    # The model config's problem_type, declared, never guessed: transformers would read num_labels=1 as regression.
    problem_type: ClassVar[str] = "single_label_classification"

    @property
    def num_outputs(self) -> int:
        """The width of the output layer: one logit per label (binary and regression: one)."""
        return len(self.labels)

    def id2label(self) -> dict[int, str]:
        """The names of the outputs, as the saved model's config and the pipeline show them."""
        return dict(enumerate(self.labels))

    def continues(self, saved: State | None, config) -> bool:
        """Only the same head on the same labels (and the same custom head, if any) goes on from a saved head layer."""
        if saved is None or saved.head != self.name or saved.labels != self.labels:
            return False
        custom = isinstance(config, EncoderWithHeadConfig)
        if custom != (self.head_config is not None):
            return False
        return not custom or {k: config.head.get(k) for k in self.head_config.__dict__} == self.head_config.__dict__

    def load_model(self, model_args, tokenizer):
        self.state.init = model_args.init
        saved = starting_state(model_args)
        config = None if model_args.init == "scratch" else AutoConfig.from_pretrained(
            model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code)
        id2label = self.id2label()
        # problem_type is declared, never guessed: transformers would read num_labels=1 as regression.
        common = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}, "problem_type": self.problem_type}
        if self.continues(saved, config):
            model = AutoModelForSequenceClassification.from_pretrained(model_args.path, **load_kwargs(model_args))
        elif self.head_config:
            model = EncoderWithHead.on_encoder(self.encoder(model_args, config, tokenizer), self.head_config, self.num_outputs, **common)
        elif model_args.init == "scratch":
            config = scratch_config(model_args, tokenizer, self.data.max_length, LENGTH_KEY)
            config.update({"num_labels": self.num_outputs, **common})
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            # ignore_mismatched_sizes: a checkpoint with a classifier of another size (another label set) loads
            # its encoder; its classifier is drawn anew below either way.
            model = AutoModelForSequenceClassification.from_pretrained(
                model_args.path, num_labels=self.num_outputs, ignore_mismatched_sizes=True, **common, **load_kwargs(model_args)
            )
            if saved is not None or any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
                reset_head_layers(model)
        if not self.head_config:  # a custom pooled head pools by the attention mask instead
            pad_like_tokenizer(model, tokenizer)
        self.initialise(model, fresh=not self.continues(saved, config))
        self.record(model)
        return model

    def encoder(self, model_args, config, tokenizer):
        """The encoder under a new custom head: pretrained, the encoder of a saved custom-head model, or new."""
        if model_args.init == "scratch":
            return AutoModel.from_config(scratch_config(model_args, tokenizer, self.data.max_length, LENGTH_KEY))
        if isinstance(config, EncoderWithHeadConfig):
            return EncoderWithHead.from_pretrained(model_args.path, **load_kwargs(model_args)).encoder
        return AutoModel.from_pretrained(model_args.path, **load_kwargs(model_args))

    def initialise(self, model, fresh: bool) -> None:
        """A fresh head layer's starting point beyond the model's own initialisation (multi_label's prior biases)."""

    def load_trained(self, path, model_args):
        return AutoModelForSequenceClassification.from_pretrained(path, **load_kwargs(model_args))

    def peft_defaults(self, model):
        if not self.head_config:
            return {}
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS

        # peft knows the encoder's attention layers by model type, not our wrapper's; and our head layer is
        # `head`, not the `classifier` peft keeps trainable and saves for a classification task.
        return {"target_modules": TARGETS.get(model.config.encoder.get("model_type")), "modules_to_save": ["head"]}

    def predictions_of(self, logits) -> np.ndarray:
        """What the scores read from the logits: probabilities per label (regression: values in y's units)."""
        raise NotImplementedError

    def soft_targets(self, logits):
        return np.asarray(logits, dtype=np.float32).reshape(len(logits), -1)


def stream_labels(batch, column: str, index: dict) -> dict:
    """A streamed batch's labels as ids of data.label_names; a label outside them stops the run, naming it."""
    out = []
    for value in batch[column]:
        if value not in index:
            raise RecipeError(f"data.label_names: a streamed training row has label {value!r}, not one of {', '.join(index)}")
        out.append(index[value])
    return {"labels": out}


class ClassLabels(PooledHead):
    """Labels are one class per row: ints of any range or strings, named and ordered from the training split."""

    stratify = True
    text_labels = True
    supports_cv = True
    one_class_per_row = True
    labels_are_classes = True

    streams = True  # with data.label_names: the label set is given, since a stream is not read before training
    given_labels = True

    def encode(self, splits, where):
        column = self.data.label_column
        train = splits["train"]
        given = [str(n) for n in self.data.label_names] if is_streamed(train) else None
        self.state.labels = self.order(given or label_names(column_values(train, column)))
        known = set(self.labels)
        for split, ds in splits.items():
            if split != "train" and column in ds.column_names:
                first_bad(ds, column, lambda v: str(v) not in known, where, split, "label not seen in training:",
                          f"; training labels: {', '.join(self.labels)}")
        return DatasetDict({name: self.encode_split(ds) for name, ds in splits.items()})

    def order(self, labels: list[str]) -> list[str]:
        return labels

    def encode_split(self, ds):
        column = self.data.label_column
        if column not in ds.column_names:
            return ds
        index = {name: i for i, name in enumerate(self.labels)}
        if is_streamed(ds):
            features = Features({**{k: v for k, v in ds.features.items() if k != column}, "labels": ClassLabel(names=self.labels)})
            return ds.map(stream_labels, batched=True, batch_size=STREAM_BATCH, fn_kwargs={"column": column, "index": index}, remove_columns=[column], features=features)
        unseen = sorted({str(v) for v in column_values(ds, column)} - set(index))
        if unseen:
            raise RecipeError(f"labels the run was not trained on: {', '.join(map(repr, unseen[:5]))}; its labels: {', '.join(self.labels)}")
        ds = ds.map(lambda b: {"labels": [index[str(v)] for v in b[column]]}, batched=True, desc="encode labels")
        if column != "labels":
            ds = ds.remove_columns(column)
        return ds.cast_column("labels", ClassLabel(names=self.labels))

    def learn(self, train):
        if is_streamed(train):
            return  # its classes are data.label_names, checked row by row as training reads them
        present = set(column_values(train, "labels"))
        if len(present) < 2:
            only = self.labels[present.pop()] if present else "none"
            raise RecipeError(f"data.label_column: the training split has a single class ({only!r}); a classifier needs two or more")

    def label_counts(self, ds):
        counts = Counter(column_values(ds, "labels"))
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    def gold(self, split):
        return {self.data.label_column: [self.labels[i] for i in column_values(split, "labels")]} if "labels" in split.column_names else {}

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The predicted label id of each row: the run's decision rule, used by every score, table and file."""
        return probs.argmax(axis=-1)

    def compute_metrics(self, metric_names, tokenizer=None):
        def compute(prediction):
            probs = self.predictions_of(prediction.predictions)
            return M.classification_scores(metric_names, prediction.label_ids, probs, self.labels, self.decide(probs))

        return compute

    def evaluation(self, label_ids, predictions):
        probs = self.predictions_of(predictions)
        return M.classification_details(np.asarray(label_ids).astype(int), probs, self.labels, self.decide(probs))

    def plots(self, label_ids, predictions, folder, split):
        probs = self.predictions_of(predictions)
        return plots.classification(np.asarray(label_ids).astype(int), probs, self.labels, folder, split, self.decide(probs))

    def prediction_columns(self, predictions, split, tokenizer):
        probs = self.predictions_of(predictions)
        columns = {"predicted": [self.labels[i] for i in self.decide(probs)]}
        for i, name in enumerate(self.labels):
            columns[f"prob_{name}"] = probs[:, i].tolist()
        return columns

    def decision_rule(self):
        return "the most probable label"

    def baseline(self, record, metric, label_ids):
        counts = ((record.get("data") or {}).get("labels") or {}).get("train")
        if not record.get("labels") or not counts:
            return None
        names = list(record["labels"])
        majority = max(names, key=lambda n: counts.get(n, 0))
        probs = np.zeros((len(label_ids), len(names)))
        probs[:, names.index(majority)] = 1.0
        value = M.classification_scores([metric], np.asarray(label_ids).astype(int), probs, names).get(metric)
        return value, f"always the majority class {majority!r}"

    def file_probabilities(self, frame):
        if len(self.labels) == 2 and f"prob_{self.labels[0]}" not in frame:  # binary writes P(positive) only
            p = frame[f"prob_{self.labels[1]}"].to_numpy(dtype=float)
            return np.stack([1 - p, p], axis=1)
        return frame[[f"prob_{name}" for name in self.labels]].to_numpy(dtype=float)

    def ids(self, names) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.labels)}
        return np.asarray([index[str(v)] for v in names])

    def file_scores(self, metric_names, frame):
        return M.classification_scores(metric_names, self.ids(frame[self.data.label_column]), self.file_probabilities(frame), self.labels,
                                       self.ids(frame["predicted"]))

    def fold_average(self, folds, frames, metric_names):
        # Mean probabilities, decided by this head's rule (the first fold's; binary averages its threshold first).
        probs = np.mean([self.file_probabilities(f) for f in frames], axis=0)
        decided = self.decide(probs)
        columns = {"predicted": [self.labels[i] for i in decided], **{f"prob_{name}": probs[:, i] for i, name in enumerate(self.labels)}}
        return columns, M.classification_scores(metric_names, self.ids(frames[0][self.data.label_column]), probs, self.labels, decided)


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
    aliases = ('classification', 'classifier', 'text_classification', 'multiclass', 'multi_class', 'multi_class_classification', 'softmax', 'sentiment', 'single_label')

    @dataclass
    class State(ClassLabels.State):
        class_weights: list[float] | None = None  # the loss weight per label (head_options.class_weights, resolved)

    Options = ClassificationOptions
    distillation = "KL divergence from the teacher's softmax to the student's, both at temperature T, times T²"

    @classmethod
    def recipe_problems(cls, options, recipe):
        out = super().recipe_problems(options, recipe)
        if recipe.data.streaming and options.class_weights == "auto":
            out.append("model.head_options.class_weights: auto counts every training label, which a stream never holds; "
                       "give one weight per label of data.label_names, or leave it out (data.streaming: true)")
        return out

    def learn(self, train):
        super().learn(train)
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
            self.state.class_weights = [round(w, 6) for w in weights]

    def loss(self, training_args):
        weights = self.state.class_weights
        smoothing = training_args.label_smoothing_factor

        def compute(outputs, labels, num_items_in_batch=None):
            logits = outputs["logits"]
            weight = torch.tensor(weights, dtype=logits.dtype, device=logits.device) if weights else None
            per_item = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing, reduction="none")
            return reduce(per_item, num_items_in_batch)

        return compute

    def teacher_term(self, logits, teacher, temperature):
        return softmax_kl(logits, teacher, temperature)

    def predictions_of(self, logits):
        return M.softmax(logits)


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


def sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


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
    aliases = ('binary_classification', 'two_class', 'sigmoid', 'yes_no')

    @dataclass
    class State(ClassLabels.State):
        threshold: float | None = None  # predict the positive label at P(positive) >= threshold

    Options = BinaryOptions
    # One output with a sigmoid: the text-classification pipeline applies a sigmoid for this problem type.
    problem_type = "multi_label_classification"
    distillation = "BCE of the student's logit / T against sigmoid(teacher's logit / T), less the teacher's entropy (a KL), times T²"

    @classmethod
    def recipe_problems(cls, options, recipe):
        return super().recipe_problems(options, recipe) + needs_validation(options, recipe.data)

    def order(self, labels):
        if len(labels) != 2:
            raise RecipeError(f"data.label_column: head binary needs exactly 2 labels, the training split has {len(labels)}: {', '.join(labels)}")
        positive = self.options.positive_label
        if positive is None:
            return labels
        if positive not in labels:
            raise RecipeError(f"model.head_options.positive_label: {positive!r} is not a label; labels: {', '.join(labels)}")
        return [label for label in labels if label != positive] + [positive]

    @property
    def num_outputs(self):
        return 1

    def id2label(self):
        return {0: self.labels[1]}

    @property
    def threshold(self) -> float:
        if self.state.threshold is not None:
            return self.state.threshold
        return 0.5 if self.options.threshold == "tune" else self.options.threshold

    def loss(self, training_args):
        def compute(outputs, labels, num_items_in_batch=None):
            logits = outputs["logits"].squeeze(-1)
            per_item = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
            return reduce(per_item, num_items_in_batch)

        return compute

    def teacher_term(self, logits, teacher, temperature):
        return sigmoid_kl(logits.squeeze(-1), teacher.squeeze(-1), temperature)

    def predictions_of(self, logits):
        p = sigmoid(logits).reshape(-1)
        return np.stack([1 - p, p], axis=1)

    def decide(self, probs):
        return (probs[:, 1] >= self.threshold).astype(int)

    def compute_metrics(self, metric_names, tokenizer=None):
        scores = super().compute_metrics(metric_names, tokenizer)
        return lambda prediction: {**scores(prediction), "threshold": self.threshold}

    def after_training(self, trainer, tokenized):
        if self.options.threshold != "tune":
            self.state.threshold = self.threshold
            return {}
        output = trainer.predict_split(trainer.eval_dataset, "tune")
        self.state.threshold = M.best_f1_threshold(output.label_ids, self.predictions_of(output.predictions)[:, 1])
        self.record(trainer.model)
        return {"threshold": self.state.threshold}

    def prediction_columns(self, predictions, split, tokenizer):
        probs = self.predictions_of(predictions)
        return {"predicted": [self.labels[i] for i in self.decide(probs)], f"prob_{self.labels[1]}": probs[:, 1].tolist()}

    def fold_average(self, folds, frames, metric_names):
        averaged = self.with_state(threshold=float(np.mean([fold.threshold for fold in folds])))
        columns, scores = ClassLabels.fold_average(averaged, folds, frames, metric_names)
        return columns, {**scores, "threshold": averaged.state.threshold}

    def decision_rule(self):
        how = "tuned for F1 on validation" if self.options.threshold == "tune" else "set by the recipe"
        return f"{self.labels[1]!r} when P({self.labels[1]}) >= {self.threshold:.4f} ({how}), else {self.labels[0]!r}"
