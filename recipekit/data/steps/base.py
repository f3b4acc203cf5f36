"""Preprocessing steps: each one a small dataclass in one registry, run in the order the recipe lists.

A recipe names steps as `- drop_empty` or `- regex_replace: {pattern: ..., replacement: ...}`. Each step
works on one split at a time and returns the new split and a count (rows removed, changed or added),
optionally with details for the data report. Row-wise steps go through `datasets.map`/`filter`, so they
are cached by fingerprint; steps that pick rows (de-duplication, leakage, balancing) cache the indices
they keep next to the split's Arrow files, so a second identical run (or a second training process)
reads them instead of recomputing.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import random
import re
import string
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict
from datasets.fingerprint import Hasher
from datasets.table import InMemoryTable, MemoryMappedTable

from ..core.errors import RecipeError

STEPS: dict[str, type] = {}


def register(name: str):
    def add(cls):
        cls.name = name
        STEPS[name] = cls
        return cls

    return add


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


class Clean(Step):
    """A step that rewrites each text; subclasses define `clean(text) -> text`."""

    effect = "changed"

    def clean(self, text: str) -> str:
        raise NotImplementedError

    def rewrite(self, batch, columns):
        changed = [False] * len(batch[columns[0]])
        for col in columns:
            new = []
            for i, text in enumerate(batch[col]):
                out = self.clean(text) if isinstance(text, str) else text
                changed[i] |= out != text
                new.append(out)
            batch[col] = new
        batch["__changed"] = changed
        return batch

    def __call__(self, ds: Dataset, ctx: Context):
        ds = ds.map(self.rewrite, batched=True, fn_kwargs={"columns": ctx.columns}, num_proc=ctx.num_proc, desc=self.name)
        count = sum(ds.with_format("arrow")["__changed"].to_pylist())
        return ds.remove_columns("__changed"), count


@register("regex_replace")
@dataclass
class RegexReplace(Clean):
    """Replace every match of a regular expression in the text columns (the article strips `[^a-zA-Z\\s]`)."""

    reason = "regular expression replaced"
    pattern: str = field(default="", metadata={"help": "Python regular expression to find"})
    replacement: str = field(default="", metadata={"help": "text put in place of each match (\\1 refers to groups)"})

    def problems(self):
        if not self.pattern:
            return super().problems() + ["pattern: required, a non-empty regular expression"]
        try:
            re.compile(self.pattern)
        except re.error as e:
            return super().problems() + [f"pattern: {self.pattern!r} is not a valid regular expression ({e})"]
        return super().problems()

    def clean(self, text):
        return re.sub(self.pattern, self.replacement, text)  # `re` caches compiled patterns


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<!--.*?-->|</?[a-zA-Z][^<>]*>", re.DOTALL)


@register("strip_html")
@dataclass
class StripHtml(Clean):
    """Remove HTML tags and comments; a line break (`<br />`, as in IMDb) becomes a space so words stay apart."""

    reason = "HTML tags removed"

    def clean(self, text):
        return _TAG.sub("", _BREAK.sub(" ", text))


@register("unescape_html")
@dataclass
class UnescapeHtml(Clean):
    """Turn HTML entities (`&amp;`, `&#39;`, `&quot;`) back into the characters they stand for."""

    reason = "HTML entities unescaped"

    def clean(self, text):
        return html.unescape(text)


@register("normalize_unicode")
@dataclass
class NormalizeUnicode(Clean):
    """Unicode normalisation: NFKC also folds look-alikes (full-width letters, ligatures) into plain ones."""

    reason = "Unicode normalised"
    form: str = field(default="NFKC", metadata={"help": "normal form", "choices": ["NFC", "NFKC", "NFD", "NFKD"]})

    def clean(self, text):
        return unicodedata.normalize(self.form, text)


@register("lowercase")
@dataclass
class Lowercase(Clean):
    """Lower-case the text (uncased tokenizers, such as MiniLM's, already do this themselves)."""

    reason = "lower-cased"

    def clean(self, text):
        return text.lower()


_SPACE = re.compile(r"\s+")


@register("collapse_whitespace")
@dataclass
class CollapseWhitespace(Clean):
    """Turn every run of whitespace (tabs, newlines, repeated spaces) into one space and strip both ends."""

    reason = "whitespace collapsed"

    def clean(self, text):
        return _SPACE.sub(" ", text).strip()


# A URL does not end in the punctuation that follows it in a sentence.
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}\b")
# Seven or more digits in groups, optional country code and brackets: phone numbers, not years or prices.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,3}(?!\w)")


@register("remove_urls")
@dataclass
class RemoveUrls(Clean):
    """Replace web addresses (http://, https://, www.) with `replacement`."""

    reason = "URLs removed"
    replacement: str = field(default="", metadata={"help": "text put in place of each URL"})

    def clean(self, text):
        return _URL.sub(self.replacement, text)


PII_KINDS = ["email", "url", "phone"]


@register("mask_pii")
@dataclass
class MaskPii(Clean):
    """Replace e-mail addresses, URLs and phone numbers with placeholder tokens, so a model cannot learn them."""

    reason = "personal data masked"
    kinds: list[str] = field(
        default_factory=lambda: list(PII_KINDS), metadata={"help": "what to mask", "choices": PII_KINDS}
    )
    email_token: str = field(default="[EMAIL]", metadata={"help": "placeholder for an e-mail address"})
    url_token: str = field(default="[URL]", metadata={"help": "placeholder for a URL"})
    phone_token: str = field(default="[PHONE]", metadata={"help": "placeholder for a phone number"})

    def clean(self, text):
        # E-mail first: its domain would otherwise be read as a URL.
        if "email" in self.kinds:
            text = _EMAIL.sub(self.email_token, text)
        if "url" in self.kinds:
            text = _URL.sub(self.url_token, text)
        if "phone" in self.kinds:
            text = _PHONE.sub(lambda m: self.phone_token if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
        return text


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
