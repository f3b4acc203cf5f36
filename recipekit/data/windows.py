"""Long documents as windows (`data.long_text: chunks`): a text over max_length becomes overlapping windows, each
one example carrying the document's label, and the windows' outputs are pooled back into one per document
before any score, threshold, table or prediction sees them.

The windows of an evaluated or predicted split carry a `document` column (the row they came from). The Trainer's
WindowPooling part (trainer/windows.py) takes that column off before batching, runs its evaluation loop on the
windows, and returns one row of logits per document (the windows' mean, or their per-output max) with the
document's label, in document order. Loss stays the windows' mean: it is what was optimised.
"""

from __future__ import annotations

import numpy as np

DOCUMENT = "document"


def windows(tokenizer, texts: list[str], limit: int, overlap: int) -> tuple[dict, list[int]]:
    """The windows of `texts` (each at most `limit` tokens with its special tokens, consecutive windows sharing
    `overlap` tokens) and, for each window, the index of its text: the tokenizer's own overflow handling."""
    out = tokenizer(texts, truncation=True, max_length=limit, stride=overlap, return_overflowing_tokens=True, verbose=False)
    source = list(out.pop("overflow_to_sample_mapping"))
    return dict(out), source


def pool(values: np.ndarray, documents: np.ndarray, how: str) -> np.ndarray:
    """One row per document (in document order) from the rows of its windows: their mean or per-column max."""
    ids, where = np.unique(documents, return_inverse=True)
    values = np.asarray(values, dtype=np.float64)
    shape = (len(ids), *values.shape[1:])
    if how == "max":
        out = np.full(shape, -np.inf)
        np.maximum.at(out, where, values)
    else:
        out = np.zeros(shape)
        np.add.at(out, where, values)
        out /= np.bincount(where, minlength=len(ids)).reshape(-1, *[1] * (values.ndim - 1))
    return out.astype(np.float32)


def first(values: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """Each document's label: its first window's (every window of a document carries the same one)."""
    _, at = np.unique(documents, return_index=True)
    return np.asarray(values)[at]
