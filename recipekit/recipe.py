"""The recipe: a YAML file whose sections map onto the dataclasses below, validated before anything runs.

Sections: `model`, `data`, `preprocess` (ordered steps), `metrics` (names), and `training`, which is
`transformers.TrainingArguments` itself: its fields are checked against that class, never re-declared.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch
import yaml
from transformers import TrainingArguments

from . import metrics as metric_registry
from . import paths
from .adapters import peft_problems
from .errors import RecipeError
from .heads import HEADS, HeadState
from .heads.custom import HeadConfig
from .heads.distillation import DEFAULT_TEMPERATURE
from .heads.language_model import BLOCK_KEY
from .launch import launch_problems
from .modeling import (
    FAMILIES,
    INITS,
    TokenizerArgs,
    build_tokenizer_args,
    config_problems,
    kept_layers_problems,
    local_config,
    shape_problems,
    usable_positions,
)
from .outputs import FINISHED_MARKER
from .preprocess import STEPS
from .safety import parse_yaml, read_yaml_file, yaml_problem
from .schema import Problem, build_kwargs, did_you_mean, not_one_of, show

DATA_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".conll": "conll"}
DTYPES = ["auto", "float32", "bfloat16", "float16"]
DEFAULT_MAX_LENGTH = 256


@dataclass
class ModelArgs:
    name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id (org/name), local folder, or package:NAME/path inside an installed package"}
    )
    head: str = field(
        default="sequence_classification", metadata={"help": "task head; see the heads table", "choices": lambda: list(HEADS)}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub branch, tag or commit to load"})
    dtype: str = field(
        default="float32",
        metadata={"help": "weight dtype at load; mixed precision is training.bf16/fp16", "choices": DTYPES},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run model code shipped with a Hub repository (only for repos you trust)"}
    )
    hidden_dropout: float | None = field(
        default=None, metadata={"help": "dropout on the encoder's hidden states (BERT's hidden_dropout_prob, default 0.1); null keeps the model's"}
    )
    attention_dropout: float | None = field(
        default=None, metadata={"help": "dropout on attention weights (BERT's attention_probs_dropout_prob); null keeps the model's"}
    )
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "dropout before the task head (BERT's classifier_dropout); null keeps the model's"}
    )
    peft: dict | None = field(
        default=None,
        metadata={
            "help": "train LoRA adapters instead of every weight: peft.LoraConfig keys (r, lora_alpha, lora_dropout, "
            "target_modules, modules_to_save, ...); {} takes peft's defaults; the head's new layer always trains"
        },
    )

    head_options: dict = field(
        default_factory=dict, metadata={"help": "the head's own settings (threshold, class_weights, loss ...); see the heads table"}
    )
    head_config: dict = field(
        default_factory=dict,
        metadata={"help": "a custom pooled head on the encoder: pooling, hidden_sizes, activation, dropout, freeze_encoder"},
    )
    init: str = field(
        default="pretrained",
        metadata={"help": "pretrained: load name_or_path's weights; scratch: a new, randomly initialised model", "choices": INITS},
    )
    family: str | None = field(
        default=None, metadata={"help": f"with init: scratch, the config family to build ({', '.join(FAMILIES)}, ...)"}
    )
    config: dict = field(
        default_factory=dict,
        metadata={"help": "with init: scratch, config overrides: num_hidden_layers, hidden_size, num_attention_heads, intermediate_size, max_position_embeddings, vocab_size ...; "
                  "with init: pretrained, only num_hidden_layers (keep the first N layers)"},
    )
    teacher: str | None = field(
        default=None,
        metadata={"help": "a finished run (its output_dir) with the same head and labels: train on a mix of the gold labels and its predictions (distillation)"},
    )
    teacher_temperature: float = field(
        default=DEFAULT_TEMPERATURE, metadata={"help": "softens the teacher's and the student's distributions in the teacher's term (Hinton et al. 2015)"}
    )
    teacher_weight: float = field(
        default=0.5, metadata={"help": "share of the teacher's term in the loss, the gold labels' loss having the rest (0: the plain loss)"}
    )

    def head_problems(self) -> list[str]:
        """Check head_options against the head's Options dataclass and head_config against HeadConfig."""
        head = HEADS.get(self.head)
        if head is None:
            return []
        errors: list[str] = []
        options = build_kwargs(head.Options, self.head_options, "head_options", errors)
        if not errors:
            errors += [f"head_options.{p}" for p in head.Options(**options).problems()]
        if "freeze_layers" in self.head_config:
            errors.append("head_config.freeze_layers: freezing layers is regularization.freeze_layers, for every head; move it there")
        elif self.head_config:
            if not head.accepts_head_config:
                accepting = [name for name, h in HEADS.items() if h.accepts_head_config]
                errors.append(f"head_config: head {self.head!r} has no custom head; heads that take one: {', '.join(accepting)}")
            else:
                config_errors: list[str] = []
                config = build_kwargs(HeadConfig, self.head_config, "head_config", config_errors)
                if not config_errors:
                    config_errors += [f"head_config.{p}" for p in HeadConfig(**config).problems()]
                errors += config_errors
        return errors

    def options(self):
        return HEADS[self.head].Options(**self.head_options)

    def problems(self) -> list[str]:
        out = [
            f"{key}: {getattr(self, key)} must be a probability in [0, 1)"
            for key in ("hidden_dropout", "attention_dropout", "classifier_dropout")
            if getattr(self, key) is not None and not 0.0 <= getattr(self, key) < 1.0
        ]
        if self.peft is not None:
            out += peft_problems(self.peft)
        out += self.head_problems() + config_problems(self) + self.teacher_problems()
        if self.init == "scratch" and self.family and not self.name_or_path:
            return out  # built from a config family: nothing to load
        return out + self.path_problems()

    def teacher_problems(self) -> list[str]:
        """Cheap checks of the teacher (files only, so `--check` stays offline and fast); its head and labels are
        compared with the student's once the data is encoded (recipekit/teacher.py)."""
        out = []
        if self.teacher_temperature <= 0:
            out.append(f"teacher_temperature: {self.teacher_temperature} must be positive (1: the plain softmax; 2-5 is usual)")
        if not 0.0 <= self.teacher_weight <= 1.0:
            out.append(f"teacher_weight: {self.teacher_weight} must be in [0, 1] (0: gold labels only, 1: the teacher only)")
        if self.teacher is None:
            return out
        head = HEADS.get(self.head)
        if head is not None and head.distillation is None:
            accepting = [name for name, h in HEADS.items() if h.distillation is not None]
            return out + [f"teacher: head {self.head!r} cannot learn from a teacher's predictions; heads that can: {', '.join(accepting)}"]
        try:
            folder = Path(paths.resolve(self.teacher)).expanduser()
        except Problem as p:
            return out + [f"teacher: {p}"]
        if not folder.is_dir():
            return out + [f"teacher: {self.teacher!r} is not a folder; give the output_dir of a finished run"]
        if not (folder / "recipe.yaml").is_file() or not (folder / FINISHED_MARKER).is_file():
            return out + [f"teacher: {self.teacher!r} holds no finished run (no recipe.yaml or {FINISHED_MARKER}); train the teacher first"]
        state = HeadState.load(folder)
        if head is not None and state is not None and state.head != self.head:
            out.append(f"teacher: {self.teacher!r} is a {state.head!r} run; this recipe trains head {self.head!r}; the two must be the same head")
        return out

    def path_problems(self) -> list[str]:
        if not self.name_or_path:
            return ["name_or_path: required (a Hub id, a local folder, or package:NAME/path)"]
        try:
            local = paths.resolve(self.name_or_path)
        except Problem as p:
            return [f"name_or_path: {p}"]
        if paths.looks_local(self.name_or_path) and not Path(local).expanduser().is_dir():
            return [f"name_or_path: {self.name_or_path!r} is not a folder"]
        return []

    @property
    def path(self) -> str:
        return str(Path(paths.resolve(self.name_or_path)).expanduser()) if paths.looks_local(self.name_or_path) else self.name_or_path


