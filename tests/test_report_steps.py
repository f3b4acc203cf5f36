"""The data report accounts for every row: each change in a split's row count is a row of its own."""

import json

from conftest import load_splits

from recipekit.data.report import format_report
from recipekit.data.steps import STEPS
from recipekit.heads import build_head
from recipekit.recipe.data import DataArgs


def csv(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def rows_of(report, split):
    return [r for r in report["steps"] if r["split"] == split]


def test_max_samples_are_report_rows_and_the_rows_add_up_to_the_sizes(tmp_path):
    train = csv(tmp_path, "t.csv", ["text,label"] + [f"row {i},{'ab'[i % 2]}" for i in range(50)] + ["row 0,a"] * 3)
    val = csv(tmp_path, "v.csv", ["text,label"] + [f"v {i},{'ab'[i % 2]}" for i in range(30)])
    args = DataArgs(train_file=train, validation_file=val, max_train_samples=20, max_eval_samples=12)
    data = load_splits(args, [STEPS["dedupe"]()], seed=0)
    train_rows = rows_of(data.report, "train")
    assert [(r["step"], r["rows_in"], r["rows_out"]) for r in train_rows] == [
        ("load", 53, 53), ("checks", 53, 53), ("dedupe", 53, 50), ("sample", 50, 20),
    ]
    assert train_rows[-1]["removed"] == 30
    assert train_rows[-1]["reason"] == "data.max_train_samples: 20 seeded random rows kept"
    assert rows_of(data.report, "validation")[-1] == {
        "step": "sample", "split": "validation", "rows_in": 30, "rows_out": 12, "removed": 18,
        "reason": "data.max_eval_samples: 12 seeded random rows kept",
    }
    # Each split's last row ends at the size trained or scored on, and its label counts sum to it.
    for split, size in data.report["sizes"].items():
        assert rows_of(data.report, split)[-1]["rows_out"] == size == sum(data.report["labels"][split].values())
    assert "  sample               train             50        20       30 removed  data.max_train_samples" in format_report(data.report)
    json.dumps(data.report)  # data_report.json holds the same rows


def test_a_limit_above_the_split_size_adds_no_row(tmp_path):
    train = csv(tmp_path, "t.csv", ["text,label"] + [f"row {i},{'ab'[i % 2]}" for i in range(10)])
    data = load_splits(DataArgs(train_file=train, max_train_samples=100), [], seed=0)
    assert [r["step"] for r in data.report["steps"]] == ["load", "checks"]


def test_an_empty_target_is_a_dropped_row_for_every_head(tmp_path):
    """Regression read an empty cell as a fatal non-number while classification dropped it: one rule now."""
    train = csv(tmp_path, "t.csv", ["text,score", "a,1.5", "b,", "c,2.0", "d,3.0", "e, "])
    for head, column in (("regression", "score"), ("sequence_classification", "score")):
        args = DataArgs(train_file=train, label_column=column)
        data = load_splits(args, [], seed=0, head=build_head(head, data=args))
        checks = rows_of(data.report, "train")[1]
        assert (checks["rows_in"], checks["rows_out"], checks["reasons"]) == (5, 3, {"missing label": 2}), head
        assert data.report["notes"][0] == f"train: empty label cell in column 'score' at {train} line 3 and 1 more; dropped as missing label"
