"""Steps that change the training rows' mix (train only): class balancing and EDA augmentation."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset

from .base import Context, Step, cached_indices, register


@register("balance")
@dataclass
class Balance(Step):
    """Make every class as frequent as the largest (oversample, rows repeated) or the smallest (undersample); train only."""

    reason = "class balancing"
    train_only = True
    method: str = field(default="oversample", metadata={"help": "oversample or undersample", "choices": ["oversample", "undersample"]})

    @property
    def effect(self):
        return "added" if self.method == "oversample" else "removed"

    def __call__(self, ds: Dataset, ctx: Context):
        def compute():
            labels = np.asarray(ds.with_format("arrow")[ctx.label].to_pylist(), dtype=object)
            rng = np.random.default_rng(ctx.seed)
            groups = {v: np.flatnonzero(labels == v) for v in dict.fromkeys(labels)}
            target = (max if self.method == "oversample" else min)(len(g) for g in groups.values())
            parts = []
            for rows in groups.values():
                if self.method == "oversample":
                    parts += [rows, rng.choice(rows, target - len(rows), replace=True)]
                else:
                    parts.append(np.sort(rng.choice(rows, target, replace=False)))
            keep = np.concatenate(parts).astype(np.int64)
            return (keep if self.method == "oversample" else np.sort(keep)), {"rows_per_class": int(target)}

        keep, details = cached_indices(ds, self, [ctx.label, ctx.seed], compute)
        return ds.select(keep).flatten_indices(), abs(len(keep) - len(ds)), details


EDA_OPERATIONS = ["delete", "swap", "insert"]


@register("augment")
@dataclass
class Augment(Step):
    """EDA-style copies of each training row: random word deletion, swap or insertion (train only, seeded)."""

    reason = "augmented copies (EDA)"
    effect = "added"
    train_only = True
    copies: int = field(default=1, metadata={"help": "augmented copies added per row"})
    rate: float = field(default=0.1, metadata={"help": "fraction of a text's words changed per copy (EDA uses 0.1)"})
    operations: list[str] = field(
        default_factory=lambda: list(EDA_OPERATIONS),
        metadata={"help": "one is drawn per copy; insert repeats a word of the same text (no thesaurus)", "choices": EDA_OPERATIONS},
    )

    def problems(self):
        out = super().problems()
        if self.copies < 1 or not 0.0 < self.rate <= 1.0 or not self.operations:
            out.append(f"copies / rate / operations: need copies >= 1, 0 < rate <= 1 and one operation or more (got {self.copies}, {self.rate}, {self.operations})")
        return out

    def edit(self, text: str, rng: random.Random) -> str:
        words = text.split()
        if len(words) < 2:
            return text
        n = max(1, round(self.rate * len(words)))
        op = rng.choice(self.operations)
        if op == "delete":
            kept = [w for w in words if rng.random() >= self.rate]
            words = kept or [rng.choice(words)]
        elif op == "swap":
            for _ in range(n):
                i, j = rng.randrange(len(words)), rng.randrange(len(words))
                words[i], words[j] = words[j], words[i]
        else:
            for _ in range(n):
                words.insert(rng.randrange(len(words) + 1), rng.choice(words))
        return " ".join(words)

    def expand(self, batch, indices, columns, seed):
        out = {k: [] for k in batch}
        for row, index in enumerate(indices):
            for copy in range(self.copies + 1):
                # One generator per row and copy: the result does not depend on batch size or num_proc.
                rng = random.Random(f"{seed}:{index}:{copy}")
                for k in batch:
                    value = batch[k][row]
                    out[k].append(self.edit(value, rng) if copy and k in columns and isinstance(value, str) else value)
        return out

    def __call__(self, ds: Dataset, ctx: Context):
        kwargs = {"columns": ctx.columns, "seed": ctx.seed}
        out = ds.map(self.expand, batched=True, with_indices=True, fn_kwargs=kwargs, num_proc=ctx.num_proc, desc=self.name)
        return out, len(out) - len(ds)