@dataclass
class SourceArgs:
    """One training source of several (`data.sources`): a local file or a Hub split, with its columns renamed."""

    file: str | None = field(default=None, metadata={"help": "local file: csv, tsv, json, jsonl or parquet"})
    dataset: str | None = field(default=None, metadata={"help": "Hub dataset id"})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name"})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset branch, tag or commit"})
    split: str = field(default="train", metadata={"help": "Hub split to read"})
    columns: dict = field(
        default_factory=dict, metadata={"help": "source column -> recipe column, e.g. {sentence: text, polarity: label}"}
    )
    weight: float = field(default=1.0, metadata={"help": "relative sampling weight when data.mix is interleave"})
    name: str | None = field(default=None, metadata={"help": "name in the data report; default: the file name or dataset id"})
    label_map: dict | None = field(
        default=None,
        metadata={"help": "this source's label -> the recipe's label, e.g. {neg: negative, pos: positive}; every label of the source must be named"},
    )

    def problems(self) -> list[str]:
        out = []
        if bool(self.file) == bool(self.dataset):
            out.append("file / dataset: give exactly one")
        out += [f"file: {p}" for p in file_problems(self.file)]
        if self.weight <= 0:
            out.append(f"weight: {self.weight} must be positive")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.columns.items()):
            out.append(f"columns: {self.columns} must map source column names to recipe column names")
        if self.label_map is not None and (
            not self.label_map or not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for pair in self.label_map.items() for x in pair)
        ):
            out.append(f"label_map: {show(self.label_map)} must map each label of this source to a label name (text or number)")
        return out

    def labels(self) -> dict[str, str] | None:
        """label_map with keys and values as text, as labels are compared (`1` and `"1"` are one label)."""
        return None if self.label_map is None else {str(k): str(v) for k, v in self.label_map.items()}

    @property
    def label(self) -> str:
        return self.name or (Path(self.file).name if self.file else f"{self.dataset}:{self.split}")


