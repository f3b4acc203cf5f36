"""Each preprocessing step on a few rows, the pipeline on bad input, caching, and exact counts on real data."""

import json

import pandas as pd
import pytest
from conftest import load_splits, run_cli
from datasets import Dataset

from recipekit.core.errors import RecipeError
from recipekit.data.report import format_report
from recipekit.data.steps import STEPS, Context, Step, register
from recipekit.heads import HEADS
from recipekit.heads.base import register as register_head
from recipekit.recipe.build import build_recipe


def apply(name, rows, split="train", ctx=None, **options):
    """Run one registered step on an in-memory split; return (rows as dicts, count, details)."""
    step = STEPS[name](**options)
    assert step.problems() == []
    ds = Dataset.from_list(rows)
    ctx = ctx or Context(["text"], "label", seed=0)
    ctx.splits = ctx.splits or {split: ds}
    out, count, *details = step(ds, ctx)
    return out.to_list(), count, (details[0] if details else {})


def test_a_second_class_under_a_taken_name_is_refused_and_the_first_stays():
    """One registry helper behind steps and heads: a taken name would otherwise silently replace a step in every recipe."""
    with pytest.raises(ValueError, match=r"^preprocessing step 'dedupe' is already registered \(recipekit\.data\.steps\.duplicates\.Dedupe\)$"):
        register("dedupe")(type("Other", (Step,), {}))
    with pytest.raises(ValueError, match=r"^head 'binary' is already registered"):
        register_head("binary")(type("Other", (), {}))
    assert STEPS["dedupe"].__name__ == "Dedupe" and STEPS["dedupe"].name == "dedupe" and HEADS["binary"].name == "binary"


def texts_of(rows):
    return [r["text"] for r in rows]


def rows_of(*texts, labels=None):
    return [{"text": t, "label": (labels[i] if labels else "a")} for i, t in enumerate(texts)]


@pytest.mark.parametrize(
    "name, options, before, after",
    [
        ("regex_replace", {"pattern": "[^a-zA-Z\\s]"}, "it's 10/10!", "its "),
        ("strip_html", {}, "Great.<br /><br />A <i>classic</i>.<!-- x -->", "Great.  A classic."),
        ("unescape_html", {}, "Tom &amp; Jerry &#39;93 &quot;ok&quot;", "Tom & Jerry '93 \"ok\""),
        ("normalize_unicode", {"form": "NFKC"}, "ﬁlm ＡＢＣ café", "film ABC café"),
        ("normalize_unicode", {"form": "NFD"}, "café", "cafe\u0301"),
        ("lowercase", {}, "The FILM", "the film"),
        ("collapse_whitespace", {}, "  a \t b\n\nc  ", "a b c"),
        ("remove_urls", {}, "see https://x.org/a?b=1 and www.imdb.com now", "see  and  now"),
        (
            "mask_pii",
            {},
            "mail jo.doe+x@mail.co.uk or call +1 (555) 123-4567, see http://a.io; born 1999, $12,000",
            "mail [EMAIL] or call [PHONE], see [URL]; born 1999, $12,000",
        ),
        ("mask_pii", {"kinds": ["email"]}, "a@b.com 555 123 4567", "[EMAIL] 555 123 4567"),
    ],
)
def test_cleaning_steps(name, options, before, after):
    rows, changed, _ = apply(name, rows_of(before, "plain"), **options)
    assert texts_of(rows) == [after, "plain"]
    assert changed == 1


def test_drop_empty_and_filter_length():
    rows, removed, _ = apply("drop_empty", rows_of("a", "", "  \t", "b"))
    assert (texts_of(rows), removed) == (["a", "b"], 2)
    data = rows_of("one", "one two three", "one two three four five")
    assert apply("filter_length", data, unit="words", min=2, max=3)[:2] == (rows_of("one two three"), 2)
    assert apply("filter_length", data, unit="chars", max=5)[1] == 2


def test_filter_length_in_tokens(minilm_path):
    from transformers import AutoTokenizer

    ctx = Context(["text"], "label", tokenizer=AutoTokenizer.from_pretrained(minilm_path))
    rows, removed, _ = apply("filter_length", rows_of("good", "unbelievably overwrought"), ctx=ctx, unit="tokens", min=2)
    assert (texts_of(rows), removed) == (["unbelievably overwrought"], 1)  # 'un ##bel ##ie ##va ##bly ...'


