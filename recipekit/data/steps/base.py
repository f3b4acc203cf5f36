"""What every preprocessing step shares: the registry, the Step base class, the context, and running a pipeline.

A recipe names steps as `- drop_empty` or `- regex_replace: {pattern: ..., replacement: ...}`. Each step
works on one split at a time and returns the new split and a count (rows removed, changed or added),
optionally with details for the data report. Row-wise steps go through `datasets.map`/`filter`, so they
are cached by fingerprint; steps that pick rows (de-duplication, leakage, balancing) cache the indices
they keep next to the split's Arrow files, so a second identical run (or a second training process)
reads them instead of recomputing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, IterableDataset
from datasets.fingerprint import Hasher
from datasets.table import InMemoryTable, MemoryMappedTable

from ...core.errors import RecipeError
from ...core.registry import registrar

STEPS: dict[str, type] = {}
register = registrar(STEPS, "preprocessing step")

# Rows per call of a streamed check or step. Small on purpose: datasets keys each row a batched map emits by the
# list of its batch's row numbers, and the next batched map joins those keys as text, a cost per row that grows
# with this size (at 1,000 it took about a quarter of the streamed data path's time, tokenizing included).
STREAM_BATCH = 64


@dataclass
class Context:
    """What a step may need besides its own split: column names, the seed, the tokenizer, the other splits."""

    columns: list[str]
    label: str = "label"
    seed: int = 42
    num_proc: int | None = None
    tokenizer: object = None
    splits: dict = field(default_factory=dict)  # the current splits, for steps that compare with train


@dataclass
class Step:
    effect = "removed"  # what the count a step returns means: rows "removed", "changed" or "added"
    reason = ""  # one line for the data report
    train_only = False  # steps that would bias evaluation (balancing, augmentation)
    default_splits = None  # None: every split

    splits: list[str] | None = field(
        default=None, metadata={"help": "splits to apply to (train, validation, test); null means the step's default"}
    )

    def problems(self) -> list[str]:
        if self.train_only and self.splits not in (None, ["train"]):
            return [f"splits: {self.splits} - this step changes the class mix or adds rows, so it applies to train only"]
        bad = [s for s in self.splits or [] if s not in ("train", "validation", "test")]
        return [f"splits: {bad} - choices: train, validation, test"] if bad else []

    def stream(self, ds, ctx: Context):
        """The step on a streamed split (data.streaming), lazily; steps that need every row at once leave this out."""
        raise NotImplementedError

    @classmethod
    def streams(cls) -> bool:
        return cls.stream is not Step.stream

    def applies_to(self, split: str) -> bool:
        chosen = self.splits or self.default_splits or (["train"] if self.train_only else None)
        return chosen is None or split in chosen


def texts(ds: Dataset, columns: list[str]):
    """Yield each row's text columns as a tuple, reading Arrow in batches rather than the whole split at once."""
    for batch in ds.select_columns(columns).iter(batch_size=10_000):
        yield from zip(*(batch[c] for c in columns))


def cached_indices(ds: Dataset, step: Step, extra, compute) -> tuple[np.ndarray, dict]:
    """Rows `compute()` keeps, stored beside the split's cache files under a key of its fingerprint and the step's options."""
    if not ds.cache_files:
        return compute()
    key = Hasher.hash([ds._fingerprint, step.name, repr(step), extra])
    path = Path(ds.cache_files[0]["filename"]).parent / f"recipekit-{step.name}-{key}.npz"
    if path.exists():
        with np.load(path) as saved:
            return saved["keep"], json.loads(str(saved["details"]))
    keep, details = compute()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.npz")
    np.savez(tmp, keep=keep, details=json.dumps(details))
    os.replace(tmp, path)  # atomic: a second process reads the whole file or none of it
    return keep, details


def select(ds: Dataset, keep: np.ndarray) -> Dataset:
    if len(keep) == len(ds) and (len(keep) == 0 or keep[-1] == len(ds) - 1):
        return ds
    return flat(ds.select(keep))


# Rows gathered per written batch: bounds memory on large splits (SST-2's 67k rows take about 10 MB).
GATHER_ROWS = 100_000


def flat(ds: Dataset) -> Dataset:
    """`ds` with the rows a filter or select kept written out contiguously (and cached beside its Arrow files).

    Reading through datasets' indices mapping gathers row by row, one Arrow chunk per row: each later map,
    and datasets' own flatten_indices, then ran at ~25k rows/s (SST-2); one vectorised `take` per batch
    of rows is about 100x faster.
    """
    mapping = ds._indices  # datasets exposes no public accessor for a select's row numbers
    if mapping is None:
        return ds
    rows = mapping.column(0).to_numpy()
    table = ds.data.table
    fingerprint = Hasher.hash([ds._fingerprint, "flat"])  # the cache identity datasets gave ds
    files = ds.cache_files
    if not files:
        return Dataset(InMemoryTable(table.take(rows)), info=ds.info.copy(), split=ds.split, fingerprint=fingerprint)
    path = Path(files[0]["filename"]).with_name(f"cache-{fingerprint}-flat.arrow")
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for start in range(0, len(rows), GATHER_ROWS):
                writer.write_table(table.take(rows[start:start + GATHER_ROWS]))
        os.replace(tmp, path)  # atomic: another process reads the whole file or none of it
    # With its own fingerprint: datasets would derive one from the table that does not tell two such files apart.
    return Dataset(MemoryMappedTable.from_file(str(path)), info=ds.info.copy(), split=ds.split, fingerprint=fingerprint)


def run_pipeline(steps: list, splits: DatasetDict, ctx: Context, first: int = 0) -> tuple[DatasetDict, list[dict]]:
    """Apply `steps` in order to every split they cover; return the new splits and one report row per step and split."""
    report = []
    out = dict(splits)
    for i, step in enumerate(steps, start=first):
        for split in list(out):
            ds = out[split]
            if not step.applies_to(split):
                continue
            ctx.splits = out
            if isinstance(ds, IterableDataset):  # data.streaming: applied row by row as training reads; counts unknown
                out[split] = step.stream(ds, ctx)
                report.append({"step": step.name, "split": split, "rows_in": None, "rows_out": None, "reason": f"{step.reason} (streamed: not counted)"})
                continue
            rows_in = len(ds)
            ds, count, *details = step(ds, ctx)
            ds = flat(ds)  # a filtering step leaves an indices mapping that would slow every later step
            row = {"step": step.name, "split": split, "rows_in": rows_in, "rows_out": len(ds), step.effect: count, "reason": step.reason}
            if details:
                row.update(details[0])
            report.append(row)
            if rows_in and not len(ds):
                raise RecipeError(f"preprocess[{i}] {step.name} removed every row of split '{split}' ({rows_in} rows in: {step.reason})")
            out[split] = ds
    return DatasetDict(out), report
