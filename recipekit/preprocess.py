"""Preprocessing steps: each one a small dataclass in one registry, run in the order the recipe lists.

A recipe names steps as `- drop_empty` or `- regex_replace: {pattern: ..., replacement: ...}`. Each step
works on one split at a time through `datasets` (so results are cached by fingerprint) and reports how
many rows it changed or removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict

from .errors import RecipeError

STEPS: dict[str, type] = {}


def register(name: str):
    def add(cls):
        cls.name = name
        STEPS[name] = cls
        return cls

    return add


@dataclass
class Step:
    effect = "removed"  # what the count a step returns means: rows "removed" or rows "changed"

    splits: list[str] | None = field(
        default=None, metadata={"help": "splits to apply to (train, validation, test); null means all"}
    )

    def problems(self) -> list[str]:
        return []

    def applies_to(self, split: str) -> bool:
        return self.splits is None or split in self.splits


@register("regex_replace")
@dataclass
class RegexReplace(Step):
    """Replace every match of a regular expression in the text columns (the article strips `[^a-zA-Z\\s]`)."""

    effect = "changed"

    pattern: str = field(default="", metadata={"help": "Python regular expression to find"})
    replacement: str = field(default="", metadata={"help": "text put in place of each match (\\1 refers to groups)"})

    def problems(self):
        if not self.pattern:
            return ["pattern: required, a non-empty regular expression"]
        try:
            re.compile(self.pattern)
        except re.error as e:
            return [f"pattern: {self.pattern!r} is not a valid regular expression ({e})"]
        return []

    def __call__(self, ds: Dataset, columns: list[str]) -> tuple[Dataset, int]:
        regex = re.compile(self.pattern)

        def replace(batch):
            changed = [False] * len(batch[columns[0]])
            for col in columns:
                new = []
                for i, text in enumerate(batch[col]):
                    out = regex.sub(self.replacement, text) if text is not None else None
                    changed[i] |= out != text
                    new.append(out)
                batch[col] = new
            batch["__changed"] = changed
            return batch

        ds = ds.map(replace, batched=True, desc="regex_replace")
        count = sum(ds["__changed"])
        return ds.remove_columns("__changed"), count


@register("dedupe")
@dataclass
class Dedupe(Step):
    """Drop rows whose text (all text columns together) already occurred; the first occurrence is kept."""

    ignore_case: bool = field(default=False, metadata={"help": "compare texts case-insensitively"})

    def __call__(self, ds: Dataset, columns: list[str]) -> tuple[Dataset, int]:
        seen, keep = set(), []
        index = 0
        for batch in ds.select_columns(columns).iter(batch_size=10_000):
            for key in zip(*(batch[c] for c in columns)):
                if self.ignore_case:
                    key = tuple(k.lower() if k is not None else None for k in key)
                if key not in seen:
                    seen.add(key)
                    keep.append(index)
                index += 1
        removed = len(ds) - len(keep)
        return (ds.select(keep) if removed else ds), removed


@register("drop_empty")
@dataclass
class DropEmpty(Step):
    """Drop rows whose text is missing or only whitespace in any text column."""

    def __call__(self, ds: Dataset, columns: list[str]) -> tuple[Dataset, int]:
        def non_empty(batch):
            return [all(t is not None and t.strip() != "" for t in row) for row in zip(*(batch[c] for c in columns))]

        kept = ds.filter(non_empty, batched=True, desc="drop_empty")
        return kept, len(ds) - len(kept)


def run_pipeline(steps: list, splits: DatasetDict, columns: list[str]) -> tuple[DatasetDict, list[dict]]:
    """Apply `steps` in order to every split they cover; return the new splits and one report row per step and split."""
    report = []
    out = dict(splits)
    for i, step in enumerate(steps):
        for split, ds in out.items():
            if not step.applies_to(split):
                continue
            rows_in = len(ds)
            ds, count = step(ds, columns)
            row = {"step": step.name, "split": split, "rows_in": rows_in, "rows_out": len(ds), step.effect: count}
            report.append(row)
            if rows_in and not len(ds):
                raise RecipeError(f"preprocess[{i}] {step.name} removed every row of split '{split}' ({rows_in} rows in)")
            out[split] = ds
    return DatasetDict(out), report
