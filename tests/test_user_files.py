"""A new user's own files: text in another encoding than UTF-8, `;`-separated spreadsheet exports, empty gold
cells in a file to evaluate, and a recipe section written as a scalar."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import load_splits, run_cli
from test_joins import trained_run, write

from recipekit.recipe.build import build_recipe

ROWS = [("café très bon", "pos"), ("naïve, mais mauvais", "neg"), ("à éviter", "neg"), ("génial", "pos")]


def csv_bytes(rows, delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    lines = [f"text{delimiter}label"] + [f'"{t}"{delimiter}{label}' for t, label in rows]
    return ("\n".join(lines) + "\n").encode(encoding)


def data_recipe(tmp_path, data: dict):
    return build_recipe({"model": {"name_or_path": "x"}, "data": data, "training": {"output_dir": str(tmp_path / "out")}})


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_text_that_is_not_utf8_is_refused_naming_file_line_and_key(tmp_path, tiny_model, capsys):
    path = tmp_path / "latin.csv"
    path.write_bytes(csv_bytes(ROWS, encoding="cp1252"))
    recipe = {"model": {"name_or_path": tiny_model}, "data": {"train_file": str(path)},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "report_to": "none"}}
    assert run_cli([write(recipe, tmp_path / "recipe.yaml")]) == 2
    error = one_error(capsys)
    # Line 2 holds "café": its é is the single byte e9 in cp1252, never valid UTF-8 there.
    assert f"{path} line 2: byte(s) e9 are not utf-8 text; set data.encoding" in error
    assert not (tmp_path / "run").exists()  # refused while reading, before the run folder is made


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16"])
def test_data_encoding_reads_the_text_exactly(tmp_path, encoding):
    path = tmp_path / "train.csv"
    path.write_bytes(csv_bytes(ROWS, encoding=encoding))
    recipe = data_recipe(tmp_path, {"train_file": str(path), "encoding": encoding})
    data = load_splits(recipe.data, [], seed=0)
    assert sorted(data.splits["train"]["text"]) == sorted(t for t, _ in ROWS)
    checks = next(r for r in data.report["steps"] if r["step"] == "checks")
    assert checks["rows_out"] == 4 and "reasons" not in checks


def test_a_semicolon_export_is_read_by_its_header_and_the_guess_is_printed(tmp_path, capsys):
    path = tmp_path / "excel.csv"
    path.write_bytes(csv_bytes(ROWS, delimiter=";"))  # row 2 quotes a comma inside its text
    data = load_splits(data_recipe(tmp_path, {"train_file": str(path)}).data, [], seed=0)
    assert sorted(data.splits["train"]["text"]) == sorted(t for t, _ in ROWS)
    assert f"{path}: fields separated by ';' (guessed from the header; data.delimiter sets it)" in capsys.readouterr().err
    # Said, not guessed: the header is then one column named "text;label", and the recipe's column is absent.
    recipe = data_recipe(tmp_path, {"train_file": str(path), "delimiter": ","})
    with pytest.raises(Exception, match="column 'text' is not in the train split; columns: text;label"):
        load_splits(recipe.data, [], seed=0)


def test_a_comma_file_is_not_guessed_at(tmp_path, capsys):
    path = tmp_path / "plain.csv"
    path.write_bytes(csv_bytes([("a; b | c", "pos"), ("d;e", "neg")]))
    data = load_splits(data_recipe(tmp_path, {"train_file": str(path)}).data, [], seed=0)
    assert data.splits["train"]["text"] == ["a; b | c", "d;e"] and "guessed" not in capsys.readouterr().err


@pytest.mark.parametrize("data, message", [
    ({"encoding": "utf9"}, "data.encoding: 'utf9' is not a text encoding Python knows"),
    ({"delimiter": ";;"}, "data.delimiter: ';;' must be one character"),
    ({"delimiter": '"'}, "data.delimiter: '\"' must be one character other than a quote"),
])
def test_bad_encoding_and_delimiter_keys_are_refused(tmp_path, data, message):
    path = tmp_path / "t.csv"
    path.write_bytes(csv_bytes(ROWS))
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace("'", "'")):
        data_recipe(tmp_path, {"train_file": str(path), **data})


def test_predict_and_evaluate_read_another_encoding_and_delimiter(request, tmp_path_factory, tmp_path, capsys):
    run = trained_run(request, tmp_path_factory, "sequence_classification")
    frame = pd.read_csv(run.test, dtype=str, keep_default_na=False)
    frame["text"] = [f"{t} café" for t in frame["text"]]
    plain, excel = tmp_path / "plain.csv", tmp_path / "excel.csv"
    frame.to_csv(plain, index=False)
    excel.write_bytes(frame.to_csv(index=False, sep=";").encode("cp1252"))
    assert run_cli(["predict", run.dir, "--input", excel, "--output", tmp_path / "p.csv"]) == 2
    assert "--encoding" in one_error(capsys)
    for out, source, flags in ((tmp_path / "want.csv", plain, []), (tmp_path / "got.csv", excel, ["--encoding", "cp1252"])):
        assert run_cli(["predict", run.dir, "--input", source, "--output", out, *flags]) == 0
    got, want = pd.read_csv(tmp_path / "got.csv", dtype=str), pd.read_csv(tmp_path / "want.csv", dtype=str)
    assert got["text"].tolist() == frame["text"].tolist() and got.equals(want)
    scores = []
    for source, flags in ((plain, []), (excel, ["--encoding", "cp1252", "--delimiter", ";"])):
        out = tmp_path / f"{source.stem}.json"
        assert run_cli(["evaluate", run.dir, "--input", source, "--metrics", out, *flags]) == 0
        scores.append(json.loads(out.read_text())["metrics"])
    assert scores[0] == scores[1] and scores[0]["accuracy"] >= 0.0


def test_evaluate_drops_and_counts_rows_with_an_empty_gold_label(request, tmp_path_factory, tmp_path, capsys):
    run = trained_run(request, tmp_path_factory, "sequence_classification")
    frame = pd.read_csv(run.test, dtype=str, keep_default_na=False)
    holed = frame.copy()
    holed.loc[[2, 5], "label"] = ["", "  "]
    holed.to_csv(tmp_path / "holed.csv", index=False)
    frame.drop(index=[2, 5]).to_csv(tmp_path / "kept.csv", index=False)
    scores = []
    for name in ("holed", "kept"):
        out = tmp_path / f"{name}.json"
        assert run_cli(["evaluate", run.dir, "--input", tmp_path / f"{name}.csv", "--metrics", out]) == 0
        scores.append(json.loads(out.read_text()))
    assert scores[0]["rows"] == scores[1]["rows"] == 8 and scores[0]["metrics"] == scores[1]["metrics"]
    err = capsys.readouterr().err
    # Row 2 of the file (0-based) is on line 4: the header is line 1.
    assert (f"evaluate: 2 of 10 rows have an empty gold label in column 'label' (first at {tmp_path / 'holed.csv'} line 4 "
            "and 1 more); dropped as missing label") in err


@pytest.mark.parametrize("section", ["model", "tokenizer", "data", "training", "regularization", "batching", "sanity", "sweep"])
@pytest.mark.parametrize("value", ["x", 3, ["a"]])
def test_a_section_that_is_not_a_mapping_is_named_as_such(tmp_path, section, value):
    raw = {"model": {"name_or_path": "x"}, "data": {"train_file": "missing.csv"}, "training": {"output_dir": str(tmp_path)}}
    raw[section] = value
    with pytest.raises(Exception) as e:
        build_recipe(raw)
    assert e.value.problems == [f"{section}: the section must be a mapping of keys to values (e.g. {section}: {{key: value}}), got {value!r}"
                                if isinstance(value, str) else
                                f"{section}: the section must be a mapping of keys to values (e.g. {section}: {{key: value}}), got {value}"]


def test_json_lines_in_another_encoding_are_read_with_data_encoding(tmp_path, capsys):
    path = tmp_path / "train.jsonl"
    path.write_bytes("".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n" for t, label in ROWS).encode("latin-1"))
    with pytest.raises(Exception, match=f"{path} line 1: byte\\(s\\) e9 are not utf-8 text; set data.encoding"):
        load_splits(data_recipe(tmp_path, {"train_file": str(path)}).data, [], seed=0)
    data = load_splits(data_recipe(tmp_path, {"train_file": str(path), "encoding": "latin-1"}).data, [], seed=0)
    assert data.splits["train"]["text"] == [t for t, _ in ROWS]
