"""Pooled heads that classify: one vector per text (or text pair) and one output per class.

`sequence_classification` (softmax), `binary` (the article's single logit with BCE and a decision
threshold), `multi_label` (independent sigmoids with per-label cuts). Regression is the same model with
one output (regression.py); a custom pooled head on any of them is `model.head_config` (custom.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, DatasetDict
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from ..core.errors import RecipeError
from ..evaluation import metrics as M
from ..evaluation import plots
from ..modeling.models import scratch_config
from .base import (
    Head,
    HeadState,
    column_values,
    first_bad,
    label_names,
    load_kwargs,
    pick,
    reduce,
    register,
    reset_head_layers,
)
from .custom import EncoderWithHead, EncoderWithHeadConfig
from .distillation import sigmoid_kl, softmax_kl

LENGTH_KEY = "data.max_length"


def saved_state(model_args) -> HeadState | None:
    """What a model this project trained says about its head (None for any other model, or a new one)."""
    if model_args.init == "scratch":
        return None
    state = HeadState.load(model_args.path)
    if state is not None:
        return state
    config = AutoConfig.from_pretrained(model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code)
    raw = getattr(config, "recipekit", None)
    return HeadState.from_dict(raw) if isinstance(raw, dict) and "head" in raw else None


class PooledHead(Head):
    """One vector per text, N outputs on it: AutoModelForSequenceClassification, or our custom pooled head."""

    accepts_head_config = True
    splits_batches = True  # losses are item sums over num_items_in_batch, so batches may run as chunks
    pipeline_task = "text-classification"
    problem_type = "single_label_classification"
    not_exportable = None  # one vector per text, logits out: the whole prediction is one graph

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def continues(self, saved: HeadState | None, config) -> bool:
        """Only the same head on the same labels (and the same custom head, if any) goes on from a saved head layer."""
        if saved is None or saved.head != self.name or saved.labels != self.labels:
            return False
        custom = isinstance(config, EncoderWithHeadConfig)
        if custom != (self.head_config is not None):
            return False
        return not custom or {k: config.head.get(k) for k in self.head_config.__dict__} == self.head_config.__dict__

    def load_model(self, model_args, tokenizer):
        self.state.init = model_args.init
        saved = saved_state(model_args)
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
        if not self.head_config and model.config.pad_token_id is None and tokenizer is not None and tokenizer.pad_token_id is not None:
            # Decoder classifiers (GPT-2, Llama) pool the last token that is not padding: they need the pad id.
            # (A custom pooled head pools by the attention mask instead.)
            model.config.pad_token_id = tokenizer.pad_token_id
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


class ClassLabels(PooledHead):
    """Labels are one class per row: ints of any range or strings, named and ordered from the training split."""

    stratify = True
    text_labels = True

    def encode(self, splits, where):
        column = self.data.label_column
        self.state.labels = self.order(label_names(column_values(splits["train"], column)))
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
        unseen = sorted({str(v) for v in column_values(ds, column)} - set(index))
        if unseen:
            raise RecipeError(f"labels the run was not trained on: {', '.join(map(repr, unseen[:5]))}; its labels: {', '.join(self.labels)}")
        ds = ds.map(lambda b: {"labels": [index[str(v)] for v in b[column]]}, batched=True, desc="encode labels")
        if column != "labels":
            ds = ds.remove_columns(column)
        return ds.cast_column("labels", ClassLabel(names=self.labels))

    def learn(self, train):
        present = set(column_values(train, "labels"))
        if len(present) < 2:
            only = self.labels[present.pop()] if present else "none"
            raise RecipeError(f"data.label_column: the training split has a single class ({only!r}); a classifier needs two or more")

    def label_counts(self, ds):
        counts = Counter(column_values(ds, "labels"))
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    def gold(self, split):
        return {"label": [self.labels[i] for i in column_values(split, "labels")]} if "labels" in split.column_names else {}

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
    distillation = "KL divergence from the teacher's softmax to the student's, both at temperature T, times T²"

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

    Options = BinaryOptions
    # One output with a sigmoid: the text-classification pipeline applies a sigmoid for this problem type.
    problem_type = "multi_label_classification"
    distillation = "BCE of the student's logit / T against sigmoid(teacher's logit / T), less the teacher's entropy (a KL), times T²"

    @classmethod
    def recipe_problems(cls, options, recipe):
        return needs_validation(options, recipe.data)

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

    def decision_rule(self):
        how = "tuned for F1 on validation" if self.options.threshold == "tune" else "set by the recipe"
        return f"{self.labels[1]!r} when P({self.labels[1]}) >= {self.threshold:.4f} ({how}), else {self.labels[0]!r}"


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


def tune_thresholds(y: np.ndarray, probs: np.ndarray, min_positives: int) -> tuple[list[float], list[int]]:
    """Each label's F1-best cut on validation; a label with fewer than min_positives positives there gets
    the one cut that maximises micro-F1 over all labels instead, since an F1-best cut fitted to a
    handful of rows is mostly noise (on GoEmotions' rarest labels it fell below 0.02).
    Returns the cuts and the indices of the labels that share the global one."""
    shared = [j for j in range(y.shape[1]) if y[:, j].sum() < min_positives]
    common = M.best_f1_threshold(y.ravel(), probs.ravel()) if shared else None
    return [common if j in shared else M.best_f1_threshold(y[:, j], probs[:, j]) for j in range(y.shape[1])], shared


@register("multi_label")
class MultiLabel(PooledHead):
    """N independent sigmoids + BCE; a row's labels are a list or a delimited string."""

    Options = MultiLabelOptions
    problem_type = "multi_label_classification"
    metric_names = tuple(M.MULTI_LABEL)
    default_metrics = ("f1_micro", "f1_macro", "subset_accuracy", "roc_auc_macro", "f1_per_label")
    distillation = "`binary`'s, per label"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.positive_rate: np.ndarray | None = None  # learned from train for the prior bias; not needed after training

    @classmethod
    def recipe_problems(cls, options, recipe):
        return needs_validation(options, recipe.data)

    def split_labels(self, value) -> list[str] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else str(value).split(self.options.label_delimiter)
        return [str(v).strip() for v in items if str(v).strip() != ""]

    def encode(self, splits, where):
        column = self.data.label_column
        for split, ds in splits.items():
            if column not in ds.column_names:
                continue
            first_bad(ds, column, lambda v: v is None, where, split, "no label list:")
            if not self.options.allow_empty:
                first_bad(ds, column, lambda v: not self.split_labels(v), where, split, "empty label list:",
                          "; set model.head_options.allow_empty: true if rows may have no label")
        names = {name for v in column_values(splits["train"], column) for name in self.split_labels(v)}
        # Numeric ids sort as numbers, so GoEmotions' 0..27 keep their source order.
        self.state.labels = sorted(names, key=lambda n: (0, int(n), "") if n.lstrip("-").isdigit() else (1, 0, n))
        known = set(self.labels)
        for split, ds in splits.items():
            if split != "train" and column in ds.column_names:
                first_bad(ds, column, lambda v: not set(self.split_labels(v)) <= known, where, split,
                          "label not seen in training:", f"; training labels: {', '.join(self.labels)}")
        return DatasetDict({name: self.encode_split(ds) for name, ds in splits.items()})

    def encode_split(self, ds):
        column = self.data.label_column
        if column not in ds.column_names:
            return ds
        index = {name: i for i, name in enumerate(self.labels)}

        def hot(batch):
            rows = []
            for value in batch[column]:
                row = [0.0] * len(self.labels)
                for name in self.split_labels(value) or []:
                    if name not in index:
                        raise RecipeError(f"data.label_column: label {name!r} was not seen in training; training labels: {', '.join(self.labels)}")
                    row[index[name]] = 1.0
                rows.append(row)
            return {"labels": rows}

        ds = ds.map(hot, batched=True, desc="encode labels")
        return ds.remove_columns(column) if column != "labels" else ds

    def learn(self, train):
        if len(self.labels) < 2:
            raise RecipeError(f"data.label_column: the training split has {len(self.labels)} distinct label(s); multi_label needs two or more")
        self.positive_rate = np.asarray(column_values(train, "labels"), dtype=np.float64).mean(axis=0)

    def initialise(self, model, fresh):
        if fresh and self.options.bias_init == "prior" and self.positive_rate is not None:
            print(f"multi_label: output biases {prior_bias(model, self.positive_rate)}")

    def label_counts(self, ds):
        counts = np.asarray(column_values(ds, "labels")).sum(axis=0)
        return {name: int(c) for name, c in zip(self.labels, counts)}

    @property
    def thresholds(self) -> list[float]:
        if self.state.thresholds is not None:
            return self.state.thresholds
        return [0.5 if self.options.threshold == "tune" else self.options.threshold] * len(self.labels)

    def loss(self, training_args):
        def compute(outputs, labels, num_items_in_batch=None):
            logits = outputs["logits"]
            per_item = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
            return reduce(per_item, num_items_in_batch)

        return compute

    def teacher_term(self, logits, teacher, temperature):
        return sigmoid_kl(logits, teacher, temperature)

    def predictions_of(self, logits):
        return sigmoid(logits)

    def decide(self, probs) -> np.ndarray:
        return probs >= np.asarray(self.thresholds)

    def compute_metrics(self, metric_names, tokenizer=None):
        def compute(prediction):
            probs = self.predictions_of(prediction.predictions)
            return pick(metric_names, M.multi_label_scores(prediction.label_ids, probs, self.thresholds, self.labels))

        return compute

    def after_training(self, trainer, tokenized):
        if self.options.threshold != "tune":
            self.state.thresholds = self.thresholds
            return {}
        output = trainer.predict_split(trainer.eval_dataset, "tune")
        y = np.asarray(output.label_ids).astype(int)
        self.state.thresholds, shared = tune_thresholds(y, self.predictions_of(output.predictions), self.options.tune_min_positives)
        self.state.shared_threshold_labels = [self.labels[j] for j in shared]
        self.record(trainer.model)
        return {"thresholds": dict(zip(self.labels, self.state.thresholds)), "shared_threshold_labels": self.state.shared_threshold_labels}

    def gold(self, split):
        if "labels" not in split.column_names:
            return {}
        d = self.options.label_delimiter
        return {"label": [d.join(n for n, v in zip(self.labels, row) if v) for row in column_values(split, "labels")]}

    def prediction_columns(self, predictions, split, tokenizer):
        probs = self.predictions_of(predictions)
        d = self.options.label_delimiter
        columns = {"predicted": [d.join(n for n, h in zip(self.labels, row) if h) for row in self.decide(probs)]}
        for j, name in enumerate(self.labels):
            columns[f"prob_{name}"] = probs[:, j].tolist()
        return columns

    def evaluation(self, label_ids, predictions):
        probs = self.predictions_of(predictions)
        y = np.asarray(label_ids).astype(int)
        scores = M.multi_label_scores(y, probs, self.thresholds, self.labels)
        hits = self.decide(probs).astype(int)
        per_label = [
            {"label": name, "threshold": float(cut), "support": int(y[:, j].sum()),
             **M.binary_scores(y[:, j], hits[:, j])}
            for j, (name, cut) in enumerate(zip(self.labels, self.thresholds))
        ]
        return {"scores": {k: v for k, v in scores.items() if not isinstance(v, dict)}, "per_class": per_label}

    def decision_rule(self):
        if self.options.threshold == "tune":
            shared = f"; {len(self.state.shared_threshold_labels)} rare labels share one cut" if self.state.shared_threshold_labels else ""
            return f"each label whose probability is at least its own cut, tuned for F1 on validation{shared}"
        return f"each label whose probability is at least {self.thresholds[0] if self.thresholds else self.options.threshold}"
