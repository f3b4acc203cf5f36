"""Loading splits: columns, label maps, carving a validation set, subsets, unreadable files."""

from collections import Counter

import pytest
from conftest import load_splits

from recipekit.core.errors import RecipeError
from recipekit.recipe.data import DataArgs


def csv(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_int_labels_of_any_range_map_to_ids_in_numeric_order(tmp_path):
    train = csv(tmp_path, "t.csv", ["text,label"] + [f"row {i},{[4, 1, 3, 2, 10][i % 5]}" for i in range(20)])
    data = load_splits(DataArgs(train_file=train), [], seed=0)
    assert data.labels == ["1", "2", "3", "4", "10"]  # numeric, not string, order
    ids = data.splits["train"]["labels"]
    assert ids[:5] == [3, 0, 2, 1, 4]
    assert data.splits["train"].features["labels"].names == data.labels


def test_string_labels_sorted_and_test_split_without_labels_allowed(tmp_path):
    train = csv(tmp_path, "t.csv", ["text,label", "a,pos", "b,neg", "c,mixed", "d,pos"])
    test = csv(tmp_path, "x.csv", ["text", "e", "f"])
    data = load_splits(DataArgs(train_file=train, test_file=test), [], seed=0)
    assert data.labels == ["mixed", "neg", "pos"]
    assert "labels" not in data.splits["test"].column_names
    assert data.report["sizes"] == {"train": 4, "test": 2}
    assert data.report["labels"]["train"] == {"mixed": 1, "neg": 1, "pos": 2}


def test_missing_columns_list_the_columns_that_exist(tmp_path):
    train = csv(tmp_path, "t.csv", ["review,stars", "a,1", "b,2"])
    with pytest.raises(RecipeError) as e:
        load_splits(DataArgs(train_file=train), [], seed=0)
    assert e.value.problems == [
        "data.text_columns: column 'text' is not in the train split; columns: review, stars",
        "data.label_column: column 'label' is not in the train split; columns: review, stars",
    ]


def test_single_class_training_set_is_refused(tmp_path):
    train = csv(tmp_path, "t.csv", ["text,label", "a,pos", "b,pos"])
    with pytest.raises(RecipeError, match=r"the training split has a single class \('pos'\)"):
        load_splits(DataArgs(train_file=train), [], seed=0)


def test_validation_labels_unseen_in_training_are_refused(tmp_path):
    train = csv(tmp_path, "t.csv", ["text,label", "a,pos", "b,neg"])
    val = csv(tmp_path, "v.csv", ["text,label", "c,pos", "d,meh", "e,meh"])
    with pytest.raises(RecipeError) as e:
        load_splits(DataArgs(train_file=train, validation_file=val), [], seed=0)
    # The first such row is named by file and line (the header is line 1), with the count of its kind.
    assert e.value.problems == [
        (f"data.label_column: {val} line 3: column 'label': label not seen in training: 'meh' (2 rows like it in validation); "
        "training labels: neg, pos")
    ]


def test_validation_split_is_stratified_and_seeded(tmp_path):
    lines = ["text,label"] + [f"text {i},{'a' if i % 4 else 'b'}" for i in range(400)]  # 300 a, 100 b
    args = DataArgs(train_file=csv(tmp_path, "t.csv", lines), validation_split=0.2)
    first = load_splits(args, [], seed=7)
    assert first.report["sizes"] == {"train": 320, "validation": 80}
    assert first.report["labels"]["validation"] == {"a": 60, "b": 20}
    assert load_splits(args, [], seed=7).splits["validation"]["text"] == first.splits["validation"]["text"]
    assert load_splits(args, [], seed=8).splits["validation"]["text"] != first.splits["validation"]["text"]


def test_max_samples_draw_a_seeded_random_subset_not_the_first_rows(tmp_path):
    # Sorted by label, as many sources are: the first 100 rows would all be one class.
    lines = ["text,label"] + [f"neg {i},0" for i in range(500)] + [f"pos {i},1" for i in range(500)]
    args = DataArgs(train_file=csv(tmp_path, "t.csv", lines), max_train_samples=100)
    data = load_splits(args, [], seed=0)
    counts = Counter(data.splits["train"]["labels"])
    assert sum(counts.values()) == 100
    assert 30 < counts[0] < 70


def test_ragged_csv_names_the_file(tmp_path):
    train = csv(tmp_path, "t.csv", ["text,label", "a,1", "b,0,extra,fields"])
    with pytest.raises(RecipeError, match=r"t.csv: cannot read as csv: "):
        load_splits(DataArgs(train_file=train), [], seed=0)


def test_jsonl_tsv_and_parquet_load_the_same(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [1, 0, 1]})
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    for name in ("t.jsonl", "t.tsv", "t.parquet"):
        data = load_splits(DataArgs(train_file=str(tmp_path / name)), [], seed=0)
        assert data.splits["train"]["text"] == ["a", "b", "c"] and data.splits["train"]["labels"] == [1, 0, 1]
