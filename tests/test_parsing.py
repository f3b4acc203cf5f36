"""Data and recipes are read as written: no guessed missing values, no numbers lost from text, no silent
"last key wins", true line numbers, and held-out rows that are not copies of training rows."""

import json

import pandas as pd
import pytest
import yaml
from conftest import load_splits

from recipekit.core.errors import RecipeError
from recipekit.core.safety import MAX_YAML_VALUES, parse_yaml, redact_env
from recipekit.data.checks import place
from recipekit.recipe.build import build_recipe


def recipe_for(tmp_path, **data):
    return build_recipe({"model": {"name_or_path": "x"}, "data": data, "training": {"output_dir": str(tmp_path / "out")}})


@pytest.mark.parametrize("name", ["NA", "None", "NaN", "null", "n/a", "N/A", "nan", "#N/A"])
def test_label_classes_named_like_missing_values_are_classes(tmp_path, name):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"text {i},{[name, 'other'][i % 2]}\n" for i in range(8)))
    r = recipe_for(tmp_path, train_file=str(path))
    data = load_splits(r.data, r.preprocess, seed=0)
    assert sorted(data.labels) == sorted([name, "other"])
    assert len(data.splits["train"]) == 8


def test_an_empty_label_cell_is_named_with_its_line_and_ints_stay_ints(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\na,0\nb,1\nc,\nd,1\ne,0\n")
    val = tmp_path / "val.csv"
    val.write_text("text,label\nx,1\ny,0\n")
    r = recipe_for(tmp_path, train_file=str(train), validation_file=str(val))
    data = load_splits(r.data, r.preprocess, seed=0)
    assert data.labels == ["0", "1"]  # not 0.0 and 1.0, and the validation 1 is the training 1
    assert f"train: empty label cell in column 'label' at {train} line 4; dropped as missing label" in data.report["notes"]
    checks = next(row for row in data.report["steps"] if row["step"] == "checks" and row["split"] == "train")
    assert checks["reasons"] == {"missing label": 1}


def test_numbers_in_a_text_column_are_text(tmp_path):
    csv_file = tmp_path / "numbers.csv"
    csv_file.write_text("text,label\n123,a\n456,b\n789,a\n12.5,b\n")
    r = recipe_for(tmp_path, train_file=str(csv_file))
    data = load_splits(r.data, r.preprocess, seed=0)
    assert sorted(data.splits["train"]["text"]) == ["12.5", "123", "456", "789"]
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in [("good", "a"), (5, "b"), (2.5, "a"), ("bad", "b")]))
    r = recipe_for(tmp_path, train_file=str(jsonl))
    data = load_splits(r.data, r.preprocess, seed=0)
    assert sorted(data.splits["train"]["text"]) == ["2.5", "5", "bad", "good"]


def test_line_numbers_count_quoted_multi_line_fields(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood,pos\nbad,neg\n")
    val = tmp_path / "val.csv"
    val.write_text('text,label\n"a review\nover three\nlines",pos\nfine,meh\n')
    r = recipe_for(tmp_path, train_file=str(train), validation_file=str(val))
    with pytest.raises(RecipeError, match=f"{val} line 5: column 'label': label not seen in training: 'meh'"):
        load_splits(r.data, r.preprocess, seed=0)
    assert place(r.data, "validation", 0) == f"{val} line 2"


def test_a_utf16_spreadsheet_export_is_read(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\ncafé film,pos\nbad film,neg\n".encode("utf-16"))
    r = recipe_for(tmp_path, train_file=str(path))
    data = load_splits(r.data, r.preprocess, seed=0)
    assert sorted(data.splits["train"]["text"]) == ["bad film", "café film"]


def test_decimal_labels_as_classes_point_to_regression(tmp_path, capsys):
    path = tmp_path / "scores.csv"
    path.write_text("text,label\n" + "".join(f"text {i},{i * 0.37:.2f}\n" for i in range(20)))
    r = recipe_for(tmp_path, train_file=str(path))
    data = load_splits(r.data, r.preprocess, seed=0)
    assert len(data.labels) == 20
    err = capsys.readouterr().err
    assert "warning: data.label_column: 'label' holds 20 distinct decimal numbers in 20 training rows" in err
    assert "model.head: regression" in err


def test_interleave_carves_validation_per_source_before_repeating(tmp_path):
    small = tmp_path / "small.csv"
    pd.DataFrame({"text": [f"small {i}" for i in range(10)], "label": ["a", "b"] * 5}).to_csv(small, index=False)
    big = tmp_path / "big.csv"
    pd.DataFrame({"text": [f"big {i}" for i in range(60)], "label": ["a", "b"] * 30}).to_csv(big, index=False)
    r = recipe_for(tmp_path, sources=[{"file": str(small)}, {"file": str(big)}], mix="interleave", validation_split=0.2)
    data = load_splits(r.data, r.preprocess, seed=0)
    train, validation = set(data.splits["train"]["text"]), list(data.splits["validation"]["text"])
    assert len(validation) == 2 + 12 and len(set(validation)) == len(validation)  # a fifth of each source, once
    assert not train & set(validation)


def test_duplicate_yaml_keys_name_both_lines():
    with pytest.raises(yaml.YAMLError, match=r"key 'learning_rate' is given twice \(lines 2 and 3\)"):
        parse_yaml("training:\n  learning_rate: 1.0e-5\n  learning_rate: 3.0e-5\n")
    assert parse_yaml("a: &x {k: 1}\nb: *x\n") == {"a": {"k": 1}, "b": {"k": 1}}  # plain aliases still work


def test_alias_expansion_is_bounded():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    with pytest.raises(yaml.YAMLError, match=f"more than {MAX_YAML_VALUES:,} values"):
        parse_yaml(bomb)


def test_secret_environment_variables_are_redacted():
    assert redact_env({"HF_TOKEN": "x", "WANDB_API_KEY": "y", "PATH": "/bin"}) == {"HF_TOKEN": "<redacted>", "WANDB_API_KEY": "<redacted>", "PATH": "/bin"}


def test_custom_metrics_must_take_three_arguments_and_return_numbers(tmp_path, monkeypatch):
    from recipekit.core.schema import Problem
    from recipekit.evaluation import metrics

    (tmp_path / "parsing_metrics.py").write_text("def verdict(y, p, probs):\n    return 'good'\n\ndef score(y, p, probs):\n    return {'hits': 3}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Problem, match="is not a function of"):
        metrics.resolve("json:loads")
    assert metrics.resolve("parsing_metrics:score")(None, None, None, []) == {"hits": 3}
    with pytest.raises(RecipeError, match="'parsing_metrics:verdict' returned 'good'; a metric returns a number or a dict of numbers"):
        metrics.resolve("parsing_metrics:verdict")(None, None, None, [])
