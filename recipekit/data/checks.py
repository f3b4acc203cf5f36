"""Row checks before any step: texts and labels read as text, rows no step could use counted and dropped,
label hygiene notes."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import (
    Dataset,
    DatasetDict,
    IterableDataset,
    Value,
)

from ..core import paths
from .files import csv_row_lines
from .steps import STREAM_BATCH, select


def empty_label_notes(splits: DatasetDict, args) -> list[str]:
    """Rows whose label cell is empty are dropped by the checks ("missing label"); say where the first one is."""
    notes = []
    for name, ds in splits.items():
        if args.label_column not in ds.column_names or isinstance(ds, IterableDataset):  # a stream's are dropped unseen
            continue
        empty = [i for i, v in enumerate(ds.with_format("arrow")[args.label_column].to_pylist()) if is_empty(v)]
        if empty:
            more = f" and {len(empty) - 1} more" if len(empty) > 1 else ""
            notes.append(f"{name}: empty label cell in column {args.label_column!r} at {place(args, name, empty[0])}{more}; dropped as missing label")
    return notes


def place(args, split: str, row: int) -> str:
    """Where row `row` (0-based) of `split` came from, as a user finds it: a file line where the format has lines."""
    if args.sources is not None and (split == "train" or getattr(args, f"{split}_file", None) is None):
        return f"{split} row {row} of data.sources"
    if args.dataset:
        name = getattr(args, f"{split}_split_name") or args.train_split_name  # carved sets index train's rows
        return f"{args.dataset} split {name!r} row {row}"
    spec = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}.get(split)
    if spec is None:  # carved from train: the row index is train's
        spec = args.train_file
    return file_place(spec, row, args.encoding, args.delimiter)


def file_place(spec: str, row: int, encoding: str | None = None, delimiter: str | None = None) -> str:
    """Where row `row` (0-based) of the data file `spec` is, as a user finds it: a file line where the format has lines."""
    suffix = Path(spec).suffix.lower()
    if suffix in (".csv", ".tsv"):
        path = Path(paths.resolve(spec)).expanduser()
        lines = csv_row_lines(str(path), path.stat().st_mtime, encoding, delimiter) if path.is_file() else []
        return f"{spec} line {lines[row] if row < len(lines) else row + 2}"
    if suffix == ".jsonl":
        return f"{spec} line {row + 1}"
    if suffix == ".conll":
        return f"{spec} sentence {row + 1}"
    return f"{spec} row {row}"


def as_text(batch, columns, empty_is_none=False):
    return {c: [None if v is None or (empty_is_none and not str(v).strip()) else str(v) for v in batch[c]] for c in columns}


def texts_as_text(splits: DatasetDict, columns: list[str]) -> DatasetDict:
    """Numbers in a text column are text: a JSON file mixing 5 and "five" keeps both, as "5" and "five"."""
    out = {}
    for name, ds in splits.items():
        for c in columns:
            feature = ds.features.get(c) if c in ds.column_names else None
            if feature is None or (isinstance(feature, Value) and "string" in feature.dtype) or not (
                isinstance(feature, Value) or type(feature).__name__ == "Json"
            ):
                continue
            values = ds.with_format("arrow")[c].to_pylist()
            if any(isinstance(v, (list, dict)) for v in values):
                continue  # word lists (token classification) are checked as words
            features = ds.features.copy()
            features[c] = Value("string")
            ds = ds.map(as_text, batched=True, fn_kwargs={"columns": [c]}, features=features, desc="texts as text")
        out[name] = ds
    return DatasetDict(out)


def labels_as_text(splits: DatasetDict, column: str) -> tuple[DatasetDict, list[str]]:
    """Labels as strings (so 1 and "1" are one class), with a note wherever a label column mixes numbers and words."""
    notes, out = [], {}
    for name, ds in splits.items():
        if column not in ds.column_names or isinstance(ds, IterableDataset):  # streamed cells are read as text already
            out[name] = ds
            continue
        feature = ds.features[column]
        values = ds.with_format("arrow")[column].to_pylist()
        if not (isinstance(feature, Value) and feature.dtype == "string") or any(isinstance(v, str) and not v.strip() for v in values):
            features = ds.features.copy()
            features[column] = Value("string")
            # An empty cell is a missing label (counted and dropped by the checks), never a class named ''.
            ds = ds.map(as_text, batched=True, fn_kwargs={"columns": [column], "empty_is_none": True}, features=features, desc="labels as text")
        kinds = Counter()
        for value, n in Counter(ds.with_format("arrow")[column].to_pylist()).items():
            if not is_empty(value):
                kinds[label_kind(value)] += n
        warning = decimal_labels_warning(ds.with_format("arrow")[column].to_pylist(), name, column)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
            notes.append(warning)
        if len(kinds) > 1:
            notes.append(
                f"{name}: the label column mixes numbers ({kinds['number']} rows) and words ({kinds['word']} rows); all are compared as text"
            )
        out[name] = ds
    return DatasetDict(out), notes


def decimal_labels_warning(values: list, split: str, column: str) -> str | None:
    """Decimal numbers nearly all distinct are a quantity to predict, not classes: a classifier over them
    learns one class per row. Said, not refused: a few decimal class names (0.5, 1.5) are legitimate."""
    present = [v for v in values if not is_empty(v)]
    distinct = set(present)
    if split != "train" or len(distinct) < 10 or len(distinct) < 0.5 * len(present):
        return None
    if not all(label_kind(v) == "number" for v in distinct) or all(float(v).is_integer() for v in distinct):
        return None
    return (
        f"data.label_column: {column!r} holds {len(distinct):,} distinct decimal numbers in {len(present):,} training rows, "
        f"each becoming a class; to predict the number, use model.head: regression"
    )


@dataclass
class Checks:
    """Always run first: rows no step could use are dropped, each counted under its reason."""

    max_chars: int = 1_000_000
    blank_label_is_missing: bool = True  # False where the head reads an empty cell as a value (multi_label)
    name = "checks"
    effect = "removed"
    reason = "rows no step could use"

    def applies_to(self, split: str) -> bool:
        return True

    def verdict(self, batch, columns, label):
        out = []
        for i in range(len(batch[columns[0]])):
            row = [as_checked_text(batch[c][i]) for c in columns]
            if any(not isinstance(t, str) or not t.strip() for t in row):
                out.append("missing or empty text")
            elif label in batch and (batch[label][i] is None or (self.blank_label_is_missing and is_empty(batch[label][i]))):
                out.append("missing label")
            elif sum(len(t) for t in row) > self.max_chars:
                out.append(f"text over data.max_chars ({self.max_chars:,} characters)")
            elif any("\ufffd" in t for t in row):
                # Undecodable bytes are refused when a file is read (data.encoding); a U+FFFD is then in the text itself.
                out.append("kept: holds U+FFFD, characters lost before the file was written")
            else:
                out.append("")
        return {"__verdict": out}

    def usable(self, batch, columns, label):
        return [v == "" or v.startswith("kept") for v in self.verdict(batch, columns, label)["__verdict"]]

    def stream(self, ds, ctx):
        return ds.filter(self.usable, batched=True, batch_size=STREAM_BATCH, fn_kwargs={"columns": ctx.columns, "label": ctx.label})

    def __call__(self, ds: Dataset, ctx):
        kw = {"columns": ctx.columns, "label": ctx.label}
        ds = ds.map(self.verdict, batched=True, fn_kwargs=kw, num_proc=ctx.num_proc, desc="checks")
        verdicts = ds.with_format("arrow")["__verdict"].to_pylist()
        counts = Counter(verdicts)
        counts.pop("", None)
        keep = np.flatnonzero([v == "" or v.startswith("kept") for v in verdicts])
        kept = select(ds, keep).remove_columns("__verdict")
        return kept, len(ds) - len(kept), {"reasons": dict(counts)} if counts else {}


def is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and np.isnan(value))


def as_checked_text(value):
    """Word lists (token_classification) are checked as the text they spell."""
    if isinstance(value, list) and all(isinstance(w, str) for w in value):
        return " ".join(value)
    return value


def column(ds: Dataset, name: str) -> list:
    """One column as a Python list, read as Arrow in one go (indexing a Dataset row by row is ~100x slower)."""
    return ds.with_format("arrow")[name].to_pylist()


def label_kind(value) -> str:
    if isinstance(value, (int, float)):
        return "number"
    try:
        float(value)
        return "number"
    except (TypeError, ValueError):
        return "word"
