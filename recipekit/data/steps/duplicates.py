"""Steps that compare rows with each other: exact and near duplicates, one text with several labels, text leaked from train."""

from __future__ import annotations

import hashlib
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset

from .base import STREAM_BATCH, Context, Step, cached_indices, register, select, texts

_PUNCT = str.maketrans("", "", string.punctuation)


def normal_key(row: tuple, ignore_case: bool, ignore_whitespace: bool, ignore_punctuation: bool) -> bytes:
    """A 16-byte digest of the row's texts after the chosen normalisation: constant memory per row, even for 5 MB texts."""
    parts = []
    for text in row:
        text = text or ""
        if ignore_case:
            text = text.lower()
        if ignore_punctuation:
            text = text.translate(_PUNCT)
        if ignore_whitespace:
            text = " ".join(text.split())
        parts.append(text)
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass
class Normalised(Step):
    """Options shared by every step that compares texts exactly."""

    ignore_case: bool = field(default=False, metadata={"help": "compare texts case-insensitively"})
    ignore_whitespace: bool = field(default=False, metadata={"help": "treat runs of whitespace as one space, ignore both ends"})
    ignore_punctuation: bool = field(default=False, metadata={"help": "ignore ASCII punctuation when comparing"})

    def keys(self, ds: Dataset, columns: list[str]):
        return (normal_key(row, self.ignore_case, self.ignore_whitespace, self.ignore_punctuation) for row in texts(ds, columns))


@register("dedupe")
@dataclass
class Dedupe(Normalised):
    """Drop rows whose text (all text columns together) already occurred; the first occurrence is kept."""

    reason = "exact duplicate of an earlier row"

    def __call__(self, ds: Dataset, ctx: Context):
        def compute():
            seen, keep = set(), []
            for i, key in enumerate(self.keys(ds, ctx.columns)):
                if key not in seen:
                    seen.add(key)
                    keep.append(i)
            return np.asarray(keep, dtype=np.int64), {}

        keep, _ = cached_indices(ds, self, ctx.columns, compute)
        return select(ds, keep), len(ds) - len(keep)

    def stream(self, ds, ctx: Context):
        return ds.filter(FirstSeen(self, ctx.columns), batched=True, batch_size=STREAM_BATCH, with_indices=True)


class FirstSeen:
    """`dedupe` on a stream: a 16-byte digest per distinct row held in memory (plus a Python set's overhead per
    entry), within what one process reads. It starts afresh at
    each pass over the stream (index 0), so a second epoch is not dropped as copies of the first."""

    def __init__(self, step: Normalised, columns: list[str]):
        self.step, self.columns, self.seen = step, columns, set()

    def __call__(self, batch, indices):
        if indices and indices[0] == 0:
            self.seen.clear()
        keep = []
        for row in zip(*(batch[c] for c in self.columns)):
            key = normal_key(row, self.step.ignore_case, self.step.ignore_whitespace, self.step.ignore_punctuation)
            keep.append(key not in self.seen)
            self.seen.add(key)
        return keep


def shingles(text: str, unit: str, n: int) -> list[bytes]:
    tokens = text.lower().split() if unit == "words" else list(" ".join(text.lower().split()))
    if len(tokens) <= n:
        return [" ".join(tokens).encode("utf-8", "surrogatepass")]
    sep = " " if unit == "words" else ""
    return list({sep.join(tokens[i : i + n]).encode("utf-8", "surrogatepass") for i in range(len(tokens) - n + 1)})


@dataclass
class NearOptions(Step):
    """MinHash options shared by near-duplicate de-duplication and near leakage."""

    threshold: float = field(default=0.85, metadata={"help": "estimated Jaccard similarity of shingle sets at which two texts are duplicates"})
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations: more is more accurate and slower"})
    shingle: str = field(default="words", metadata={"help": "shingle unit", "choices": ["words", "chars"]})
    ngram: int = field(default=3, metadata={"help": "shingle length in units (3 words, or about 5 chars)"})
    # Only the start of a very long text is hashed: 100k characters is ~60 IMDb reviews, plenty to compare.
    max_chars: int = field(default=100_000, metadata={"help": "characters of each text hashed"})

    def problems(self):
        out = super().problems()
        if not 0.0 < self.threshold <= 1.0:
            out.append(f"threshold: {self.threshold} must be in (0, 1]")
        if self.num_perm < 16 or self.ngram < 1 or self.max_chars < 1:
            out.append("num_perm / ngram / max_chars: need num_perm >= 16, ngram >= 1, max_chars >= 1")
        return out

    def minhashes(self, ds: Dataset, columns: list[str]):
        from datasketch import MinHash

        batch = []
        for row in texts(ds, columns):
            text = " ".join(t or "" for t in row)[: self.max_chars]
            batch.append(shingles(text, self.shingle, self.ngram))
            if len(batch) == 2_000:
                yield from MinHash.bulk(batch, num_perm=self.num_perm)
                batch = []
        if batch:
            yield from MinHash.bulk(batch, num_perm=self.num_perm)

    def lsh(self):
        from datasketch import MinHashLSH

        return MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)


