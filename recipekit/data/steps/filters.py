"""Steps that drop rows one at a time by what each holds: empty text, text length, label."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from ...core.errors import RecipeError
from .base import STREAM_BATCH, Context, Step, register


@register("drop_empty")
@dataclass
class DropEmpty(Step):
    """Drop rows whose text is missing or only whitespace in any text column."""

    reason = "empty or whitespace-only text"

    def keep(self, batch, columns):
        return [all(isinstance(t, str) and t.strip() != "" for t in row) for row in zip(*(batch[c] for c in columns))]

    def __call__(self, ds: Dataset, ctx: Context):
        kept = ds.filter(self.keep, batched=True, fn_kwargs={"columns": ctx.columns}, num_proc=ctx.num_proc, desc=self.name)
        return kept, len(ds) - len(kept)

    def stream(self, ds, ctx: Context):
        return ds.filter(self.keep, batched=True, batch_size=STREAM_BATCH, fn_kwargs={"columns": ctx.columns})


@register("filter_length")
@dataclass
class FilterLength(Step):
    """Keep rows whose text length (all text columns together) lies in [min, max], counted in chars, words or tokens."""

    reason = "text length outside the limits"
    unit: str = field(default="chars", metadata={"help": "what to count", "choices": ["chars", "words", "tokens"]})
    min: int = field(default=0, metadata={"help": "shortest length kept"})
    max: int | None = field(default=None, metadata={"help": "longest length kept; null for no limit"})

    def problems(self):
        out = super().problems()
        if self.min < 0 or (self.max is not None and self.max < self.min):
            out.append(f"min/max: [{self.min}, {self.max}] is not a range of lengths (0 <= min <= max)")
        return out

    def keep(self, batch, columns, tokenizer):
        lengths = [0] * len(batch[columns[0]])
        for col in columns:
            values = [t or "" for t in batch[col]]
            if self.unit == "tokens":
                counts = [len(ids) for ids in tokenizer(values, add_special_tokens=False)["input_ids"]]
            elif self.unit == "words":
                counts = [len(t.split()) for t in values]
            else:
                counts = [len(t) for t in values]
            lengths = [a + b for a, b in zip(lengths, counts)]
        return [self.min <= n and (self.max is None or n <= self.max) for n in lengths]

    def __call__(self, ds: Dataset, ctx: Context):
        if self.unit == "tokens" and ctx.tokenizer is None:
            raise RecipeError("preprocess.filter_length: unit 'tokens' needs the model's tokenizer")
        kwargs = {"columns": ctx.columns, "tokenizer": ctx.tokenizer if self.unit == "tokens" else None}
        kept = ds.filter(self.keep, batched=True, fn_kwargs=kwargs, num_proc=ctx.num_proc, desc=self.name)
        return kept, len(ds) - len(kept)

    def stream(self, ds, ctx: Context):
        if self.unit == "tokens" and ctx.tokenizer is None:
            raise RecipeError("preprocess.filter_length: unit 'tokens' needs the model's tokenizer")
        return ds.filter(self.keep, batched=True, batch_size=STREAM_BATCH, fn_kwargs={"columns": ctx.columns, "tokenizer": ctx.tokenizer if self.unit == "tokens" else None})


@register("filter_labels")
@dataclass
class FilterLabels(Step):
    """Keep only the listed labels, or drop the listed ones (labels are compared as text: `1` and `"1"` match)."""

    reason = "label filtered out"
    keep: list[str] | None = field(default=None, metadata={"help": "labels to keep; every other row is dropped"})
    drop: list[str] | None = field(default=None, metadata={"help": "labels to drop"})

    def problems(self):
        out = super().problems()
        if (self.keep is None) == (self.drop is None):
            out.append("keep / drop: give exactly one list of labels")
        return out

    def wanted(self, batch, label):
        if self.keep is not None:
            return [v in self.keep for v in batch[label]]
        return [v not in self.drop for v in batch[label]]

    def __call__(self, ds: Dataset, ctx: Context):
        if ctx.label not in ds.column_names:
            return ds, 0
        kept = ds.filter(self.wanted, batched=True, fn_kwargs={"label": ctx.label}, desc=self.name)
        return kept, len(ds) - len(kept)
