"""The `data:` section: where the rows come from, which columns hold text and label, how splits are made."""

from __future__ import annotations

import codecs
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..core import paths
from ..core.schema import Problem, not_one_of, show
from ..data.files import DATA_FORMATS

DEFAULT_MAX_LENGTH = 256

# What users write for a `data:` key -> the key (see recipe/training.py's TRAINING_SYNONYMS).
DATA_SYNONYMS = {
    **dict.fromkeys(["text_column", "text", "text_field", "input_column", "inputs", "sentence_column", "columns"], "text_columns"),
    **dict.fromkeys(["label", "labels", "target", "target_column", "label_field", "labels_column", "y"], "label_column"),
    **dict.fromkeys(["max_seq_length", "max_len", "seq_len", "max_tokens", "maxlen", "truncation", "max_source_length"], "max_length"),
    **dict.fromkeys(["train", "train_path", "training_file", "train_data", "file", "path", "data_file"], "train_file"),
    **dict.fromkeys(["validation", "valid_file", "val_file", "eval_file", "dev_file", "validation_path"], "validation_file"),
    **dict.fromkeys(["test", "test_path", "testing_file"], "test_file"),
    **dict.fromkeys(["dataset_name", "hub_dataset", "name"], "dataset"),
    **dict.fromkeys(["val_split", "eval_split", "valid_split", "dev_split"], "validation_split"),
    **dict.fromkeys(["max_samples", "train_samples", "limit", "max_rows"], "max_train_samples"),
}


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
    encoding: str | None = field(
        default=None,
        metadata={"help": "text encoding of local csv, tsv, json, jsonl and conll files (cp1252, latin-1, utf-16 ...); null: the byte-order mark's, else utf-8"},
    )
    delimiter: str | None = field(
        default=None,
        metadata={"help": "csv field separator (',', ';', a tab, a vertical bar); null: a tab for .tsv, else the one the header uses (printed when not a comma)"},
    )
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
    streaming: bool = field(
        default=False,
        metadata={"help": "read train_file (a path or a glob over shards: txt, csv, tsv, json, jsonl, parquet) row by row as training "
                          "goes, never whole; needs training.max_steps"},
    )
    label_names: list[str] | None = field(
        default=None,
        metadata={"help": "with data.streaming, the labels of a classification head in order, e.g. [negative, positive]: a stream is "
                          "not read before training, so its label set cannot be learned from it"},
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
            for key in ("validation_file", "test_file") if self.streaming else ("train_file", "validation_file", "test_file"):
                out += [f"{key}: {p}" for p in file_problems(getattr(self, key))]  # a stream's glob is read at load
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
        out += encoding_problems(self.encoding, self.delimiter)
        if self.max_chars <= 0:
            out.append(f"max_chars: {self.max_chars} must be a positive number of characters")
        if self.num_proc is not None and self.num_proc < 1:
            out.append(f"num_proc: {self.num_proc} must be 1 or more (or null)")
        if self.max_length <= 0:
            out.append(f"max_length: {self.max_length} must be a positive number of tokens")
        if self.label_names is not None:
            names = [str(n) for n in self.label_names]
            if not self.streaming:
                out.append("label_names: read only with data.streaming (otherwise the labels are those of the training split); leave it out")
            elif len(set(names)) < 2 or len(set(names)) != len(names) or any(not n.strip() for n in names):
                out.append(f"label_names: {show(self.label_names)} must name two or more distinct, non-empty labels")
        for key in ("max_train_samples", "max_eval_samples", "max_test_samples"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                out.append(f"{key}: {getattr(self, key)} must be positive (or null for all rows)")
        return out

    def streaming_problems(self, head, streaming_heads: list[str], steps: list, training: dict) -> list[str]:
        """What a stream cannot do: it is read once, row by row, as training goes, so nothing sees the whole corpus first."""
        if not self.streaming:
            return []
        out = []
        if not head.streams:
            out.append(f"data.streaming: head {head.name!r} learns from its whole training split before training; "
                       f"heads that stream: {', '.join(streaming_heads)}")
        if head.streams and head.given_labels and not self.label_names:
            out.append(f"data.label_names: head {head.name!r} on a streamed corpus needs its labels given, since the stream "
                       "is not read before training; set data.label_names, e.g. [negative, positive]")
        if self.label_names is not None and head.streams and not head.given_labels:
            out.append(f"data.label_names: head {head.name!r} has no label set to give (its labels are "
                       f"{'targets' if head.needs_labels else 'the text itself'}); leave it out")
        if training.get("max_steps", -1) <= 0:
            out.append("training.max_steps: a streamed corpus has no length to count epochs by; set max_steps (data.streaming: true)")
        if not self.train_file:
            out.append("data.streaming: reads local shards (data.train_file, a path or a glob); not data.dataset or data.sources")
        for key, what in (("validation_split", "a stratified carve needs every row"), ("test_split", "a stratified carve needs every row"),
                          ("max_train_samples", "a seeded random subset needs every row")):
            if getattr(self, key):
                out.append(f"data.{key}: {what}, which a stream never holds; give data.{key.replace('_split', '_file')} instead"
                           if key.endswith("_split") else f"data.{key}: {what}, which a stream never holds; leave it out")
        if self.long_text == "chunks":
            out.append("data.long_text: chunks pools windows per document over the whole split; use head or head_tail with data.streaming")
        for i, step in enumerate(steps):
            if step.applies_to("train") and not step.streams():
                out.append(f"preprocess[{i}] {step.name}: needs the whole training split at once, which a stream never holds; "
                           "run it on a copy of the corpus first, or leave it out (data.streaming: true)")
        return out

    def has_validation(self) -> bool:
        return bool(self.validation_file or self.validation_split_name or self.validation_split)


def encoding_problems(encoding: str | None, delimiter: str | None, keys: tuple[str, str] = ("encoding", "delimiter")) -> list[str]:
    out = []
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            out.append(f"{keys[0]}: {show(encoding)} is not a text encoding Python knows; e.g. utf-8, cp1252, latin-1, utf-16")
    if delimiter is not None and (len(delimiter) != 1 or delimiter in "\"\r\n"):
        out.append(f"{keys[1]}: {show(delimiter)} must be one character other than a quote or a line break, e.g. ',', ';', '|' or a tab")
    return out


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