@register("near_dedupe")
@dataclass
class NearDedupe(NearOptions):
    """Drop rows whose text is a near-duplicate (MinHash LSH, via datasketch) of an earlier kept row."""

    reason = "near-duplicate of an earlier row"

    def __call__(self, ds: Dataset, ctx: Context):
        def compute():
            lsh, kept, keep = self.lsh(), {}, []
            for i, m in enumerate(self.minhashes(ds, ctx.columns)):
                # LSH candidates share a band; the estimate confirms they are really above the threshold.
                if not any(m.jaccard(kept[j]) >= self.threshold for j in lsh.query(m)):
                    lsh.insert(i, m)
                    kept[i] = m
                    keep.append(i)
            return np.asarray(keep, dtype=np.int64), {}

        keep, _ = cached_indices(ds, self, ctx.columns, compute)
        return select(ds, keep), len(ds) - len(keep)


LABEL_POLICIES = ["keep", "drop", "majority"]


@register("label_conflicts")
@dataclass
class LabelConflicts(Normalised):
    """Find texts that occur with different labels; keep them, drop every such row, or keep the majority label's rows."""

    reason = "same text with different labels"
    policy: str = field(default="drop", metadata={"help": "keep: report only; drop: remove all; majority: keep the most frequent label (ties dropped)", "choices": LABEL_POLICIES})

    def __call__(self, ds: Dataset, ctx: Context):
        if ctx.label not in ds.column_names:
            return ds, 0

        def compute():
            labels = ds.with_format("arrow")[ctx.label].to_pylist()
            keys = list(self.keys(ds, ctx.columns))
            by_text = defaultdict(Counter)
            for key, label in zip(keys, labels):
                by_text[key][label] += 1
            conflicts = {k: c for k, c in by_text.items() if len(c) > 1}
            rows = [i for i, k in enumerate(keys) if k in conflicts]
            details = {"texts_with_several_labels": len(conflicts), "rows_involved": len(rows), "policy": self.policy}
            if self.policy == "keep":
                return np.arange(len(ds), dtype=np.int64), details
            winner = {}
            if self.policy == "majority":
                for k, c in conflicts.items():
                    (top, n), *rest = c.most_common()
                    winner[k] = top if n > rest[0][1] else None
            keep = [i for i, (k, label) in enumerate(zip(keys, labels)) if k not in conflicts or winner.get(k) == label]
            return np.asarray(keep, dtype=np.int64), details

        keep, details = cached_indices(ds, self, [ctx.columns, ctx.label], compute)
        return select(ds, keep), len(ds) - len(keep), details


@register("leakage")
@dataclass
class Leakage(NearOptions):
    """Find validation/test rows whose text also occurs in train (exactly, or near with `near: true`); report or remove them."""

    reason = "text also in train"
    default_splits = ("validation", "test")
    policy: str = field(default="remove", metadata={"help": "report: count only; remove: drop them from the evaluation split", "choices": ["report", "remove"]})
    near: bool = field(default=False, metadata={"help": "also match near-duplicates (MinHash, using threshold/num_perm/shingle/ngram)"})
    ignore_case: bool = field(default=False, metadata={"help": "compare texts case-insensitively (exact matching)"})
    ignore_whitespace: bool = field(default=False, metadata={"help": "treat runs of whitespace as one space (exact matching)"})

    def problems(self):
        out = super().problems()
        if self.splits and "train" in self.splits:
            out.append("splits: leakage compares other splits with train; list validation and/or test")
        return out

    def __call__(self, ds: Dataset, ctx: Context):
        train = ctx.splits.get("train")
        if train is None:
            return ds, 0

        def compute():
            def key(d):
                return (normal_key(r, self.ignore_case, self.ignore_whitespace, False) for r in texts(d, ctx.columns))

            in_train = set(key(train))
            leaked = {i for i, k in enumerate(key(ds)) if k in in_train}
            exact = len(leaked)
            if self.near:
                lsh = self.lsh()
                train_hashes = {}
                for i, m in enumerate(self.minhashes(train, ctx.columns)):
                    lsh.insert(i, m)
                    train_hashes[i] = m
                for i, m in enumerate(self.minhashes(ds, ctx.columns)):
                    if i not in leaked and any(m.jaccard(train_hashes[j]) >= self.threshold for j in lsh.query(m)):
                        leaked.add(i)
            details = {"rows_in_train": len(leaked), "exact": exact, "near": len(leaked) - exact, "policy": self.policy}
            if self.policy == "report":
                return np.arange(len(ds), dtype=np.int64), details
            return np.asarray([i for i in range(len(ds)) if i not in leaked], dtype=np.int64), details

        keep, details = cached_indices(ds, self, [ctx.columns, train._fingerprint], compute)
        return select(ds, keep), len(ds) - len(keep), details