def test_filter_labels():
    data = rows_of("a", "b", "c", labels=["pos", "neg", "neutral"])
    assert texts_of(apply("filter_labels", data, keep=["pos", "neg"])[0]) == ["a", "b"]
    assert texts_of(apply("filter_labels", data, drop=["neutral"])[0]) == ["a", "b"]
    assert STEPS["filter_labels"]().problems() == ["keep / drop: give exactly one list of labels"]


def test_dedupe_keeps_first_and_normalises_on_request():
    data = rows_of("A  film.", "a film", "A  film.", "a film.", labels=["1", "2", "3", "4"])
    rows, removed, _ = apply("dedupe", data)
    assert ([r["label"] for r in rows], removed) == (["1", "2", "4"], 1)
    rows, removed, _ = apply("dedupe", data, ignore_case=True, ignore_whitespace=True, ignore_punctuation=True)
    assert ([r["label"] for r in rows], removed) == (["1"], 3)


def test_near_dedupe_drops_near_copies_only():
    base = "the plot is thin but the acting is superb and the music stays with you long after the credits roll"
    data = rows_of(base, base.replace("superb", "superb,"), "a completely different review of another film with its own words", base + " indeed")
    rows, removed, _ = apply("near_dedupe", data, threshold=0.7, num_perm=256)
    assert texts_of(rows) == [base, data[2]["text"]]
    assert removed == 2


def test_label_conflicts_policies():
    data = rows_of("x", "x", "x", "y", "y", "z", labels=["pos", "pos", "neg", "pos", "neg", "neg"])
    rows, removed, details = apply("label_conflicts", data, policy="drop")
    assert (texts_of(rows), removed) == (["z"], 5)
    assert details == {"texts_with_several_labels": 2, "rows_involved": 5, "policy": "drop"}
    rows, removed, _ = apply("label_conflicts", data, policy="majority")  # x: pos wins 2-1; y: a tie, dropped
    assert [(r["text"], r["label"]) for r in rows] == [("x", "pos"), ("x", "pos"), ("z", "neg")]
    assert apply("label_conflicts", data, policy="keep")[1] == 0


def test_leakage_removes_evaluation_rows_seen_in_train():
    train = Dataset.from_list(rows_of("seen text here", "another training review about a film"))
    ctx = Context(["text"], "label", splits={"train": train})
    test = rows_of("seen text here", "Seen text here", "another training review about a film!", "new")
    rows, removed, details = apply("leakage", test, split="test", ctx=ctx)
    assert (texts_of(rows), removed) == (texts_of(test[1:]), 1)
    ctx.splits = {"train": train}
    rows, removed, details = apply("leakage", test, split="test", ctx=ctx, ignore_case=True, near=True, threshold=0.5, ngram=2)
    assert (texts_of(rows), removed, details["exact"], details["near"]) == (["new"], 3, 2, 1)
    assert STEPS["leakage"]().applies_to("test") and not STEPS["leakage"]().applies_to("train")


def test_balance_over_and_under_sampling_is_seeded():
    data = rows_of(*"abcdef", labels=["p", "p", "p", "p", "n", "n"])
    rows, added, _ = apply("balance", data)
    assert (sorted(r["label"] for r in rows).count("n"), added) == (4, 2)
    rows, removed, _ = apply("balance", data, method="undersample")
    assert (sorted(r["label"] for r in rows), removed) == (["n", "n", "p", "p"], 2)
    assert apply("balance", data, method="undersample")[0] == rows  # same seed, same rows
    assert STEPS["balance"](splits=["validation"]).problems()[0].startswith("splits: ['validation'] - this step changes")


def test_augment_adds_seeded_copies_to_train_only():
    data = rows_of("one two three four five six seven eight nine ten", "tiny", labels=["p", "n"])
    rows, added, _ = apply("augment", data, copies=2, rate=0.2)
    assert added == 4 and len(rows) == 6
    assert rows[0] == data[0] and rows[3] == data[1] and rows[4] == data[1]  # one word: nothing to change
    assert all(r["label"] == "p" for r in rows[:3]) and rows[1]["text"] != data[0]["text"]
    assert apply("augment", data, copies=2, rate=0.2)[0] == rows
    assert not STEPS["augment"]().applies_to("validation")


def write_csv(path, frame):
    pd.DataFrame(frame).to_csv(path, index=False)
    return str(path)


