"""Text to token ids for the heads: truncation, length statistics for the data report, and cache identities."""

from __future__ import annotations

import hashlib
import json
import weakref

import numpy as np
from datasets import DatasetDict
from datasets.fingerprint import Hasher

from ..core import console
from ..core.errors import RecipeError
from .streaming import SAMPLE_ROWS, is_streamed
from .windows import DOCUMENT, windows


def tokenize(splits: DatasetDict, tokenizer, args) -> tuple[DatasetDict, dict]:
    """Truncate to args.max_length (padding is left to the collator); also return token-length percentiles per split.

    Each text is tokenized once in full to learn its length; only the rows over max_length are tokenized
    again with truncation, which lets pairs use the tokenizer's own truncation strategy. With
    `long_text: head_tail` a long text keeps its first `head_tokens` and its last ones instead; with `chunks` it
    becomes overlapping windows of max_length, each a row with the document's label and (outside train) the
    `document` it came from, so its windows' outputs can be pooled back (trainer/windows.py).
    """
    columns, limit = args.text_columns, args.max_length
    head_tail, chunks = args.long_text == "head_tail", args.long_text == "chunks"
    head = args.head_tokens or limit // 4
    overlap = limit // 4 if args.chunk_overlap is None else args.chunk_overlap

    def encode(batch, indices):
        full = tokenizer(*[batch[c] for c in columns], verbose=False, return_special_tokens_mask=head_tail)
        lengths = [len(ids) for ids in full["input_ids"]]
        long = [i for i, n in enumerate(lengths) if n > limit]
        if chunks:
            return as_windows(full, batch, indices, lengths, long)
        if head_tail:
            for i in long:
                keep = head_and_tail(full["special_tokens_mask"][i], limit, head)
                for key in full:
                    full[key][i] = [full[key][i][j] for j in keep]
            del full["special_tokens_mask"]
        elif long:
            # longest_first: a pair loses tokens from whichever text is longer, so a short hypothesis survives.
            cut = tokenizer(*[[batch[c][i] for i in long] for c in columns], truncation="longest_first", max_length=limit)
            for key in cut:
                for j, i in enumerate(long):
                    full[key][i] = cut[key][j]
        return {**full, "n_tokens": lengths}

    def as_windows(full, batch, indices, lengths, long):
        cut, source = windows(tokenizer, [batch[columns[0]][i] for i in long], limit, overlap) if long else ({}, [])
        spans: dict[int, list[int]] = {}
        for j, k in enumerate(source):
            spans.setdefault(long[k], []).append(j)
        out = {key: [] for key in [*full, "labels", DOCUMENT, "n_tokens"] if key != "labels" or "labels" in batch}
        for i, n in enumerate(lengths):
            rows = [(full, i)] if i not in spans else [(cut, j) for j in spans[i]]
            for w, (encoded, j) in enumerate(rows):
                for key in full:
                    out[key].append(encoded[key][j])
                if "labels" in batch:
                    out["labels"].append(batch["labels"][i])
                out[DOCUMENT].append(indices[i])
                out["n_tokens"].append(n if w == 0 else -1)  # a document's length counts once in the statistics
        return out

    out, stats = {}, {}
    for name, ds in splits.items():
        # Windows change the number of rows, so every input column goes and `labels` is written per window.
        drop = [c for c in ds.column_names if c != "labels" or chunks]
        if is_streamed(ds):  # tokenized lazily as training reads; the report's lengths are the stream's first rows
            sample = list(ds.take(SAMPLE_ROWS))
            lengths = np.asarray(encode({c: [row[c] for row in sample] for c in columns}, list(range(len(sample))))["n_tokens"])
            stats[name] = {**length_stats(lengths[lengths >= 0], limit), "sample_rows": len(sample)}
            out[name] = ds.map(encode, batched=True, with_indices=True, remove_columns=drop).remove_columns("n_tokens")
            continue
        # datasets would fingerprint the tokenizer by pickling it (~1.5 s); its JSON definition says the same, in ms.
        fingerprint = Hasher.hash([ds._fingerprint, tokenizer_identity(tokenizer), list(columns), limit, args.long_text, head,
                                   overlap if chunks else None, "tokenize"])
        label_feature = ds.features.get("labels")
        with console.progress(len(ds)):
            ds = ds.map(encode, batched=True, with_indices=True, remove_columns=drop, num_proc=args.num_proc,
                        new_fingerprint=fingerprint, desc=f"tokenize {name}")
        lengths = np.asarray(ds.with_format("arrow")["n_tokens"].to_pylist())
        stats[name] = length_stats(lengths[lengths >= 0], limit)
        if chunks and stats[name]:
            stats[name]["windows"] = len(ds)
        if chunks and label_feature is not None and ds.features["labels"] != label_feature:
            ds = ds.cast_column("labels", label_feature)  # written per window as plain values; a ClassLabel keeps its names
        if chunks and name == "train":
            ds = ds.remove_columns(DOCUMENT)  # training windows are examples in their own right
        if stats[name] and stats[name]["max"] == 0:
            # A vocabulary that matches nothing in the text would otherwise train on empty inputs without a word.
            raise RecipeError(
                f"data.text_columns: tokenizer {tokenizer_name(tokenizer)} turns every row of column "
                f"{' + '.join(map(repr, columns))} ({name} split) into zero tokens; check tokenizer.name_or_path and the text column"
            )
        out[name] = ds.remove_columns("n_tokens")
    return DatasetDict(out), {"max_length": limit, "splits": stats}


