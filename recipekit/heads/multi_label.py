"""`multi_label`: N independent sigmoids and BCE on the pooled vector, each label cut at its own threshold.

A row's labels are a list or a delimited string; the cuts are the recipe's, or tuned per label for F1 on
validation (rare labels share one); fresh output biases start at the labels' training log-odds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from datasets import DatasetDict, Features, Sequence, Value

from ..core.errors import RecipeError
from ..data.steps.base import STREAM_BATCH
from ..data.streaming import SAMPLE_ROWS, is_streamed
from ..evaluation import metrics as M
from .base import column_values, first_bad, pick, reduce, register
from .classification import PooledHead, needs_validation, sigmoid, threshold_problems
from .distillation import sigmoid_kl


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
    aliases = ('multilabel', 'multi_label_classification', 'multilabel_classification', 'multi_labels')

    @dataclass
    class State(PooledHead.State):
        thresholds: list[float] | None = None  # one cut per label
        shared_threshold_labels: list[str] = field(default_factory=list)  # labels too rare for an own cut

    Options = MultiLabelOptions
    labels_are_classes = True
    empty_label_is_value = True  # an empty cell is a row with no label (head_options.allow_empty decides)
    problem_type = "multi_label_classification"
    metric_names = tuple(M.MULTI_LABEL)
    default_metrics = ("f1_micro", "f1_macro", "subset_accuracy", "roc_auc_macro", "f1_per_label")
    distillation = "`binary`'s, per label"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.positive_rate: np.ndarray | None = None  # learned from train for the prior bias; not needed after training

    streams = True  # with data.label_names; the prior biases come from the stream's first rows
    given_labels = True

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
            if column not in ds.column_names or is_streamed(ds):  # a streamed row is checked as training reads it
                continue
            first_bad(ds, column, lambda v: v is None, where, split, "no label list:")
            if not self.options.allow_empty:
                first_bad(ds, column, lambda v: not self.split_labels(v), where, split, "empty label list:",
                          "; set model.head_options.allow_empty: true if rows may have no label")
        if is_streamed(splits["train"]):
            self.state.labels = [str(n) for n in self.data.label_names]
        else:
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

        streamed = is_streamed(ds)

        def hot(batch):
            rows = []
            for value in batch[column]:
                row = [0.0] * len(self.labels)
                if streamed and not self.options.allow_empty and not self.split_labels(value):
                    raise RecipeError(f"data.label_column: a streamed training row has an empty label list ({value!r}); "
                                      "set model.head_options.allow_empty: true if rows may have no label")
                for name in self.split_labels(value) or []:
                    if name not in index:
                        raise RecipeError(f"data.label_column: label {name!r} was not seen in training; training labels: {', '.join(self.labels)}")
                    row[index[name]] = 1.0
                rows.append(row)
            return {"labels": rows}

        if streamed:
            features = Features({**{k: v for k, v in ds.features.items() if k != column}, "labels": Sequence(Value("float32"))})
            return ds.map(hot, batched=True, batch_size=STREAM_BATCH, remove_columns=[column], features=features)
        ds = ds.map(hot, batched=True, desc="encode labels")
        return ds.remove_columns(column) if column != "labels" else ds

    def learn(self, train):
        if len(self.labels) < 2:
            raise RecipeError(f"data.label_column: the training split has {len(self.labels)} distinct label(s); multi_label needs two or more")
        # A stream's rates are those of its first rows (the data report's sample): the biases are only a start.
        rows = [row["labels"] for row in train.take(SAMPLE_ROWS)] if is_streamed(train) else column_values(train, "labels")
        self.positive_rate = np.asarray(rows, dtype=np.float64).mean(axis=0)

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
        return {self.data.label_column: [d.join(n for n, v in zip(self.labels, row) if v) for row in column_values(split, "labels")]}

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