def data_recipe(tmp_path, data: dict, steps=None):
    return build_recipe({"model": {"name_or_path": "x"}, "data": data, "preprocess": steps or [], "training": {"output_dir": str(tmp_path / "out")}})


def test_bad_input_is_reported_and_the_run_goes_on(tmp_path):
    path = tmp_path / "bad.csv"
    rows = ["text,label", "good film,pos", ",neg", "   ,pos", "no label,", "ok film,1", "bad film,neg", f"{'x' * 5_000_000},pos"]
    path.write_bytes(("\n".join(rows) + "\n").encode() + "caf\ufffd film,neg\n".encode())  # text damaged before it was saved
    recipe = data_recipe(tmp_path, {"train_file": str(path)})
    data = load_splits(recipe.data, recipe.preprocess, seed=0)
    checks = next(r for r in data.report["steps"] if r["step"] == "checks")
    assert checks["rows_in"] == 8 and checks["rows_out"] == 4
    assert checks["reasons"] == {
        "missing or empty text": 2,
        "missing label": 1,
        "text over data.max_chars (1,000,000 characters)": 1,
        "kept: holds U+FFFD, characters lost before the file was written": 1,
    }
    assert data.report["notes"] == [
        f"train: empty label cell in column 'label' at {path} line 5; dropped as missing label",
        "train: the label column mixes numbers (1 rows) and words (6 rows); all are compared as text",
    ]
    assert data.labels == ["1", "neg", "pos"]
    assert "missing label: 1" in format_report(data.report)


