"""Load the splits a recipe names, check their columns, preprocess, encode labels, carve and tokenize.

Everything goes through `datasets`, so each step is cached by fingerprint and a second identical run
reads Arrow files instead of recomputing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError

from . import paths
from .errors import RecipeError
from .preprocess import run_pipeline
from .recipe import DATA_FORMATS, DataArgs

SPLITS = ("train", "validation", "test")


@dataclass
class Splits:
    splits: DatasetDict  # text columns, integer `labels` (a ClassLabel), any other columns of the source
    labels: list[str]  # label id -> name, in a stable sorted order built from the training split
    report: dict  # sizes, preprocessing rows, label counts: written into metrics.json


def load_splits(args: DataArgs, steps: list, seed: int) -> Splits:
    raw = load_hub(args) if args.dataset else load_files(args)
    check_columns(raw, args)
    processed, preprocess_report = run_pipeline(steps, raw, args.text_columns)
    labels = label_names(processed["train"][args.label_column])
    check_unseen_labels(processed, args.label_column, labels)
    splits = DatasetDict({name: encode_labels(ds, args.label_column, labels) for name, ds in processed.items()})
    if args.validation_split and "validation" not in splits:
        splits = carve_validation(splits, args.validation_split, seed)
    splits = subsample(splits, args, seed)
    present = set(splits["train"]["labels"])
    if len(present) < 2:
        only = labels[present.pop()] if present else "none"
        raise RecipeError(f"data.label_column: the training split has a single class ({only!r}); a classifier needs two or more")
    report = {
        "sizes": {name: len(ds) for name, ds in splits.items()},
        "labels": {name: label_counts(ds, labels) for name, ds in splits.items() if "labels" in ds.column_names},
        "preprocess": preprocess_report,
    }
    return Splits(splits, labels, report)


def load_hub(args: DataArgs) -> DatasetDict:
    loaded = load_dataset(args.dataset, args.dataset_config, revision=args.dataset_revision)
    wanted = {"train": args.train_split_name, "validation": args.validation_split_name, "test": args.test_split_name}
    out = {}
    for split, name in wanted.items():
        if name is None:
            continue
        if name not in loaded:
            raise RecipeError(
                f"data.{split}_split_name: {args.dataset!r} has no split {name!r}; splits: {', '.join(loaded)}"
            )
        out[split] = loaded[name]
    return DatasetDict(out)


def load_files(args: DataArgs) -> DatasetDict:
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    return DatasetDict({split: read_file(spec) for split, spec in files.items() if spec})


def read_file(spec: str) -> Dataset:
    path = Path(paths.resolve(spec)).expanduser()
    builder = DATA_FORMATS[path.suffix.lower()]
    options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        return load_dataset(builder, data_files=str(path), split="train", **options)
    except (DatasetGenerationError, ValueError) as e:
        cause = e.__cause__ or e
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise RecipeError(f"{spec}: cannot read as {path.suffix.lstrip('.')}: {first}") from None


def check_columns(splits: DatasetDict, args: DataArgs) -> None:
    problems = []
    for split, ds in splits.items():
        needed = list(args.text_columns) + ([args.label_column] if split != "test" else [])
        for col in needed:
            if col not in ds.column_names:
                key = "label_column" if col == args.label_column else "text_columns"
                problems.append(
                    f"data.{key}: column {col!r} is not in the {split} split; columns: {', '.join(ds.column_names)}"
                )
    if problems:
        raise RecipeError(problems)


def label_names(values) -> list[str]:
    """Distinct labels of the training split, sorted (numbers numerically, strings alphabetically), as names."""
    missing = sum(v is None for v in values)
    if missing:
        raise RecipeError(f"data.label_column: {missing} training rows have no label")
    distinct = set(values)
    kinds = {type(v) for v in distinct}
    if len(kinds) > 1 and not kinds <= {int, float}:
        raise RecipeError(f"data.label_column: labels mix types ({', '.join(sorted(k.__name__ for k in kinds))})")
    return [str(v) for v in sorted(distinct)]


def check_unseen_labels(splits: DatasetDict, column: str, labels: list[str]) -> None:
    known = set(labels)
    for split, ds in splits.items():
        if split == "train" or column not in ds.column_names:
            continue
        unseen = Counter(str(v) for v in ds[column] if str(v) not in known)
        if unseen:
            shown = ", ".join(f"{k!r} ({n} rows)" for k, n in unseen.most_common(5))
            raise RecipeError(
                f"data.label_column: the {split} split has labels not seen in training: {shown}; training labels: {', '.join(labels)}"
            )


def encode_labels(ds: Dataset, column: str, labels: list[str]) -> Dataset:
    if column not in ds.column_names:
        return ds
    index = {name: i for i, name in enumerate(labels)}
    ds = ds.map(lambda b: {"labels": [index[str(v)] for v in b[column]]}, batched=True, desc="encode labels")
    if column != "labels":
        ds = ds.remove_columns(column)
    return ds.cast_column("labels", ClassLabel(names=labels))


def carve_validation(splits: DatasetDict, fraction: float, seed: int) -> DatasetDict:
    try:
        parts = splits["train"].train_test_split(test_size=fraction, seed=seed, stratify_by_column="labels")
    except ValueError as e:
        raise RecipeError(f"data.validation_split: cannot carve a stratified {fraction} of train: {e}") from None
    return DatasetDict({**splits, "train": parts["train"], "validation": parts["test"]})


def subsample(splits: DatasetDict, args: DataArgs, seed: int) -> DatasetDict:
    # A seeded random subset, not the first N rows: many sources are sorted by label.
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_test_samples}
    out = {}
    for name, ds in splits.items():
        n = limits.get(name)
        out[name] = ds.shuffle(seed=seed).select(range(n)) if n is not None and n < len(ds) else ds
    return DatasetDict(out)


def label_counts(ds: Dataset, labels: list[str]) -> dict[str, int]:
    counts = Counter(ds["labels"])
    return {labels[i]: counts.get(i, 0) for i in range(len(labels))}


def tokenize(splits: DatasetDict, tokenizer, args: DataArgs) -> DatasetDict:
    """Truncate to max_length and leave padding to the collator, so each batch pads only to its own longest text."""
    columns = args.text_columns

    def encode(batch):
        return tokenizer(*[batch[c] for c in columns], truncation=True, max_length=args.max_length)

    keep = {"labels"}
    return DatasetDict(
        {
            name: ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c not in keep], desc=f"tokenize {name}")
            for name, ds in splits.items()
        }
    )