def head_and_tail(special: list[int], limit: int, head: int) -> list[int]:
    """Positions to keep of a tokenized text over `limit`: its leading and trailing special tokens ([CLS] ...
    [SEP]), its first `head` text tokens and as many of its last ones as fit."""
    n, lead, trail = len(special), 0, 0
    while lead < n and special[lead]:
        lead += 1
    while trail < n - lead and special[n - 1 - trail]:
        trail += 1
    body = range(lead, n - trail)
    tail = max(limit - lead - trail - head, 0)
    return [*range(lead), *body[:head], *body[len(body) - tail:], *range(n - trail, n)]


def tokenizer_name(tokenizer) -> str:
    name = getattr(tokenizer, "name_or_path", "") or ""
    return f"{name!r} ({type(tokenizer).__name__})" if name else type(tokenizer).__name__


# tokenizer -> (its size, the hash of its definition). Hashing a 30,000-word vocabulary takes ~0.1 s: once per
# tokenizer, not once per call, since `run.py serve` tokenizes every batch of requests with the same one.
DEFINITION_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# A digest of the backend's JSON -> the same hash: a process that loads one tokenizer afresh for each run or
# command (a sweep's trials, cv's folds, a test session) hashes its definition once. Digesting the JSON is ~100x faster.
HASHES_BY_TEXT: dict[bytes, str] = {}


def definition_hash(tokenizer) -> str:
    cached = DEFINITION_HASHES.get(tokenizer)
    if cached is not None and cached[0] == len(tokenizer):  # added tokens change the size
        return cached[1]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Calls with truncation=True or padding leave those settings in the backend; they say nothing about
        # the vocabulary, and keeping them made each process of a multi-process run miss the main one's cache.
        text = backend.to_str()
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        definition = HASHES_BY_TEXT.get(key)
        if definition is None:
            definition = Hasher.hash({k: v for k, v in json.loads(text).items() if k not in ("truncation", "padding")})
            HASHES_BY_TEXT[key] = definition
    else:
        definition = Hasher.hash(tokenizer)
    try:
        DEFINITION_HASHES[tokenizer] = (len(tokenizer), definition)
    except TypeError:  # an object that takes no weak reference (a test's fake tokenizer) is hashed every time
        pass
    return definition


def tokenizer_identity(tokenizer) -> str:
    definition = definition_hash(tokenizer)
    return Hasher.hash([type(tokenizer).__name__, definition, tokenizer.model_max_length, tokenizer.padding_side,
                        tokenizer.truncation_side, getattr(tokenizer, "pad_token", None)])


def length_stats(lengths: np.ndarray, limit: int) -> dict:
    if not len(lengths):
        return {}
    p = np.percentile(lengths, [50, 90, 95, 99])
    return {
        "p50": int(p[0]), "p90": int(p[1]), "p95": int(p[2]), "p99": int(p[3]), "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 1), "truncated": round(float((lengths > limit).mean()), 4),
    }


def pad_with_eos(tokenizer) -> str | None:
    """GPT-style tokenizers (GPT-2, Llama, Qwen) have no pad token; batches need one, and the attention mask
    (or -100 labels) keeps it out of attention and the loss, so end-of-text serves. Returns the token now used
    for padding when it had to be chosen here, else None."""
    if getattr(tokenizer, "pad_token", "") is not None:  # has one (or is no transformers tokenizer at all)
        return None
    if tokenizer.eos_token is None:
        raise RecipeError(
            f"tokenizer: {type(tokenizer).__name__} has neither a pad nor an end-of-text token, so batches cannot be padded; "
            "use a tokenizer that defines one (tokenizer.name_or_path)"
        )
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.eos_token