def test_mixed_type_json_labels_are_compared_as_text(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n{"text": "c", "label": 1}\n')
    recipe = data_recipe(tmp_path, {"train_file": str(path)})
    data = load_splits(recipe.data, recipe.preprocess, seed=0)
    assert data.labels == ["1", "pos"] and data.report["notes"][0].startswith("train: the label column mixes numbers (2 rows)")


def test_a_step_that_removes_every_row_is_named(tmp_path):
    path = write_csv(tmp_path / "t.csv", {"text": ["a", "b"], "label": ["x", "y"]})
    recipe = data_recipe(tmp_path, {"train_file": path}, [{"filter_labels": {"keep": ["z"]}}])
    with pytest.raises(RecipeError, match=r"preprocess\[0\] filter_labels removed every row of split 'train' \(2 rows in: label filtered out\)"):
        load_splits(recipe.data, recipe.preprocess, seed=0)


def test_sources_are_mapped_and_interleaved_by_weight(tmp_path):
    a = write_csv(tmp_path / "a.csv", {"sentence": [f"a{i}" for i in range(100)], "polarity": [i % 2 for i in range(100)]})
    b = write_csv(tmp_path / "b.csv", {"text": [f"b{i}" for i in range(100)], "label": ["0", "1"] * 50})
    sources = [{"file": a, "columns": {"sentence": "text", "polarity": "label"}, "weight": 3}, {"file": b, "weight": 1}]
    recipe = data_recipe(tmp_path, {"sources": sources, "mix": "concatenate"})
    data = load_splits(recipe.data, recipe.preprocess, seed=0)
    assert data.labels == ["0", "1"] and len(data.splits["train"]) == 200
    assert [s["share"] for s in data.report["sources"]] == [0.5, 0.5]
    recipe = data_recipe(tmp_path, {"sources": sources, "mix": "interleave"})
    shares = load_splits(recipe.data, recipe.preprocess, seed=0).report["sources"]
    # all_exhausted: sampling goes on until the light source is used up too, so the heavy one repeats.
    assert shares[0]["rows_used"] > 2 * shares[1]["rows_used"] >= 200


def test_sources_errors_name_the_key(tmp_path):
    a = write_csv(tmp_path / "a.csv", {"sentence": ["x"], "label": [1]})
    with pytest.raises(RecipeError) as e:
        data_recipe(tmp_path, {"sources": [{"file": a, "weight": 0}, {"file": a, "dataset": "x/y"}]})
    assert e.value.problems == ["data.sources[0].weight: 0.0 must be positive", "data.sources[1].file / dataset: give exactly one"]
    recipe = data_recipe(tmp_path, {"sources": [{"file": a, "columns": {"sentnce": "text"}}]})
    with pytest.raises(RecipeError, match=r"data.sources\[0\].columns: \['sentnce'\] not in a.csv; columns: sentence, label"):
        load_splits(recipe.data, [], seed=0)


def test_label_map_joins_sources_that_spell_labels_differently(tmp_path):
    imdb = write_csv(tmp_path / "imdb.csv", {"text": [f"review {i}" for i in range(6)], "label": ["neg", "pos"] * 3})
    sst2 = write_csv(tmp_path / "sst2.csv", {"sentence": [f"s {i}" for i in range(4)], "label": [0, 1, 1, 1]})
    sources = [
        {"file": imdb, "label_map": {"neg": "negative", "pos": "positive"}},
        {"file": sst2, "columns": {"sentence": "text"}, "label_map": {0: "negative", 1: "positive"}},
    ]
    data = load_splits(data_recipe(tmp_path, {"sources": sources}).data, [], seed=0)
    # Two classes, not four (neg, pos, 0, 1), with every row counted under its recipe label.
    assert data.labels == ["negative", "positive"]
    assert data.report["labels"]["train"] == {"negative": 4, "positive": 6}
    sources[1]["label_map"] = {0: "negative"}
    with pytest.raises(RecipeError) as e:
        load_splits(data_recipe(tmp_path, {"sources": sources}).data, [], seed=0)
    assert e.value.problems == ["data.sources[1].label_map: sst2.csv has label(s) '1' that the map does not name; it names '0'"]
    with pytest.raises(RecipeError) as e:
        data_recipe(tmp_path, {"sources": [{"file": imdb, "label_map": {"neg": ["a"]}}]})
    assert e.value.problems == ["data.sources[0].label_map: {'neg': ['a']} must map each label of this source to a label name (text or number)"]


def test_carving_is_stratified_and_seeded(tmp_path):
    path = write_csv(tmp_path / "t.csv", {"text": [f"t{i}" for i in range(200)], "label": ["a"] * 150 + ["b"] * 50})
    recipe = data_recipe(tmp_path, {"train_file": path, "validation_split": 0.1, "test_split": 0.2})
    data = load_splits(recipe.data, [], seed=1)
    assert data.report["sizes"] == {"train": 140, "validation": 20, "test": 40}
    assert data.report["labels"]["test"] == {"a": 30, "b": 10} and data.report["labels"]["validation"] == {"a": 15, "b": 5}
    again = load_splits(recipe.data, [], seed=1)
    assert again.splits["test"]["text"] == data.splits["test"]["text"]


def test_second_run_reuses_the_cache_and_changed_options_invalidate_it(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "t.csv", {"text": ["A b", "a B", "c <br />", "A b"], "label": ["x", "x", "y", "y"]})
    calls = []
    real = STEPS["dedupe"].keys
    monkeypatch.setattr(STEPS["dedupe"], "keys", lambda self, ds, cols: calls.append(1) or real(self, ds, cols))

    def run(steps):
        recipe = data_recipe(tmp_path, {"train_file": path}, steps)
        data = load_splits(recipe.data, recipe.preprocess, seed=0)
        return data.splits["train"]._fingerprint, data.splits["train"]["text"]

    steps = ["strip_html", {"dedupe": {"ignore_case": False}}]
    first = run(steps)
    assert run(steps) == first and len(calls) == 1  # the kept indices came from the cache
    changed = run(["strip_html", {"dedupe": {"ignore_case": True}}])
    assert changed[0] != first[0] and len(calls) == 2
    assert (first[1], changed[1]) == (["A b", "a B", "c  "], ["A b", "c  "])
    assert run([{"strip_html": {"splits": ["test"]}}, "dedupe"])[1] == ["A b", "a B", "c <br />"]


def test_data_only_prints_the_report_and_writes_nothing(tmp_path, tiny_model, capsys):
    path = write_csv(tmp_path / "t.csv", {"text": ["good film"] * 3 + ["bad film", "bad <b>film</b>", ""], "label": ["p", "p", "p", "n", "n", "n"]})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "model": {"name_or_path": tiny_model}, "data": {"train_file": path, "max_length": 3},
        "preprocess": ["strip_html", "dedupe"], "training": {"output_dir": str(tmp_path / "out")},
    }))
    assert run_cli([recipe, "--data-only"]) == 0
    out = capsys.readouterr().out
    assert "  checks               train              6         5        1 removed  missing or empty text: 1" in out
    assert "  dedupe               train              5         2        3 removed  exact duplicate of an earlier row" in out
    assert "labels train: n 1 (50.0%), p 1 (50.0%)" in out
    assert "tokens train: p50 4 p90 4 p95 4 p99 4 max 4; 100.0% truncated at max_length 3" in out  # [CLS] good film [SEP]
    assert not (tmp_path / "out").exists()