@dataclass
class DataArgs:
    dataset: str | None = field(default=None, metadata={"help": "Hub dataset id; or give train_file for local files"})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name"})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset branch, tag or commit"})
    train_split_name: str = field(default="train", metadata={"help": "Hub split to train on"})
    validation_split_name: str | None = field(default=None, metadata={"help": "Hub split to validate on, if any"})
    test_split_name: str | None = field(default=None, metadata={"help": "Hub split to test on, if any"})
    train_file: str | None = field(default=None, metadata={"help": "local training file: csv, tsv, json, jsonl or parquet"})
    validation_file: str | None = field(default=None, metadata={"help": "local validation file, same formats"})
    test_file: str | None = field(default=None, metadata={"help": "local test file, same formats"})
    text_columns: list[str] = field(
        default_factory=lambda: ["text"], metadata={"help": "one text column, or two for sentence pairs"}
    )
    label_column: str = field(default="label", metadata={"help": "column holding the label (ints of any range, or strings)"})
    sources: list[SourceArgs] | None = field(
        default=None, metadata={"help": "several training sources instead of dataset/train_file, mixed by data.mix"}
    )
    mix: str = field(
        default="concatenate",
        metadata={"help": "concatenate sources, or interleave them sampling by weight", "choices": ["concatenate", "interleave"]},
    )
    validation_split: float = field(
        default=0.0, metadata={"help": "fraction of train held out (stratified, seeded) when no validation set is given"}
    )
    test_split: float = field(
        default=0.0, metadata={"help": "fraction of train held out (stratified, seeded) as a test set when none is given"}
    )
    max_chars: int = field(
        default=1_000_000,
        metadata={"help": "rows with a longer text are dropped before any step (a guard against corrupt rows; IMDb's longest review is 13k)"},
    )
    num_proc: int | None = field(
        default=None, metadata={"help": "processes for row-wise steps and tokenization; pays off above ~100k rows"}
    )
    max_length: int = field(default=DEFAULT_MAX_LENGTH, metadata={"help": "tokens per example after truncation (the pretraining heads: head_options.block_size)"})
    long_text: Literal["head", "head_tail", "chunks"] = field(
        default="head",
        metadata={"help": "a text over max_length keeps its first tokens (head), its first head_tokens and its last ones "
                          "(head_tail), or all of them as overlapping windows pooled per document (chunks)"},
    )
    head_tokens: int | None = field(
        default=None,
        metadata={"help": "head_tail: tokens kept from the start; default a quarter of max_length (Sun et al. 2019: 128 of 512 on IMDb)"},
    )
    chunk_overlap: int | None = field(
        default=None,
        metadata={"help": "chunks: tokens a window shares with the one before; default a quarter of max_length"},
    )
    chunk_pooling: Literal["mean", "max"] = field(
        default="mean",
        metadata={"help": "chunks: a document's logits are its windows' mean, or their maximum per output"},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "train on a seeded random subset of this size"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "validate on a seeded random subset of this size"})
    max_test_samples: int | None = field(default=None, metadata={"help": "test on a seeded random subset of this size"})

    def problems(self) -> list[str]:
        out = []
        if bool(self.dataset) + bool(self.train_file) + (self.sources is not None) != 1:
            out.append("dataset / train_file: give exactly one (a Hub dataset id, or a local training file)")
        if self.dataset:
            for key in ("validation_file", "test_file"):
                if getattr(self, key):
                    out.append(f"{key}: local files cannot be mixed with a Hub dataset; use validation_split_name/test_split_name")
        else:
            for key in ("dataset_config", "dataset_revision", "validation_split_name", "test_split_name"):
                if getattr(self, key) is not None:
                    out.append(f"{key}: only applies to a Hub dataset (data.dataset)")
            for key in ("train_file", "validation_file", "test_file"):
                out += [f"{key}: {p}" for p in file_problems(getattr(self, key))]
        if not 1 <= len(self.text_columns) <= 2 or len(set(self.text_columns)) != len(self.text_columns):
            out.append(f"text_columns: {self.text_columns} must name one column, or two different ones for pairs")
        if self.long_text != "head" and len(self.text_columns) != 1:
            out.append(f"long_text: {self.long_text} cuts one text; a pair is cut longest-first (leave long_text: head)")
        if self.chunk_overlap is not None and (self.long_text != "chunks" or not 0 <= self.chunk_overlap <= self.max_length // 2):
            out.append(f"chunk_overlap: {self.chunk_overlap} needs long_text: chunks and 0 <= chunk_overlap <= max_length / 2 ({self.max_length // 2})")
        if self.chunk_pooling != "mean" and self.long_text != "chunks":
            out.append(f"chunk_pooling: {self.chunk_pooling} needs long_text: chunks")
        if self.head_tokens is not None and (self.long_text != "head_tail" or not 0 < self.head_tokens < self.max_length):
            out.append(f"head_tokens: {self.head_tokens} needs long_text: head_tail and 0 < head_tokens < max_length ({self.max_length})")
        if self.sources is not None and not self.sources:
            out.append("sources: an empty list; give one source or more")
        for key in ("validation_split", "test_split"):
            if not 0.0 <= getattr(self, key) < 1.0:
                out.append(f"{key}: {getattr(self, key)} must be a fraction in [0, 1)")
        if self.validation_split + self.test_split >= 1.0:
            out.append(f"validation_split + test_split: {self.validation_split + self.test_split} leaves no training rows")
        if self.validation_split and (self.validation_file or self.validation_split_name):
            out.append("validation_split: a validation set is already given; set one or the other")
        if self.test_split and (self.test_file or self.test_split_name):
            out.append("test_split: a test set is already given; set one or the other")
        if self.max_chars <= 0:
            out.append(f"max_chars: {self.max_chars} must be a positive number of characters")
        if self.num_proc is not None and self.num_proc < 1:
            out.append(f"num_proc: {self.num_proc} must be 1 or more (or null)")
        if self.max_length <= 0:
            out.append(f"max_length: {self.max_length} must be a positive number of tokens")
        for key in ("max_train_samples", "max_eval_samples", "max_test_samples"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                out.append(f"{key}: {getattr(self, key)} must be positive (or null for all rows)")
        return out

    def has_validation(self) -> bool:
        return bool(self.validation_file or self.validation_split_name or self.validation_split)


@dataclass
class RegularizationArgs:
    """Overfitting controls that TrainingArguments lacks; weight_decay, label_smoothing_factor and
    max_grad_norm are `training:` keys already."""

    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "stop after this many evaluations without improving training.metric_for_best_model; null: never"},
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "smallest change of the metric that counts as an improvement (absolute)"}
    )
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={"help": "each layer below the top learns at this times the rate of the one above (0.8-0.95 is usual; 1.0: off)"},
    )
    freeze_embeddings: bool = field(default=False, metadata={"help": "train no embedding weights"})
    freeze_layers: int = field(default=0, metadata={"help": "train none of the first k encoder layers (the embeddings stay trainable unless frozen too)"})

    def problems(self) -> list[str]:
        out = []
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            out.append(f"early_stopping_patience: {self.early_stopping_patience} must be 1 or more (or null)")
        if self.early_stopping_threshold < 0:
            out.append(f"early_stopping_threshold: {self.early_stopping_threshold} must be 0 or more")
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            out.append(f"layerwise_lr_decay: {self.layerwise_lr_decay} must be in (0, 1]")
        if self.freeze_layers < 0:
            out.append(f"freeze_layers: {self.freeze_layers} must be 0 or more")
        return out


