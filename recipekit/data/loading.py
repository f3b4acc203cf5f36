"""Load the splits a recipe names, check their columns, preprocess, encode labels, carve and tokenize.

Everything goes through `datasets`, so each step is cached by fingerprint and a second identical run
reads Arrow files instead of recomputing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    Value,
    concatenate_datasets,
    interleave_datasets,
)

from ..core.errors import RecipeError
from .checks import Checks, as_text, column, empty_label_notes, labels_as_text, place, texts_as_text
from .files import load_files, load_hub, load_hub_split, read_file
from .steps import Context, run_pipeline
from .streaming import is_streamed, stream_file

SPLITS = ("train", "validation", "test")


# Columns the pipeline adds for its own bookkeeping (the row number, a row's source, a check's verdict) start with
# this; a user column of such a name is refused as a recipe column and left out otherwise.
INTERNAL_PREFIX = "__"
ROW = "__row"  # each row's index in its source, kept through checks and steps so errors name the file line


@dataclass
class Splits:
    splits: DatasetDict  # text columns, `labels` as the head encodes them, any other columns of the source
    labels: list[str]  # label id -> name for classification heads, in the head's order; [] for the others
    report: dict  # sources, steps (rows in/out with reasons), sizes, label counts: data_report.json


def load_splits(args, steps: list, seed: int, tokenizer=None, *, head) -> Splits:
    """Load, check, carve, preprocess, and let `head` check and encode the labels (heads.py says how).

    Every row removed on the way is counted with its reason; a label the head cannot use stops the run
    with the file and line of the first such row.
    """
    raw, sources = load_sources(args, seed, head.needs_labels, head.stratify)
    check_columns(raw, args, head.needs_labels)
    raw, notes = without_colliding_columns(raw, args, head)
    raw = texts_as_text(raw, list(args.text_columns))
    # One rule for every head: a row with an empty label cell is dropped and counted ("missing label"), never fatal.
    notes += empty_label_notes(raw, args) if head.needs_labels and not head.empty_label_is_value else []
    if head.text_labels:
        raw, label_notes = labels_as_text(raw, args.label_column)
        notes += label_notes
    # An array hashes at once, a list row by row; a stream has no row count to number by.
    raw = DatasetDict({name: ds if is_streamed(ds) else ds.add_column(ROW, np.arange(len(ds))) for name, ds in raw.items()})
    label = args.label_column if head.needs_labels else None  # a pretraining corpus's label column is ignored
    ctx = Context(list(args.text_columns), label, seed, args.num_proc, tokenizer)
    rows = [{"step": "load", "split": name, "rows_in": size(ds), "rows_out": size(ds), "reason": "rows read" if size(ds) is not None else
             f"streamed from {ds.n_shards} shard(s) as training reads them"} for name, ds in raw.items()]
    checked, check_rows_report = run_pipeline([Checks(max_chars=args.max_chars, blank_label_is_missing=not head.empty_label_is_value)], raw, ctx, first=-1)
    carved, carve_rows = carve(checked, args, seed, head.stratify)
    processed, step_rows = run_pipeline(steps, carved, ctx)
    splits = head.encode(processed, lambda split, row: place(args, split, row))
    splits, sample_rows = subsample(splits, args, seed)
    head.learn(splits["train"])
    counts = {name: head.label_counts(ds) for name, ds in splits.items() if "labels" in ds.column_names and not is_streamed(ds)}
    report = {
        "sources": sources,
        "notes": notes,
        "steps": rows + check_rows_report + carve_rows + step_rows + sample_rows,
        "sizes": {name: size(ds) if size(ds) is not None else "streamed" for name, ds in splits.items()},
        "labels": {name: c for name, c in counts.items() if c is not None},
    }
    target = splits["train"].features.get("labels")
    if isinstance(target, Value) and target.dtype.startswith("float") and not is_streamed(splits["train"]):
        # What a constant predictor would say: the report's baseline for a regression run.
        report["train_label_mean"] = round(float(np.mean(column(splits["train"], "labels"))), 6)
    return Splits(splits, head.labels, report)


def size(ds) -> int | None:
    return None if is_streamed(ds) else len(ds)


def load_sources(args, seed: int, needs_labels: bool = True, stratify: bool = True) -> tuple[DatasetDict, list[dict]]:
    """The splits a recipe names; several `data.sources` are mixed into one training split."""
    if getattr(args, "streaming", False):
        # Only train streams: validation and test are read whole (evaluation needs their length and order).
        keep = list(args.text_columns) + ([args.label_column] if needs_labels else [])
        held = {split: read_file(spec) for split, spec in (("validation", args.validation_file), ("test", args.test_file)) if spec}
        return DatasetDict({"train": stream_file(args.train_file, keep), **held}), []
    if args.sources is None:
        raw = load_hub(args) if args.dataset else load_files(args)
        return raw, []
    keep = list(args.text_columns) + ([args.label_column] if needs_labels else [])
    parts = []
    for i, source in enumerate(args.sources):
        ds = read_file(source.file, args.encoding, args.delimiter) if source.file else load_hub_split(source.dataset, source.dataset_config, source.dataset_revision, source.split)
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
        if source.label_map is not None and needs_labels:
            ds = relabel(ds, args.label_column, source.labels(), f"data.sources[{i}].label_map", source.label)
        parts.append(ds.add_column("__source", [i] * len(ds)))
    held: dict[str, Dataset] = {}
    if args.mix == "interleave" and (args.validation_split or args.test_split):
        # Interleaving repeats the smaller sources, so carving after it would put copies of training rows
        # into validation: each source gives up its share first, and only the rest is interleaved.
        pieces = []
        for part in parts:
            carved, _ = carve(DatasetDict({"train": part}), args, seed, stratify and needs_labels)
            pieces.append(carved)
        parts = [p["train"] for p in pieces]
        held = {split: concatenate_datasets([p[split] for p in pieces]).remove_columns("__source") for split in ("validation", "test") if split in pieces[0]}
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
    others = {split: read_file(spec, args.encoding, args.delimiter) for split, spec in (("validation", args.validation_file), ("test", args.test_file)) if spec}
    return DatasetDict({"train": train.remove_columns("__source"), **held, **others}), shares


def relabel(ds: Dataset, column: str, mapping: dict[str, str], key: str, name: str) -> Dataset:
    """A source's labels renamed to the recipe's, so IMDb's neg/pos and SST-2's negative/positive are two classes,
    not four. A label the map does not name is refused: it would silently stay a class of its own."""
    present = {v for v in ds.with_format("arrow")[column].to_pylist() if v is not None}
    unnamed = sorted(present - mapping.keys())
    if unnamed:
        raise RecipeError(
            f"{key}: {name} has label(s) {', '.join(map(repr, unnamed[:5]))} that the map does not name; "
            f"it names {', '.join(map(repr, mapping))}"
        )
    return ds.map(renamed, batched=True, fn_kwargs={"column": column, "mapping": mapping}, desc="label_map")


def renamed(batch, column, mapping):
    return {column: [None if v is None else mapping[v] for v in batch[column]]}


def carve(splits: DatasetDict, args, seed: int, stratify: bool = True) -> tuple[DatasetDict, list[dict]]:
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
            from sklearn.model_selection import train_test_split  # 0.4 s at import; only a carve needs it

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


def check_columns(splits: DatasetDict, args, needs_labels: bool = True) -> None:
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


def without_colliding_columns(splits: DatasetDict, args, head) -> tuple[DatasetDict, list[str]]:
    """Leave out the columns the recipe does not use whose names the pipeline writes itself (`labels` beside a
    label column of another name, `__row`): each would be overwritten, or read as the pipeline's own."""
    used = {*args.text_columns, args.label_column}
    out, notes = {}, []
    for name, ds in splits.items():
        extra = [c for c in ds.column_names if c not in used and (c in head.written_columns or c.startswith(INTERNAL_PREFIX))]
        if extra:
            notes.append(f"{name}: column(s) {', '.join(map(repr, extra))} left out: the recipe does not use them and the pipeline writes columns of those names")
            ds = ds.remove_columns(extra)
        out[name] = ds
    return DatasetDict(out), notes


SAMPLE_KEYS = {"train": "max_train_samples", "validation": "max_eval_samples", "test": "max_test_samples"}


def subsample(splits: DatasetDict, args, seed: int) -> tuple[DatasetDict, list[dict]]:
    """The data.max_*_samples subsets, with a report row for each split they cut (the report's rows then add up
    to the sizes trained and scored on)."""
    # A seeded random subset, not the first N rows: many sources are sorted by label.
    out, rows = {}, []
    for name, ds in splits.items():
        key = SAMPLE_KEYS.get(name)
        n = getattr(args, key) if key else None
        if n is not None and n < len(ds):
            out[name] = ds.shuffle(seed=seed).select(range(n))
            rows.append({"step": "sample", "split": name, "rows_in": len(ds), "rows_out": n, "removed": len(ds) - n,
                         "reason": f"data.{key}: {n:,} seeded random rows kept"})
        else:
            out[name] = ds
    return DatasetDict(out), rows
