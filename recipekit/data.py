"""Load the splits a recipe names, check their columns, preprocess, encode labels, carve and tokenize.

Everything goes through `datasets`, so each step is cached by fingerprint and a second identical run
reads Arrow files instead of recomputing.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    Value,
    concatenate_datasets,
    interleave_datasets,
    load_dataset,
)
from datasets.exceptions import DatasetGenerationError
from sklearn.model_selection import train_test_split

from . import paths
from .errors import RecipeError
from .heads import build_head
from .heads.base import label_kind
from .preprocess import Context, run_pipeline
from .recipe import DATA_FORMATS, DataArgs

SPLITS = ("train", "validation", "test")


ROW = "__row"  # each row's index in its source, kept through checks and steps so errors name the file line


@dataclass
class Splits:
    splits: DatasetDict  # text columns, `labels` as the head encodes them, any other columns of the source
    labels: list[str]  # label id -> name for classification heads, in the head's order; [] for the others
    report: dict  # sources, steps (rows in/out with reasons), sizes, label counts: data_report.json


def load_splits(args: DataArgs, steps: list, seed: int, tokenizer=None, head=None) -> Splits:
    """Load, check, carve, preprocess, and let `head` check and encode the labels (heads.py says how).

    Every row removed on the way is counted with its reason; a label the head cannot use stops the run
    with the file and line of the first such row.
    """
    if head is None:
        head = build_head("sequence_classification", data=args)
    raw, sources = load_sources(args, seed, head.needs_labels)
    check_columns(raw, args, head.needs_labels)
    notes = []
    if head.text_labels:
        raw, notes = labels_as_text(raw, args.label_column)
    raw = DatasetDict({name: ds.add_column(ROW, list(range(len(ds)))) for name, ds in raw.items()})
    label = args.label_column if head.needs_labels else None  # a pretraining corpus's label column is ignored
    ctx = Context(list(args.text_columns), label, seed, args.num_proc, tokenizer)
    rows = [{"step": "load", "split": name, "rows_in": len(ds), "rows_out": len(ds), "reason": "rows read"} for name, ds in raw.items()]
    checked, check_rows_report = run_pipeline([Checks(max_chars=args.max_chars)], raw, ctx, first=-1)
    carved, carve_rows = carve(checked, args, seed, head.stratify)
    processed, step_rows = run_pipeline(steps, carved, ctx)
    splits = head.encode(processed, lambda split, row: place(args, split, row))
    splits = subsample(splits, args, seed)
    head.learn(splits["train"])
    counts = {name: head.label_counts(ds) for name, ds in splits.items() if "labels" in ds.column_names}
    report = {
        "sources": sources,
        "notes": notes,
        "steps": rows + check_rows_report + carve_rows + step_rows,
        "sizes": {name: len(ds) for name, ds in splits.items()},
        "labels": {name: c for name, c in counts.items() if c is not None},
    }
    target = splits["train"].features.get("labels")
    if isinstance(target, Value) and target.dtype.startswith("float"):
        # What a constant predictor would say: the report's baseline for a regression run.
        report["train_label_mean"] = round(float(np.mean(column(splits["train"], "labels"))), 6)
    return Splits(splits, head.labels, report)


def place(args: DataArgs, split: str, row: int) -> str:
    """Where row `row` (0-based) of `split` came from, as a user finds it: a file line where the format has lines."""
    if args.sources is not None and split == "train":
        return f"training row {row} of data.sources"
    if args.dataset:
        name = getattr(args, f"{split}_split_name") or args.train_split_name  # carved sets index train's rows
        return f"{args.dataset} split {name!r} row {row}"
    spec = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}.get(split)
    if spec is None:  # carved from train: the row index is train's
        spec = args.train_file
    suffix = Path(spec).suffix.lower()
    if suffix in (".csv", ".tsv"):
        # The header is line 1; a quoted field holding a newline would shift this, which our data sets never do.
        return f"{spec} line {row + 2}"
    if suffix == ".jsonl":
        return f"{spec} line {row + 1}"
    if suffix == ".conll":
        return f"{spec} sentence {row + 1}"
    return f"{spec} row {row}"


def load_sources(args: DataArgs, seed: int, needs_labels: bool = True) -> tuple[DatasetDict, list[dict]]:
    """The splits a recipe names; several `data.sources` are mixed into one training split."""
    if args.sources is None:
        raw = load_hub(args) if args.dataset else load_files(args)
        return raw, []
    keep = list(args.text_columns) + ([args.label_column] if needs_labels else [])
    parts = []
    for i, source in enumerate(args.sources):
        ds = read_file(source.file) if source.file else load_hub_split(source.dataset, source.dataset_config, source.dataset_revision, source.split)
        missing = [k for k in source.columns if k not in ds.column_names]
        if missing:
            raise RecipeError(f"data.sources[{i}].columns: {missing} not in {source.label}; columns: {', '.join(ds.column_names)}")
        ds = ds.rename_columns(source.columns)
        absent = [c for c in keep if c not in ds.column_names]
        if absent:
            raise RecipeError(
                f"data.sources[{i}]: {source.label} has no column {absent[0]!r} (map one with columns:); columns: {', '.join(ds.column_names)}"
            )
        # Only the recipe's columns, all as text: sources with int and string labels still concatenate.
        ds = ds.select_columns(keep)
        ds = ds.map(as_text, batched=True, fn_kwargs={"columns": keep}, features=Features({c: Value("string") for c in keep}), desc="normalise source")
        parts.append(ds.add_column("__source", [i] * len(ds)))
    if args.mix == "interleave":
        weights = [s.weight for s in args.sources]
        train = interleave_datasets(parts, probabilities=[w / sum(weights) for w in weights], seed=seed, stopping_strategy="all_exhausted")
    else:
        train = concatenate_datasets(parts)
    counts = Counter(train.with_format("arrow")["__source"].to_pylist())
    shares = [
        {"source": s.label, "rows_read": len(parts[i]), "rows_used": counts.get(i, 0), "share": round(counts.get(i, 0) / max(len(train), 1), 4)}
        for i, s in enumerate(args.sources)
    ]
    others = {split: read_file(spec) for split, spec in (("validation", args.validation_file), ("test", args.test_file)) if spec}
    return DatasetDict({"train": train.remove_columns("__source"), **others}), shares


def as_text(batch, columns):
    return {c: [None if v is None else str(v) for v in batch[c]] for c in columns}


def load_hub(args: DataArgs) -> DatasetDict:
    wanted = {"train": args.train_split_name, "validation": args.validation_split_name, "test": args.test_split_name}
    return DatasetDict(
        {split: load_hub_split(args.dataset, args.dataset_config, args.dataset_revision, name, f"data.{split}_split_name") for split, name in wanted.items() if name is not None}
    )


def load_hub_split(dataset: str, config: str | None, revision: str | None, name: str, key: str = "data.sources") -> Dataset:
    loaded = load_dataset(dataset, config, revision=revision)
    if name not in loaded:
        raise RecipeError(f"{key}: {dataset!r} has no split {name!r}; splits: {', '.join(loaded)}")
    return loaded[name]


def load_files(args: DataArgs) -> DatasetDict:
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    return DatasetDict({split: read_file(spec) for split, spec in files.items() if spec})


def read_file(spec: str) -> Dataset:
    path = Path(paths.resolve(spec)).expanduser()
    builder = DATA_FORMATS[path.suffix.lower()]
    if builder == "conll":
        return read_conll(path)
    # Undecodable bytes become U+FFFD rather than failing the whole file; the checks count those rows.
    options = {"encoding_errors": "replace"} if builder == "csv" else {}
    if path.suffix.lower() == ".tsv":
        options["delimiter"] = "\t"
    # datasets logs a parse failure at ERROR level before raising; our one-line error says it better.
    csv_logger = logging.getLogger("datasets.packaged_modules.csv.csv")
    level = csv_logger.level
    csv_logger.setLevel(logging.CRITICAL)
    try:
        return load_dataset(builder, data_files=str(path), split="train", **options)
    except (DatasetGenerationError, ValueError, OSError) as e:
        cause = e.__cause__ or e
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise RecipeError(f"{spec}: cannot read as {path.suffix.lstrip('.')}: {first}") from None
    finally:
        csv_logger.setLevel(level)


def read_conll(path: Path) -> Dataset:
    """CoNLL-style text: one `token ... tag` line per word (token first, tag last), a blank line between
    sentences, `-DOCSTART-` lines skipped. Columns: `tokens`, `tags`."""
    sentences, tokens, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if tokens:
                    sentences.append((tokens, tags))
                tokens, tags = [], []
                continue
            if len(fields) < 2:
                raise RecipeError(f"{path} line {number}: expected a token and a tag separated by whitespace, got {line.strip()!r}")
            tokens.append(fields[0])
            tags.append(fields[-1])
    if tokens:
        sentences.append((tokens, tags))
    return Dataset.from_dict({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences]})


def labels_as_text(splits: DatasetDict, column: str) -> tuple[DatasetDict, list[str]]:
    """Labels as strings (so 1 and "1" are one class), with a note wherever a label column mixes numbers and words."""
    notes, out = [], {}
    for name, ds in splits.items():
        if column not in ds.column_names:
            out[name] = ds
            continue
        feature = ds.features[column]
        if not (isinstance(feature, Value) and feature.dtype == "string"):
            features = ds.features.copy()
            features[column] = Value("string")
            ds = ds.map(as_text, batched=True, fn_kwargs={"columns": [column]}, features=features, desc="labels as text")
        kinds = Counter()
        for value, n in Counter(ds.with_format("arrow")[column].to_pylist()).items():
            if value is not None:
                kinds[label_kind(value)] += n
        if len(kinds) > 1:
            notes.append(
                f"{name}: the label column mixes numbers ({kinds['number']} rows) and words ({kinds['word']} rows); all are compared as text"
            )
        out[name] = ds
    return DatasetDict(out), notes


@dataclass
class Checks:
    """Always run first: rows no step could use are dropped, each counted under its reason."""

    max_chars: int = 1_000_000
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
            elif label in batch and batch[label][i] is None:
                out.append("missing label")
            elif sum(len(t) for t in row) > self.max_chars:
                out.append(f"text over data.max_chars ({self.max_chars:,} characters)")
            elif any("\ufffd" in t for t in row):
                out.append("kept: undecodable bytes, replaced by U+FFFD")
            else:
                out.append("")
        return {"__verdict": out}

    def __call__(self, ds: Dataset, ctx):
        kw = {"columns": ctx.columns, "label": ctx.label}
        ds = ds.map(self.verdict, batched=True, fn_kwargs=kw, num_proc=ctx.num_proc, desc="checks")
        counts = Counter(ds.with_format("arrow")["__verdict"].to_pylist())
        counts.pop("", None)
        kept = ds.filter(lambda v: [x == "" or x.startswith("kept") for x in v], input_columns="__verdict", batched=True, desc="checks")
        return kept.remove_columns("__verdict"), len(ds) - len(kept), {"reasons": dict(counts)} if counts else {}


def as_checked_text(value):
    """Word lists (token_classification) are checked as the text they spell."""
    if isinstance(value, list) and all(isinstance(w, str) for w in value):
        return " ".join(value)
    return value


def carve(splits: DatasetDict, args: DataArgs, seed: int, stratify: bool = True) -> tuple[DatasetDict, list[dict]]:
    """Hold out seeded test and validation sets from train where the recipe asks for them, stratified by
    label for single-label heads (label lists, numbers and texts cannot be stratified)."""
    out, rows = dict(splits), []
    for split, fraction in (("test", args.test_split), ("validation", args.validation_split)):
        if not fraction or split in out:
            continue
        train = out["train"]
        size = round(fraction * len(splits["train"]))  # a fraction of all training rows, before any carving
        labels = train.with_format("arrow")[args.label_column].to_pylist() if stratify else None
        if labels is not None:
            check_stratifiable(labels, size, f"data.{split}_split", fraction, split)
        try:
            rest, held = train_test_split(np.arange(len(train)), test_size=size, random_state=seed, stratify=labels)
        except ValueError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RecipeError(f"data.{split}_split: cannot carve a stratified {fraction} of train: {shorten(first)}") from None
        out["train"], out[split] = train.select(np.sort(rest)), train.select(np.sort(held))
        how = "stratified" if stratify else "random"
        rows.insert(0, {"step": f"carve {split}", "split": "train", "rows_in": len(train), "rows_out": len(rest), "moved": len(held), "reason": f"{how} {fraction} held out as {split}"})
    return DatasetDict({name: out[name] for name in SPLITS if name in out}), rows


def shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_few(names, n: int = 5) -> str:
    names = list(names)
    return ", ".join(repr(x) for x in names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def check_stratifiable(labels: list, size: int, key: str, fraction: float, split: str) -> None:
    """A stratified carve needs two rows of every class and a held-out set with room for each; say which classes fail, briefly."""
    counts = Counter(labels)
    single = sorted((str(c) for c, n in counts.items() if n < 2), key=str)
    advice = f"give data.{split}_file instead, or drop rare classes with preprocess: filter_labels"
    if single:
        raise RecipeError(
            f"{key}: cannot carve a stratified {fraction} of train: {len(single)} of {len(counts)} classes have a single row "
            f"({first_few(single)}); {advice}"
        )
    if size < len(counts) or len(labels) - size < len(counts):
        raise RecipeError(
            f"{key}: cannot carve a stratified {fraction} of train: {size} held-out rows of {len(labels)} cannot hold all "
            f"{len(counts)} classes ({first_few(sorted(map(str, counts)))}); {advice}"
        )


def check_columns(splits: DatasetDict, args: DataArgs, needs_labels: bool = True) -> None:
    problems = []
    for split, ds in splits.items():
        needed = list(args.text_columns) + ([args.label_column] if split != "test" and needs_labels else [])
        for col in needed:
            if col not in ds.column_names:
                key = "label_column" if col == args.label_column else "text_columns"
                problems.append(
                    f"data.{key}: column {col!r} is not in the {split} split; columns: {', '.join(ds.column_names)}"
                )
    if problems:
        raise RecipeError(problems)


def column(ds: Dataset, name: str) -> list:
    """One column as a Python list, read as Arrow in one go (indexing a Dataset row by row is ~100x slower)."""
    return ds.with_format("arrow")[name].to_pylist()


def subsample(splits: DatasetDict, args: DataArgs, seed: int) -> DatasetDict:
    # A seeded random subset, not the first N rows: many sources are sorted by label.
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_test_samples}
    out = {}
    for name, ds in splits.items():
        n = limits.get(name)
        out[name] = ds.shuffle(seed=seed).select(range(n)) if n is not None and n < len(ds) else ds
    return DatasetDict(out)