@dataclass
class BatchingArgs:
    """How a training batch is computed, beside TrainingArguments' batch size and accumulation."""

    length_split_cost: int | Literal["auto"] | None = field(
        default="auto",
        metadata={"help": "pooled heads: run each training batch as length-sorted chunks where a chunk saves more padded "
                  "tokens than this (same gradient); auto: 128 on CPU, off on GPU; null: never"},
    )

    def problems(self) -> list[str]:
        if isinstance(self.length_split_cost, int) and self.length_split_cost <= 0:
            return [f"length_split_cost: {self.length_split_cost} must be a positive number of padded tokens, auto, or null (never split)"]
        return []


@dataclass
class SanityArgs:
    """Quick checks before a long run; each replaces training and writes only under output_dir/sanity."""

    overfit_batch: bool = field(
        default=False, metadata={"help": "train on one small batch until its loss is near zero: proves the wiring"}
    )
    overfit_batch_size: int = field(default=8, metadata={"help": "examples in that batch"})
    overfit_steps: int = field(default=200, metadata={"help": "most optimizer steps to try"})
    overfit_loss: float = field(default=0.05, metadata={"help": "the loss that counts as memorised"})
    lr_range_test: bool = field(
        default=False,
        metadata={"help": "raise the learning rate exponentially each step, record the loss, plot it and suggest a rate (a heuristic)"},
    )
    lr_range_min: float = field(default=1.0e-7, metadata={"help": "learning rate at the first step"})
    lr_range_max: float = field(default=1.0, metadata={"help": "learning rate at the last step"})
    lr_range_steps: int = field(default=200, metadata={"help": "steps from lr_range_min to lr_range_max"})

    def problems(self) -> list[str]:
        out = []
        if self.overfit_batch and self.lr_range_test:
            out.append("overfit_batch / lr_range_test: choose one")
        for key in ("overfit_batch_size", "overfit_steps", "lr_range_steps"):
            if getattr(self, key) < 1:
                out.append(f"{key}: {getattr(self, key)} must be 1 or more")
        if self.overfit_loss <= 0:
            out.append(f"overfit_loss: {self.overfit_loss} must be positive")
        if not 0 < self.lr_range_min < self.lr_range_max:
            out.append(f"lr_range_min / lr_range_max: need 0 < {self.lr_range_min} < {self.lr_range_max}")
        return out

    @property
    def active(self) -> bool:
        return self.overfit_batch or self.lr_range_test


SWEEP_METHODS = ["grid", "list", "optuna"]


@dataclass
class SpaceArgs:
    """One key's search space under an optuna sweep: a range (low, high) or a list of choices."""

    low: float | None = field(default=None, metadata={"help": "smallest value"})
    high: float | None = field(default=None, metadata={"help": "largest value"})
    log: bool | None = field(default=None, metadata={"help": "sample uniformly in log space; default: true for learning rates"})
    type: str = field(default="float", metadata={"help": "float or int", "choices": ["float", "int"]})
    choices: list | None = field(default=None, metadata={"help": "sample one of these instead of a range (e.g. model names)"})


@dataclass
class SweepArgs:
    """Several runs of one recipe that differ in a few keys, ranked by one validation metric (`python run.py sweep`)."""

    method: str = field(
        default="grid",
        metadata={"help": "grid: every combination of `values`; list: the `trials` as written; optuna: `n_trials` drawn from `space`",
                  "choices": SWEEP_METHODS},
    )
    values: dict = field(
        default_factory=dict, metadata={"help": "grid: section.key -> list of values, e.g. {training.learning_rate: [1.0e-5, 1.0e-4]}"}
    )
    trials: list[dict] | None = field(default=None, metadata={"help": "list: one mapping of section.key -> value per trial"})
    space: dict = field(
        default_factory=dict, metadata={"help": "optuna: section.key -> {low, high, log, type} or {choices: [...]}"}
    )
    n_trials: int = field(default=10, metadata={"help": "optuna: trials to run (a budget, counting finished and pruned ones)"})
    seed: int = field(default=0, metadata={"help": "optuna: sampler seed; the same seed draws the same trials"})
    pruning: bool = field(default=True, metadata={"help": "optuna: stop a trial whose evaluations trail the median of earlier trials"})
    metric: str | None = field(
        default=None, metadata={"help": "validation metric that ranks trials; default: training.metric_for_best_model, else the first metric"}
    )
    direction: str | None = field(
        default=None,
        metadata={"help": "maximize or minimize the metric; default: minimize for loss and ece, else maximize", "choices": ["maximize", "minimize"]},
    )
    output_dir: str | None = field(default=None, metadata={"help": "folder of the sweep (trial-NNN sub-folders); default: training.output_dir"})


# What a sweep may vary: every key of these sections.
SWEEPABLE = {"model": ModelArgs, "data": DataArgs, "training": TrainingArguments, "regularization": RegularizationArgs}
LOWER_IS_BETTER = ("loss", "ece")


def sweep_key_problem(key) -> str | None:
    section, _, name = str(key).partition(".")
    if section not in SWEEPABLE:
        return f"{show(key)}: {not_one_of(section, list(SWEEPABLE), 'a section a sweep can vary')}"
    names = [f.name for f in dataclasses.fields(SWEEPABLE[section]) if f.init]
    if name not in names:
        return f"unknown key{did_you_mean(name, names) or '.'}"
    return None


