"""Load the splits a recipe names, check their columns, preprocess, encode labels, carve and tokenize.

Everything goes through `datasets`, so each step is cached by fingerprint and a second identical run
reads Arrow files instead of recomputing.
"""

from __future__ import annotations

import csv
import functools
import logging
import sys
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

from ..core import paths
from ..core.errors import RecipeError
from ..core.safety import clip
from .steps import Context, run_pipeline, select

SPLITS = ("train", "validation", "test")
DATA_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".conll": "conll"}
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
    raw = texts_as_text(raw, list(args.text_columns))
    notes = []
    if head.text_labels:
        notes = empty_label_notes(raw, args)
        raw, label_notes = labels_as_text(raw, args.label_column)
        notes += label_notes
    raw = DatasetDict({name: ds.add_column(ROW, np.arange(len(ds))) for name, ds in raw.items()})  # an array hashes at once, a list row by row
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


def empty_label_notes(splits: DatasetDict, args) -> list[str]:
    """Rows whose label cell is empty are dropped by the checks ("missing label"); say where the first one is."""
    notes = []
    for name, ds in splits.items():
        if args.label_column not in ds.column_names:
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
    suffix = Path(spec).suffix.lower()
    if suffix in (".csv", ".tsv"):
        path = Path(paths.resolve(spec)).expanduser()
        lines = csv_row_lines(str(path), path.stat().st_mtime) if path.is_file() else []
        return f"{spec} line {lines[row] if row < len(lines) else row + 2}"
    if suffix == ".jsonl":
        return f"{spec} line {row + 1}"
    if suffix == ".conll":
        return f"{spec} sentence {row + 1}"
    return f"{spec} row {row}"


def load_sources(args, seed: int, needs_labels: bool = True, stratify: bool = True) -> tuple[DatasetDict, list[dict]]:
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
    others = {split: read_file(spec) for split, spec in (("validation", args.validation_file), ("test", args.test_file)) if spec}
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


def as_text(batch, columns, empty_is_none=False):
    return {c: [None if v is None or (empty_is_none and not str(v).strip()) else str(v) for v in batch[c]] for c in columns}


def load_hub(args) -> DatasetDict:
    wanted = {"train": args.train_split_name, "validation": args.validation_split_name, "test": args.test_split_name}
    return DatasetDict(
        {split: load_hub_split(args.dataset, args.dataset_config, args.dataset_revision, name, f"data.{split}_split_name") for split, name in wanted.items() if name is not None}
    )


def load_hub_split(dataset: str, config: str | None, revision: str | None, name: str, key: str = "data.sources") -> Dataset:
    loaded = load_dataset(dataset, config, revision=revision)
    if name not in loaded:
        raise RecipeError(f"{key}: {dataset!r} has no split {name!r}; splits: {', '.join(loaded)}")
    return loaded[name]


def load_files(args) -> DatasetDict:
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    return DatasetDict({split: read_file(spec) for split, spec in files.items() if spec})


# Byte-order marks of the encodings a spreadsheet's "Unicode text" export uses; without one, UTF-8 is read.
BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"), (b"\xef\xbb\xbf", "utf-8-sig"))


def text_encoding(path: Path) -> str | None:
    with open(path, "rb") as f:
        start = f.read(4)
    return next((name for bom, name in BOMS if start.startswith(bom)), None)


def csv_header(path: Path, delimiter: str, encoding: str | None) -> list[str]:
    with open(path, encoding=encoding or "utf-8", errors="replace", newline="") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def read_file(spec: str) -> Dataset:
    """A data file as a Dataset. CSV cells are read as text, exactly as written: no guessing of missing
    values (a class named NA, None or null stays a class) and no numbers (an int label column with one
    empty cell would otherwise become floats, 1 becoming '1.0')."""
    path = Path(paths.resolve(spec)).expanduser()
    builder = DATA_FORMATS[path.suffix.lower()]
    if builder == "conll":
        return read_conll(path)
    encoding = text_encoding(path) if builder in ("csv", "json") else None
    options = {"encoding": encoding} if encoding else {}
    if builder == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        header = csv_header(path, delimiter, encoding)
        repeated = [name for name, n in Counter(header).items() if n > 1]
        if repeated:
            lines = ", ".join(str(i + 1) for i, name in enumerate(header) if name == repeated[0])
            raise RecipeError(f"{spec}: column {clip(repeated[0], 80)!r} appears more than once in the header (columns {lines}); rename or drop one")
        names = [name or f"Unnamed: {i}" for i, name in enumerate(header)]
        # Undecodable bytes become U+FFFD rather than failing the whole file; the checks count those rows.
        options.update(encoding_errors="replace", delimiter=delimiter, keep_default_na=False)
        if names:
            options["features"] = Features({name: Value("string") for name in names})
    # datasets logs a parse failure at ERROR level before raising; our one-line error says it better.
    csv_logger = logging.getLogger("datasets.packaged_modules.csv.csv")
    level = csv_logger.level
    csv_logger.setLevel(logging.CRITICAL)
    try:
        return load_dataset(builder, data_files=str(path), split="train", **options)
    except (DatasetGenerationError, ValueError, OSError) as e:
        cause = e.__cause__ or e
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise RecipeError(f"{spec}: cannot read as {path.suffix.lstrip('.')}{f' ({encoding})' if encoding else ''}: {clip(first)}") from None
    finally:
        csv_logger.setLevel(level)


@functools.lru_cache(maxsize=8)
def csv_row_lines(path: str, mtime: float) -> list[int]:
    """The file line each CSV record starts on: a quoted field may hold newlines, so records and lines differ."""
    p = Path(path)
    encoding = text_encoding(p) or "utf-8"
    starts, line = [], 1
    limit = csv.field_size_limit(1 << 30)  # pandas reads fields of any size; so must the count
    try:
        with open(p, encoding=encoding, errors="replace", newline="") as f:
            reader = csv.reader(f, delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
            for record in reader:
                if record:  # pandas skips blank lines
                    starts.append(line)
                line = reader.line_num + 1
    except csv.Error:
        return []  # unreadable here too: place() falls back to counting one line per row
    finally:
        csv.field_size_limit(limit)
    return starts[1:]  # the header is not a row


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
        verdicts = ds.with_format("arrow")["__verdict"].to_pylist()
        counts = Counter(verdicts)
        counts.pop("", None)
        keep = np.flatnonzero([v == "" or v.startswith("kept") for v in verdicts])
        kept = select(ds, keep).remove_columns("__verdict")
        return kept, len(ds) - len(kept), {"reasons": dict(counts)} if counts else {}


def is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def as_checked_text(value):
    """Word lists (token_classification) are checked as the text they spell."""
    if isinstance(value, list) and all(isinstance(w, str) for w in value):
        return " ".join(value)
    return value


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


def column(ds: Dataset, name: str) -> list:
    """One column as a Python list, read as Arrow in one go (indexing a Dataset row by row is ~100x slower)."""
    return ds.with_format("arrow")[name].to_pylist()


def subsample(splits: DatasetDict, args, seed: int) -> DatasetDict:
    # A seeded random subset, not the first N rows: many sources are sorted by label.
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_test_samples}
    out = {}
    for name, ds in splits.items():
        n = limits.get(name)
        out[name] = ds.shuffle(seed=seed).select(range(n)) if n is not None and n < len(ds) else ds
    return DatasetDict(out)


def label_kind(value) -> str:
    if isinstance(value, (int, float)):
        return "number"
    try:
        float(value)
        return "number"
    except (TypeError, ValueError):
        return "word"
