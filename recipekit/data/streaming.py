"""`data.streaming`: the training split read row by row from local shards, as a datasets IterableDataset.

Shards are read by our own generator rather than datasets' packaged builders: those parse JSON a 10 MB
block at a time and name a bad line only as a row of that block, after dropping the rows before it.
Here each row is one Python record, so a bad line is named by file and line number. Each shard is one
`gen_kwargs` list item, so datasets (and accelerate) hand whole shards to processes: with at least as many
shards as processes no two processes read the same file; with fewer, each reads all and keeps its share.
"""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

from datasets import Features, IterableDataset, Value

from ..core import paths
from ..core.errors import OwnError, RecipeError
from ..core.safety import clip

# Formats a stream reads; .txt is one row per line, its column named `text`.
STREAM_FORMATS = {".txt": "text", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Rows of the stream read for what needs a look at the data before training (the token-length report).
SAMPLE_ROWS = 1000


def shard_paths(spec: str, key: str = "data.train_file") -> list[Path]:
    """The files a glob (or one path) names, sorted, so every process and every run sees one order."""
    pattern = str(Path(paths.resolve(spec)).expanduser())
    found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not found:
        raise RecipeError(f"{key}: {spec!r} matches no file")
    suffixes = sorted({p.suffix.lower() for p in found})
    bad = [s for s in suffixes if s not in STREAM_FORMATS]
    if bad:
        raise RecipeError(f"{key}: {spec!r} matches {bad[0] or '(no extension)'} files; a stream reads {', '.join(STREAM_FORMATS)}")
    if len({STREAM_FORMATS[s] for s in suffixes}) > 1:
        raise RecipeError(f"{key}: {spec!r} mixes formats ({', '.join(suffixes)}); give shards of one format")
    return found


def read_rows(path: Path, columns: list[str]):
    """(line, row) for each record of one shard; a record that cannot be read stops the run naming its line."""
    kind = STREAM_FORMATS[path.suffix.lower()]
    if kind == "text":
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                yield number, {"text": line.rstrip("\n")}
    elif kind == "json":
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.strip())
                except json.JSONDecodeError as e:
                    raise OwnError(f"{path} line {number}: not valid JSON ({e.msg}): {clip(line.strip(), 80)!r}") from None
                if not isinstance(record, dict):
                    raise OwnError(f"{path} line {number}: a JSON object per line expected, got {type(record).__name__}")
                yield number, record
    elif kind == "csv":
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            line = 2
            try:
                for record in reader:
                    yield line, record
                    line = reader.line_num + 1
            except csv.Error as e:
                raise OwnError(f"{path} line {reader.line_num}: cannot read as csv ({e})") from None
    else:
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=[c for c in columns if c in pq.read_schema(path).names]):
            for record in batch.to_pylist():
                row += 1
                yield row, record


def generate(shards: list[str], columns: list[str]):
    for shard in shards:
        for _, record in read_rows(Path(shard), columns):
            # Missing cells are None (the checks drop such rows); numbers in a text column are text.
            yield {c: None if record.get(c) is None else str(record[c]) for c in columns}


def columns_of(path: Path, columns: list[str]) -> list[str]:
    """The columns the first record of `path` has (the whole schema for parquet)."""
    if STREAM_FORMATS[path.suffix.lower()] == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    for _, record in read_rows(path, columns):
        return list(record)
    return list(columns)  # an empty shard: nothing to complain about


def stream_file(spec: str, columns: list[str], key: str = "data.train_file") -> IterableDataset:
    """The shards `spec` names as one IterableDataset of `columns` (text), in file order, one shard per file."""
    shards = shard_paths(spec, key)
    have = columns_of(shards[0], columns)
    missing = [c for c in columns if c not in have]
    if missing:
        raise RecipeError(f"data.text_columns: column {missing[0]!r} is not in {shards[0]}; columns: {', '.join(have)}")
    return IterableDataset.from_generator(
        generate, gen_kwargs={"shards": [str(p) for p in shards], "columns": tuple(columns)},  # a tuple: only the shard list is split
        features=Features({c: Value("string") for c in columns}),
    )


def is_streamed(ds) -> bool:
    return isinstance(ds, IterableDataset)