def build_sweep(raw, metric_names: list[str], training_keys: dict, errors: list[str]) -> SweepArgs | None:
    """The sweep's own shape: methods, key paths, value lists and ranges; each trial's values are checked by building it."""
    if raw is None:
        return None
    sweep = SweepArgs(**build_kwargs(SweepArgs, raw, "sweep", errors))
    given = {k for k in (raw if isinstance(raw, dict) else {})}
    wanted = {"grid": "values", "list": "trials", "optuna": "space"}[sweep.method] if sweep.method in SWEEP_METHODS else None
    for other in {"values", "trials", "space"} - {wanted}:
        if other in given:
            errors.append(f"sweep.{other}: not used by method {sweep.method!r}; it takes sweep.{wanted}")
    if wanted and wanted not in given:
        errors.append(f"sweep.{wanted}: required by method {sweep.method!r}")
    for key, values in sweep.values.items():
        problem = sweep_key_problem(key)
        if problem:
            errors.append(f"sweep.values.{key}: {problem}")
        elif not isinstance(values, list) or not values:
            errors.append(f"sweep.values.{key}: expected a non-empty list of values, got {show(values)}")
    for i, trial in enumerate(sweep.trials or []):
        if not isinstance(trial, dict) or not trial:
            errors.append(f"sweep.trials[{i}]: expected a mapping of section.key -> value, got {show(trial)}")
            continue
        errors += [f"sweep.trials[{i}].{k}: {p}" for k in trial if (p := sweep_key_problem(k))]
    if sweep.trials is not None and not sweep.trials:
        errors.append("sweep.trials: an empty list; give one trial or more")
    spaces = {}
    for key, spec in sweep.space.items():
        path = f"sweep.space.{key}"
        problem = sweep_key_problem(key)
        if problem:
            errors.append(f"{path}: {problem}")
            continue
        space = SpaceArgs(**build_kwargs(SpaceArgs, spec, path, errors))
        if space.choices is not None:
            if not space.choices:
                errors.append(f"{path}.choices: an empty list; give one value or more")
            if space.low is not None or space.high is not None:
                errors.append(f"{path}: give choices, or low and high, not both")
        elif space.low is None or space.high is None:
            errors.append(f"{path}: give low and high (or choices)")
        elif space.low > space.high:
            errors.append(f"{path}: low {space.low} is above high {space.high}")
        elif (space.log if space.log is not None else key.endswith("learning_rate")) and space.low <= 0:
            errors.append(f"{path}: low {space.low} must be positive on a log scale")
        if space.log is None:
            space.log = key.endswith("learning_rate") and space.choices is None
        spaces[key] = space
    sweep.space = spaces
    if sweep.method == "optuna" and "space" in given and not sweep.space and not any(e.startswith("sweep.space") for e in errors):
        errors.append("sweep.space: an empty mapping; give one key or more")
    if sweep.n_trials < 1:
        errors.append(f"sweep.n_trials: {sweep.n_trials} must be 1 or more")
    if sweep.metric is None:
        best = training_keys.get("metric_for_best_model")
        sweep.metric = best.removeprefix("eval_") if best else (metric_names[0] if metric_names else "loss")
    elif sweep.metric.removeprefix("eval_") not in ["loss"] + metric_names:
        errors.append(f"sweep.metric: {not_one_of(sweep.metric, ['loss'] + metric_names, 'a computed metric')}")
    sweep.metric = sweep.metric.removeprefix("eval_")
    if sweep.direction is None:
        sweep.direction = "minimize" if sweep.metric in LOWER_IS_BETTER else "maximize"
    return sweep


def file_problems(spec: str | None) -> list[str]:
    if spec is None:
        return []
    try:
        path = Path(paths.resolve(spec)).expanduser()
    except Problem as p:
        return [str(p)]
    if not path.exists():
        return [f"{spec!r} does not exist"]
    if path.is_dir():
        return [f"{spec!r} is a directory, not a file"]
    if not path.is_file():
        return [f"{spec!r} is not a regular file ({file_kind(path)}); give a data file"]
    if path.suffix.lower() not in DATA_FORMATS:
        return [f"{spec!r}: {not_one_of(path.suffix or '(no extension)', list(DATA_FORMATS), 'a supported format')}"]
    return []


def file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file or folder"


