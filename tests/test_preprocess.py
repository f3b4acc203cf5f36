"""Each preprocessing step on a few rows: what it changes, what it removes, and the counts it reports."""

import pytest
from datasets import Dataset, DatasetDict

from recipekit.errors import RecipeError
from recipekit.preprocess import Dedupe, DropEmpty, RegexReplace, run_pipeline


def rows(texts, labels=None):
    return Dataset.from_dict({"text": texts, "label": labels or [0] * len(texts)})


def test_regex_replace_counts_changed_rows():
    ds, changed = RegexReplace(pattern=r"[^a-zA-Z\s]", replacement="")(rows(["it's great!", "fine", None]), ["text"])
    assert ds["text"] == ["its great", "fine", None]
    assert changed == 1


def test_regex_replace_touches_both_columns_of_a_pair():
    ds = Dataset.from_dict({"a": ["x1", "y"], "b": ["z", "w2"]})
    out, changed = RegexReplace(pattern=r"\d", replacement="#")(ds, ["a", "b"])
    assert out["a"] == ["x#", "y"] and out["b"] == ["z", "w#"]
    assert changed == 2


def test_dedupe_keeps_first_occurrence_and_counts_exactly():
    ds, removed = Dedupe()(rows(["a", "b", "a", "A", "b", "c"], [0, 1, 1, 0, 1, 0]), ["text"])
    assert ds["text"] == ["a", "b", "A", "c"]
    assert ds["label"] == [0, 1, 0, 0]
    assert removed == 2
    _, removed = Dedupe(ignore_case=True)(rows(["a", "b", "a", "A", "b", "c"]), ["text"])
    assert removed == 3


def test_dedupe_on_pairs_compares_both_texts():
    ds = Dataset.from_dict({"a": ["q", "q", "q"], "b": ["x", "y", "x"]})
    out, removed = Dedupe()(ds, ["a", "b"])
    assert removed == 1 and out["b"] == ["x", "y"]


def test_drop_empty_removes_missing_and_whitespace_only():
    ds, removed = DropEmpty()(rows(["ok", "", "  \t", None, "fine "]), ["text"])
    assert ds["text"] == ["ok", "fine "]
    assert removed == 3


def test_pipeline_reports_each_step_and_split_and_respects_splits_option():
    splits = DatasetDict({"train": rows(["a!", "a!", " "]), "test": rows(["b!", "b!"])})
    steps = [RegexReplace(pattern="!"), DropEmpty(), Dedupe(splits=["train"])]
    out, report = run_pipeline(steps, splits, ["text"])
    assert out["train"]["text"] == ["a"] and out["test"]["text"] == ["b", "b"]
    assert report == [
        {"step": "regex_replace", "split": "train", "rows_in": 3, "rows_out": 3, "changed": 2},
        {"step": "regex_replace", "split": "test", "rows_in": 2, "rows_out": 2, "changed": 2},
        {"step": "drop_empty", "split": "train", "rows_in": 3, "rows_out": 2, "removed": 1},
        {"step": "drop_empty", "split": "test", "rows_in": 2, "rows_out": 2, "removed": 0},
        {"step": "dedupe", "split": "train", "rows_in": 2, "rows_out": 1, "removed": 1},
    ]


def test_pipeline_that_empties_a_split_names_the_step():
    with pytest.raises(RecipeError, match=r"preprocess\[1\] drop_empty removed every row of split 'train' \(2 rows in\)"):
        run_pipeline([RegexReplace(pattern=".", replacement=""), DropEmpty()], DatasetDict({"train": rows(["ab", "c"])}), ["text"])
