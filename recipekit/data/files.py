"""Reading one source: a local file (csv, tsv, json, jsonl, parquet, CoNLL) or a Hub split, as a Dataset of its
columns."""

from __future__ import annotations

import codecs
import csv
import functools
import logging
import sys
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
    return DatasetDict({split: read_file(spec, args.encoding, args.delimiter) for split, spec in files.items() if spec})


# Byte-order marks of the encodings a spreadsheet's "Unicode text" export uses; without one, UTF-8 is read.
BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"), (b"\xef\xbb\xbf", "utf-8-sig"))


def text_encoding(path: Path) -> str | None:
    with open(path, "rb") as f:
        start = f.read(4)
    return next((name for bom, name in BOMS if start.startswith(bom)), None)


def file_encoding(path: Path, encoding: str | None) -> str:
    """The encoding given, else the byte-order mark's, else UTF-8; a UTF-8 mark is skipped under `utf-8` too, so it
    never becomes part of the first column's name."""
    bom = text_encoding(path)
    if encoding is None:
        return bom or "utf-8"
    return bom if bom == "utf-8-sig" and codecs.lookup(encoding).name == "utf-8" else encoding


# What a spreadsheet's "CSV" export separates fields with: a comma, or a semicolon where the comma is the decimal mark.
DELIMITERS = ",;\t|"


@functools.lru_cache(maxsize=32)
def csv_format(path: str, mtime: float, encoding: str | None, delimiter: str | None) -> tuple[str, str, bool]:
    """(encoding, delimiter, guessed) of a CSV or TSV file: the ones given, else the byte-order mark's encoding or
    UTF-8, and the delimiter of a .tsv (tab) or the one the header uses. A header naming one candidate settles
    it; several (a header `text;label,x`) are weighed by csv.Sniffer over the first lines; none is a single column."""
    p = Path(path)
    encoding = encoding or text_encoding(p) or "utf-8"
    if delimiter is not None:
        return encoding, delimiter, False
    if p.suffix.lower() == ".tsv":
        return encoding, "\t", False
    with open(p, encoding=encoding, errors="replace", newline="") as f:
        sample = f.read(1 << 16)
    header = sample.splitlines()[0] if sample else ""
    present = [d for d in DELIMITERS if d in header]
    if len(present) <= 1:
        return encoding, (present or [","])[0], bool(present) and present[0] != ","
    try:
        found = csv.Sniffer().sniff(sample, delimiters="".join(present)).delimiter
    except csv.Error:
        found = ","
    return encoding, found, found != ","


def check_decodes(path: Path, spec: str, encoding: str, key: str) -> None:
    """Refuse bytes the encoding cannot read, naming the line: replacing them would change the text silently."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            try:
                line += decoder.decode(block, final=not block).count("\n")
            except UnicodeDecodeError as e:
                # The error's offsets are within this block: count the lines of what decoded before it.
                line += codecs.decode(block[: max(e.start, 0)], encoding, errors="ignore").count("\n")
                raise RecipeError(
                    f"{spec} line {line}: byte(s) {e.object[e.start:e.end].hex(' ')} are not {encoding} text; set {key} "
                    f"to the file's encoding (latin-1 or cp1252 for most Western European spreadsheet exports)"
                ) from None
            if not block:
                return


def csv_header(path: Path, delimiter: str, encoding: str | None) -> list[str]:
    with open(path, encoding=encoding or "utf-8", errors="replace", newline="") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def read_file(spec: str, encoding: str | None = None, delimiter: str | None = None, keys: tuple[str, str] = ("data.encoding", "data.delimiter")) -> Dataset:
    """A data file as a Dataset. CSV cells are read as text, exactly as written: no guessing of missing
    values (a class named NA, None or null stays a class) and no numbers (an int label column with one
    empty cell would otherwise become floats, 1 becoming '1.0'). Text is decoded as `encoding` (default: the
    byte-order mark's, else UTF-8) and refused where it does not decode; `keys` name the settings that fix it."""
    path = Path(paths.resolve(spec)).expanduser()
    builder = DATA_FORMATS[path.suffix.lower()]
    if builder == "parquet":
        encoding = None  # Arrow stores text as UTF-8 itself
    else:
        encoding = file_encoding(path, encoding)
        check_decodes(path, spec, encoding, keys[0])
    if builder == "conll":
        return read_conll(path, encoding)
    options = {"encoding": encoding} if encoding else {}
    if builder == "csv":
        encoding, delimiter, guessed = csv_format(str(path), path.stat().st_mtime, encoding, delimiter)
        if guessed:
            print(f"{spec}: fields separated by {delimiter!r} (guessed from the header; {keys[1]} sets it)", file=sys.stderr)
        header = csv_header(path, delimiter, encoding)
        repeated = [name for name, n in Counter(header).items() if n > 1]
        if repeated:
            lines = ", ".join(str(i + 1) for i, name in enumerate(header) if name == repeated[0])
            raise RecipeError(f"{spec}: column {clip(repeated[0], 80)!r} appears more than once in the header (columns {lines}); rename or drop one")
        names = [name or f"Unnamed: {i}" for i, name in enumerate(header)]
        options.update(delimiter=delimiter, keep_default_na=False)
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
        hint = f"; if its fields are not separated by {delimiter!r}, set {keys[1]}" if builder == "csv" else ""
        shown = f" ({encoding})" if encoding not in (None, "utf-8") else ""
        raise RecipeError(f"{spec}: cannot read as {path.suffix.lstrip('.')}{shown}: {clip(first)}{hint}") from None
    finally:
        csv_logger.setLevel(level)


@functools.lru_cache(maxsize=8)
def csv_row_lines(path: str, mtime: float, encoding: str | None = None, delimiter: str | None = None) -> list[int]:
    """The file line each CSV record starts on: a quoted field may hold newlines, so records and lines differ."""
    p = Path(path)
    encoding, delimiter, _ = csv_format(path, mtime, encoding, delimiter)
    starts, line = [], 1
    limit = csv.field_size_limit(1 << 30)  # pandas reads fields of any size; so must the count
    try:
        with open(p, encoding=encoding, errors="replace", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for record in reader:
                if record:  # pandas skips blank lines
                    starts.append(line)
                line = reader.line_num + 1
    except csv.Error:
        return []  # unreadable here too: place() falls back to counting one line per row
    finally:
        csv.field_size_limit(limit)
    return starts[1:]  # the header is not a row


def read_conll(path: Path, encoding: str = "utf-8") -> Dataset:
    """CoNLL-style text: one `token ... tag` line per word (token first, tag last), a blank line between
    sentences, `-DOCSTART-` lines skipped. Columns: `tokens`, `tags`."""
    sentences, tokens, tags = [], [], []
    with open(path, encoding=encoding) as f:
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
