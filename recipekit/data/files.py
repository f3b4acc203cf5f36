"""Reading one source: a local file (csv, tsv, json, jsonl, parquet, CoNLL) or a Hub split, as a Dataset of its
columns."""

from __future__ import annotations

import csv
import functools
import logging
from collections import Counter
from pathlib import Path

from datasets import (
    Dataset,
    DatasetDict,
    Features,
    Value,
    load_dataset,
)
from datasets.exceptions import DatasetGenerationError

from ..core import paths
from ..core.errors import RecipeError
from ..core.safety import clip

DATA_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".conll": "conll"}


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