def sst2_counts(shared_data):
    return pd.read_csv(shared_data / "sst2" / "train.csv", keep_default_na=False)


def test_sst2_duplicates_and_label_conflicts_match_pandas(shared_data, tmp_path):
    frame = sst2_counts(shared_data)
    recipe = data_recipe(tmp_path, {"train_file": str(shared_data / "sst2" / "train.csv")}, [{"label_conflicts": {"policy": "keep"}}, "dedupe"])
    steps = {r["step"]: r for r in load_splits(recipe.data, recipe.preprocess, seed=0).report["steps"]}
    by_text = frame.groupby("text")["label"].nunique()
    assert steps["label_conflicts"]["texts_with_several_labels"] == (by_text > 1).sum() == 5
    assert steps["label_conflicts"]["rows_involved"] == frame["text"].isin(by_text[by_text > 1].index).sum()
    assert steps["dedupe"]["removed"] == frame["text"].duplicated().sum() == 371
    assert steps["checks"]["removed"] == 0 and steps["dedupe"]["rows_out"] == frame["text"].nunique()


def test_imdb_test_texts_in_train_match_pandas(shared_data, tmp_path):
    train = pd.read_csv(shared_data / "imdb" / "train.csv")
    test = pd.read_csv(shared_data / "imdb" / "test.csv")
    recipe = data_recipe(
        tmp_path,
        {"train_file": str(shared_data / "imdb" / "train.csv"), "test_file": str(shared_data / "imdb" / "test.csv")},
        ["leakage"],
    )
    data = load_splits(recipe.data, recipe.preprocess, seed=0)
    (leak,) = [r for r in data.report["steps"] if r["step"] == "leakage"]
    assert leak["removed"] == test["text"].isin(set(train["text"])).sum() == 6
    assert data.report["sizes"]["test"] == 5000 - 6


def test_a_training_run_writes_data_report_json(tmp_path, tiny_model):
    path = write_csv(tmp_path / "t.csv", {"text": ["good film", "great film", "bad film", "awful film", "bad film"], "label": ["p", "p", "n", "n", "n"]})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "model": {"name_or_path": tiny_model}, "data": {"train_file": path, "test_file": path, "max_length": 8},
        "preprocess": ["dedupe"], "training": {"output_dir": str(tmp_path / "out"), "max_steps": 1, "report_to": "none"},
    }))
    assert run_cli([recipe]) == 0
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report == json.loads((tmp_path / "out" / "metrics.json").read_text())["data"]
    assert [(r["step"], r["split"], r["removed"]) for r in report["steps"] if r["step"] == "dedupe"] == [("dedupe", "train", 1), ("dedupe", "test", 1)]
    assert report["tokens"]["splits"]["test"]["max"] == 4 and report["sizes"] == {"train": 4, "test": 4}


def test_rows_kept_are_written_out_contiguously_and_cached(tmp_path):
    import numpy as np
    from datasets import load_dataset

    from recipekit.data.steps import flat

    path = tmp_path / "rows.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{i % 3}\n" for i in range(500)))
    ds = load_dataset("csv", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    keep = np.flatnonzero(np.arange(500) % 7 != 0)
    once, again = flat(ds.select(keep)), flat(ds.select(keep))
    # No indices mapping left (each later step reads contiguous rows), the same rows, and one cache file for both.
    assert once._indices is None and again._indices is None
    assert once["text"] == [f"row {i}" for i in keep] and once.features == ds.features
    assert once.cache_files == again.cache_files and once.cache_files[0]["filename"].endswith("-flat.arrow")
    # Each written-out selection has its own fingerprint: the steps' caches are keyed by it.
    other = flat(ds.select(np.flatnonzero(np.arange(500) % 7 == 0)))
    assert once._fingerprint == again._fingerprint != other._fingerprint
    in_memory = flat(Dataset.from_dict({"label": [i % 3 for i in range(500)]}).select(keep))
    assert in_memory._indices is None and in_memory["label"] == [i % 3 for i in keep]