@dataclass
class Recipe:
    model: ModelArgs
    data: DataArgs
    preprocess: list
    metrics: list[str]
    training: TrainingArguments
    training_keys: dict  # what the recipe itself set under `training:`, coerced; recipe.yaml writes these
    regularization: RegularizationArgs = field(default_factory=RegularizationArgs)
    sanity: SanityArgs = field(default_factory=SanityArgs)
    batching: BatchingArgs = field(default_factory=BatchingArgs)
    sweep: SweepArgs | None = None
    sweep_raw: dict | None = None  # the sweep section as written, for --check and reproduction
    source: str | None = None
    # Kept out of TrainingArguments, whose pickle (training_args.bin) lands in every checkpoint.
    hub_token: str | None = field(default=None, repr=False)
    tokenizer: TokenizerArgs = field(default_factory=TokenizerArgs)

    def to_dict(self) -> dict:
        steps = [{s.name: dataclasses.asdict(s)} for s in self.preprocess]
        training = {k: v for k, v in self.training_keys.items() if k != "hub_token"}
        tokenizer = {"tokenizer": dataclasses.asdict(self.tokenizer)} if self.tokenizer != TokenizerArgs() else {}
        return {
            "model": dataclasses.asdict(self.model),
            **tokenizer,
            "data": dataclasses.asdict(self.data),
            "preprocess": steps,
            "metrics": list(self.metrics),
            "training": training,
            "regularization": dataclasses.asdict(self.regularization),
            "batching": dataclasses.asdict(self.batching),
            "sanity": dataclasses.asdict(self.sanity),
            **({"sweep": self.sweep_raw} if self.sweep_raw is not None else {}),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


SECTIONS = {"model", "tokenizer", "data", "preprocess", "metrics", "training", "regularization", "batching", "sanity", "sweep"}


def read_yaml(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        raise RecipeError(f"{path}: recipe file does not exist")
    if p.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file")
    if not p.is_file():
        raise RecipeError(f"{path}: is not a regular file ({file_kind(p)}); give a recipe file")
    raw = read_yaml_file(p, "recipe")
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty; expected sections {', '.join(sorted(SECTIONS))}")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: the top level must be a mapping of sections ({', '.join(sorted(SECTIONS))}), got a {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict, overrides) -> None:
    """Set `section.key=value` pairs into `raw`; values are parsed as YAML scalars or lists, never evaluated."""
    errors = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            errors.append(f"override {show(item)}: expected section.key=value, e.g. training.learning_rate=3.0e-5")
            continue
        try:
            value = parse_yaml(text) if text.strip() else None
        except yaml.YAMLError as e:
            errors.append(f"override {show(item)}: the value is not valid YAML ({yaml_problem(e)})")
            continue
        node, parts = raw, key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                errors.append(f"override {item!r}: {'.'.join(parts[:depth + 1])} is not a mapping")
                break
            node = child
        else:
            node[parts[-1]] = value
    if errors:
        raise RecipeError(errors)


def build_recipe(raw: dict, source: str | None = None) -> Recipe:
    """Validate every section of `raw` and report all problems at once."""
    errors: list[str] = []
    for key in raw:
        if key not in SECTIONS:
            errors.append(f"{key}: {not_one_of(key, sorted(SECTIONS), 'a recipe section')}")

    model = ModelArgs(**build_kwargs(ModelArgs, raw.get("model"), "model", errors))
    errors += [f"model.{p}" for p in model.problems()]
    head = HEADS.get(model.head, HEADS["sequence_classification"])
    tokenizer = build_tokenizer_args(raw.get("tokenizer"), errors, head.tokenizer_algorithm)
    errors += tokenizer_problems(model, tokenizer)
    raw_data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if "length_split_cost" in raw_data:
        errors.append("data.length_split_cost: a training-step setting, now batching.length_split_cost; move it there")
        raw_data = {k: v for k, v in raw_data.items() if k != "length_split_cost"}
    data = DataArgs(**build_kwargs(DataArgs, raw_data if raw.get("data") is not None else None, "data", errors))
    data.sources = build_sources(data.sources, errors)
    errors += [f"data.{p}" for p in data.problems()]
    if head.needs_labels and data.label_column in data.text_columns:
        errors.append(
            f"data.text_columns: {data.text_columns} includes data.label_column {data.label_column!r}; "
            "the model would read the answer; name the text column(s) and the label column apart"
        )
    steps = build_steps(raw.get("preprocess"), errors)
    names = build_metrics(raw.get("metrics"), errors, head)

    arguments = head.training_args_class
    training_keys = build_kwargs(arguments, raw.get("training"), "training", errors, list_valid_keys=False)
    for key, value in head.training_defaults.items():
        training_keys.setdefault(key, value)
    errors += [f"training.{p}" for p in training_problems(training_keys, names, data)]
    regularization = RegularizationArgs(**build_kwargs(RegularizationArgs, raw.get("regularization"), "regularization", errors))
    errors += [f"regularization.{p}" for p in regularization.problems()]
    sanity = SanityArgs(**build_kwargs(SanityArgs, raw.get("sanity"), "sanity", errors))
    errors += [f"sanity.{p}" for p in sanity.problems()]
    batching = BatchingArgs(**build_kwargs(BatchingArgs, raw.get("batching"), "batching", errors))
    errors += [f"batching.{p}" for p in batching.problems()]
    if isinstance(batching.length_split_cost, int) and not head.splits_batches:
        errors.append(f"batching.length_split_cost: head {model.head!r} trains whole batches (its loss is not a sum over "
                      "examples); only the pooled heads split them; leave it out")
    sweep = build_sweep(raw.get("sweep"), names, training_keys, errors)
    passed = with_best_model_default({k: v for k, v in training_keys.items() if k != "hub_token"}, data)
    errors += early_stopping_problems(regularization, passed)
    errors += launch_problems(with_device_defaults(dict(passed)))
    if not errors:
        # A saved recipe.yaml spells out every default: only a max_length other than the default counts as chosen.
        chosen = {k for k in raw_data if k != "max_length" or data.max_length != DEFAULT_MAX_LENGTH}
        parts = SimpleNamespace(model=model, data=data, training_keys=training_keys, steps=steps, data_keys=chosen)
        errors += head.recipe_problems(model.options(), parts)
        if data.long_text not in head.long_text:
            errors.append(f"data.long_text: {not_one_of(data.long_text, list(head.long_text), f'a strategy head {model.head!r} applies')}")
        if model.teacher and same_folder(model.teacher, training_keys.get("output_dir")):
            errors.append(f"model.teacher: {model.teacher!r} is this run's own training.output_dir; the student needs a folder of its own")
        if model.teacher and data.long_text == "chunks":
            # A training row is then a window, and the teacher's prediction path pools windows into documents.
            errors.append("model.teacher: a teacher scores whole documents, but data.long_text: chunks trains on windows; "
                          "use long_text: head or head_tail with a teacher")
    if not errors:
        errors += fit_model(model, data)
    if errors:
        raise RecipeError(errors)
    try:
        training = arguments(**with_device_defaults(passed))
    except (ValueError, TypeError, ImportError) as e:
        raise RecipeError(f"training: {str(e).strip().splitlines()[0]}") from None
    return Recipe(
        model, data, steps, names, training, training_keys, regularization, sanity, batching, sweep, raw.get("sweep"),
        source, training_keys.get("hub_token"), tokenizer,
    )


def same_folder(a: str, b: str | None) -> bool:
    try:
        return b is not None and Path(paths.resolve(a)).expanduser().resolve() == Path(b).expanduser().resolve()
    except Problem:
        return False


def fit_model(model: ModelArgs, data: DataArgs, config=None) -> list[str]:
    """Lengths above the model's position embeddings fail as an index error at the first long batch: a length
    the recipe chose is refused, the default max_length is lowered to the model's positions (a tiny model may
    have 128). Here from a local config only, so `--check` stays offline; run.py checks a Hub model's config."""
    problems = []
    if config is None:
        config, problems = local_config(model)
    if config is None:
        return problems
    problems = kept_layers_problems(model, config)
    block = getattr(model.options(), "block_size", None)
    if block:
        return problems + shape_problems(config, block, BLOCK_KEY)
    positions = usable_positions(config)
    if data.max_length == DEFAULT_MAX_LENGTH and positions is not None and positions < data.max_length:
        data.max_length = positions
    return problems + shape_problems(config, data.max_length, "data.max_length")


def tokenizer_problems(model: ModelArgs, tokenizer: TokenizerArgs) -> list[str]:
    if model.init == "scratch" and model.family and not tokenizer.train and not tokenizer.name_or_path:
        return [f"tokenizer: a scratch {model.family} model needs a tokenizer: tokenizer.train (learn one from the data) or tokenizer.name_or_path"]
    if tokenizer.train and model.init == "pretrained":
        return ["tokenizer.train: a pretrained model needs the tokenizer it was trained with; train a tokenizer only for model.init: scratch"]
    if tokenizer.name_or_path:
        try:
            if paths.looks_local(tokenizer.name_or_path) and not Path(paths.resolve(tokenizer.name_or_path)).expanduser().is_dir():
                return [f"tokenizer.name_or_path: {tokenizer.name_or_path!r} is not a folder"]
        except Problem as p:
            return [f"tokenizer.name_or_path: {p}"]
    return []


def load_recipe(path: str, overrides=()) -> Recipe:
    raw = read_yaml(path)
    apply_overrides(raw, overrides)
    return build_recipe(raw, source=path)


def build_sources(raw, errors: list[str]) -> list[SourceArgs] | None:
    if raw is None:
        return None
    sources = []
    for i, item in enumerate(raw):
        source = SourceArgs(**build_kwargs(SourceArgs, item, f"data.sources[{i}]", errors))
        errors += [f"data.sources[{i}].{p}" for p in source.problems()]
        sources.append(source)
    return sources


def build_steps(raw, errors: list[str]) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors.append(f"preprocess: expected a list of steps, got {show(raw)}")
        return []
    steps = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
        else:
            errors.append(f"preprocess[{i}]: expected a step name or {{name: {{options}}}}, got {show(item)}")
            continue
        if name not in STEPS:
            errors.append(f"preprocess[{i}]: {not_one_of(name, list(STEPS), 'a preprocessing step')}")
            continue
        path = f"preprocess[{i}].{name}"
        step = STEPS[name](**build_kwargs(STEPS[name], options, path, errors))
        errors += [f"{path}.{p}" for p in step.problems()]
        steps.append(step)
    return steps


def build_metrics(raw, errors: list[str], head) -> list[str]:
    """Classification heads take the metrics.py registry (and user functions); the others their own fixed set."""
    if raw is None:
        return list(metric_registry.DEFAULT_CLASSIFICATION if head.metric_names is None else head.default_metrics)
    if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw) or not raw:
        errors.append(f"metrics: expected a non-empty list of metric names, got {show(raw)}")
        return []
    if head.metric_names is not None:
        for name in raw:
            if name not in head.metric_names:
                errors.append(f"metrics: {not_one_of(name, head.metric_names, f'a metric of head {head.name}')}")
        return raw
    for name in raw:
        try:
            metric_registry.resolve(name)
        except Problem as p:
            errors.append(f"metrics: {p}")
    return raw


# Ranges of `training:` numbers that TrainingArguments takes and Trainer or torch then fails on (or silently
# misuses): key -> (low, high, low included, what the key means). Seeds: numpy and torch take 0 .. 2**32 - 1.
TRAINING_RANGES = {
    "seed": (0, 2**32 - 1, True, "a seed"),
    "data_seed": (0, 2**32 - 1, True, "a seed"),
    "num_train_epochs": (0, 1e6, False, "a number of epochs"),
    "max_steps": (-1, 2**31 - 1, True, "a number of steps (-1: use num_train_epochs)"),
    "warmup_steps": (0, 2**31 - 1, True, "warmup steps, or a fraction of training below 1"),
    "weight_decay": (0, 1e3, True, "a decay coefficient"),
    "adam_beta1": (0, 1, True, "a decay rate in [0, 1)"),
    "adam_beta2": (0, 1, True, "a decay rate in [0, 1)"),
    "adam_epsilon": (0, 1, False, "a small positive number"),
    "max_grad_norm": (0, 1e9, True, "a gradient norm (0: no clipping)"),
    "label_smoothing_factor": (0, 1, True, "a fraction in [0, 1)"),
    "logging_steps": (0, 2**31 - 1, False, "a number of steps, or a fraction of training below 1"),
    "save_steps": (0, 2**31 - 1, False, "a number of steps, or a fraction of training below 1"),
    "eval_steps": (0, 2**31 - 1, False, "a number of steps, or a fraction of training below 1"),
    "eval_delay": (0, 2**31 - 1, True, "a number of steps or epochs"),
    "save_total_limit": (1, 2**31 - 1, True, "a number of checkpoints to keep"),
    "dataloader_num_workers": (0, 1024, True, "a number of worker processes"),
    "learning_rate": (0, 1e3, False, "a learning rate (typical fine-tuning: 1.0e-5 to 1.0e-4)"),
}
# Upper bounds that are open: a decay rate or a smoothing factor of exactly 1 learns nothing.
OPEN_ABOVE = ("adam_beta1", "adam_beta2", "label_smoothing_factor")


def range_problems(kw: dict) -> list[str]:
    out = []
    for key, (low, high, low_included, what) in TRAINING_RANGES.items():
        value = kw.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        above_low = value >= low if low_included else value > low
        below_high = value < high if key in OPEN_ABOVE else value <= high
        if not (above_low and below_high):
            left, right = "[" if low_included else "(", ")" if key in OPEN_ABOVE else "]"
            out.append(f"{key}: {show(value)} is out of range for {what}; allowed: {left}{low:g}, {high:g}{right}")
    return out


def training_problems(kw: dict, metric_names: list[str], data: DataArgs) -> list[str]:
    """Impossible values that TrainingArguments itself accepts silently."""
    out = []
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if key in kw and kw[key] <= 0:
            out.append(f"{key}: {kw[key]} must be a positive integer")
    if "learning_rate" in kw and kw["learning_rate"] <= 0:
        out.append(f"learning_rate: {kw['learning_rate']} must be positive (typical fine-tuning: 1.0e-5 to 1.0e-4)")
    if kw.get("max_steps", -1) <= 0 and "num_train_epochs" in kw and kw["num_train_epochs"] <= 0:
        out.append(f"num_train_epochs: {kw['num_train_epochs']} must be positive (or set max_steps)")
    said = {p.split(":")[0] for p in out}
    out += [p for p in range_problems(kw) if p.split(":")[0] not in said]
    best = kw.get("metric_for_best_model")
    if best is not None:
        valid = ["loss"] + metric_names
        if best.removeprefix("eval_") not in valid:
            out.append(f"metric_for_best_model: {not_one_of(best, valid, 'a computed metric')}")
    if kw.get("eval_strategy", "no") != "no" and not data.has_validation():
        out.append(
            f"eval_strategy: {kw['eval_strategy']!r} needs a validation set "
            "(data.validation_file, data.validation_split_name or data.validation_split)"
        )
    return out + tracker_problems(kw.get("report_to"))


# The pip package behind each of Trainer's trackers, where its name differs.
TRACKER_PACKAGES = {"comet_ml": "comet-ml", "azure_ml": "azureml-core", "dvclive": "dvclive", "neptune": "neptune"}


def tracker_problems(report_to) -> list[str]:
    """A tracker Trainer does not know, or one that is not installed, fails only when training starts: refused here."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    out, installed = [], None
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            out.append(f"report_to: {not_one_of(name, ['none', 'all', *INTEGRATION_TO_CALLBACK], 'a tracker Trainer knows')}")
            continue
        installed = get_available_reporting_integrations() if installed is None else installed
        if name not in installed:
            out.append(
                f"report_to: {name!r} is not installed; pip install {TRACKER_PACKAGES.get(name, name)}, or use one that is: "
                f"{', '.join(['none', *installed])}"
            )
    return out


def with_best_model_default(kw: dict, data: DataArgs) -> dict:
    """With a validation set evaluated during training, restore the best checkpoint at the end unless the recipe
    says otherwise: checkpoints are then saved at each evaluation (Trainer requires the two to line up)."""
    strategy = kw.get("eval_strategy", "no")
    if strategy == "no" or not data.has_validation() or "load_best_model_at_end" in kw:
        return kw
    if kw.setdefault("save_strategy", strategy) != strategy:
        return kw
    if strategy == "steps":
        eval_steps = kw.get("eval_steps") or kw.get("logging_steps", 500)
        if kw.setdefault("save_steps", eval_steps) % eval_steps:
            return kw
    kw["load_best_model_at_end"] = True
    return kw


def early_stopping_problems(reg: RegularizationArgs, kw: dict) -> list[str]:
    if reg.early_stopping_patience is None:
        return []
    if kw.get("eval_strategy", "no") == "no":
        return ["regularization.early_stopping_patience: needs evaluations during training (training.eval_strategy: steps or epoch)"]
    if not kw.get("load_best_model_at_end"):
        return [
            (
                "regularization.early_stopping_patience: needs training.load_best_model_at_end (set it true, with "
                "save_strategy equal to eval_strategy), so the run ends on its best checkpoint"
            )
        ]
    return []


def accelerator_available() -> bool:
    return torch.cuda.is_available() or torch.backends.mps.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def with_device_defaults(kw: dict) -> dict:
    """On a machine without an accelerator, train on the CPU, and across CPU processes with gloo."""
    if "use_cpu" not in kw and not accelerator_available():
        kw["use_cpu"] = True
    if kw.get("use_cpu") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kw.setdefault("ddp_backend", "gloo")
    # The launcher's mixed precision (an accelerate config's mixed_precision) when the recipe names none.
    # TrainingArguments honours it for plain and DDP runs, but a DeepSpeed config built from it says
    # bf16.enabled while bf16 stays false, and Trainer refuses to start on the mismatch.
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched in ("bf16", "fp16") and "bf16" not in kw and "fp16" not in kw:
        kw[launched] = True
    return kw
