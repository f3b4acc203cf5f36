"""data.long_text: what a text over max_length keeps."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from recipekit.core.errors import RecipeError
from recipekit.data.tokenizing import tokenize
from recipekit.recipe.build import build_recipe


@pytest.fixture
def recipe(tmp_path, tiny_model):
    path = tmp_path / "t.csv"
    path.write_text("text,label\na,x\nb,y\n")

    def make(data=None, head="sequence_classification"):
        return build_recipe({
            "model": {"name_or_path": tiny_model, "head": head},
            "data": {"train_file": str(path), "max_length": 16, **(data or {})},
            "training": {"output_dir": str(tmp_path / "out")},
        })

    return make


def kept_words(recipe, tiny_model, text: str) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenized, _ = tokenize(DatasetDict({"train": Dataset.from_dict({"text": [text]})}), tokenizer, recipe.data)
    ids = tokenized["train"][0]["input_ids"]
    assert len(ids) == 16 == len(tokenized["train"][0]["attention_mask"])
    return tokenizer.convert_ids_to_tokens(ids)


def test_head_tail_keeps_the_first_and_the_last_tokens(recipe, tiny_model):
    text = " ".join(["good"] * 3 + ["plot"] * 40 + ["bad"] * 11)  # 54 words, one token each
    head = kept_words(recipe(), tiny_model, text)
    assert head == ["[CLS]", "good", "good", "good", *["plot"] * 11, "[SEP]"]
    both = kept_words(recipe({"long_text": "head_tail", "head_tokens": 3}), tiny_model, text)
    assert both == ["[CLS]", "good", "good", "good", *["bad"] * 11, "[SEP]"]
    # The default head: a quarter of max_length (16 // 4 = 4 tokens), the rest from the end.
    default = kept_words(recipe({"long_text": "head_tail"}), tiny_model, text)
    assert default == ["[CLS]", "good", "good", "good", "plot", *["bad"] * 10, "[SEP]"]
    # A text that fits is untouched.
    short = kept_words(recipe({"long_text": "head_tail", "max_length": 16}), tiny_model, " ".join(["fine"] * 14))
    assert short == ["[CLS]", *["fine"] * 14, "[SEP]"]


@pytest.mark.parametrize(
    ("data", "head", "expected"),
    [
        ({"long_text": "head_tail", "text_columns": ["text", "label"], "label_column": "y"}, "sequence_classification",
         "data.long_text: head_tail cuts one text; a pair is cut longest-first (leave long_text: head)"),
        ({"head_tokens": 4}, "sequence_classification", "data.head_tokens: 4 needs long_text: head_tail and 0 < head_tokens < max_length (16)"),
        ({"long_text": "head_tail", "head_tokens": 16}, "sequence_classification", "data.head_tokens: 16 needs long_text"),
        ({"long_text": "head_tail"}, "token_classification",
         "data.long_text: 'head_tail' is not a strategy head 'token_classification' applies; did you mean 'head'? Choices: head"),
        ({"long_text": "middle"}, "sequence_classification", "data.long_text: expected one of 'head', 'head_tail', 'chunks', got 'middle'"),
        ({"long_text": "chunks", "text_columns": ["text", "label"], "label_column": "y"}, "sequence_classification",
         "data.long_text: chunks cuts one text; a pair is cut longest-first (leave long_text: head)"),
        ({"chunk_overlap": 4}, "sequence_classification", "data.chunk_overlap: 4 needs long_text: chunks and 0 <= chunk_overlap <= max_length / 2 (8)"),
        ({"long_text": "chunks", "chunk_overlap": 9}, "sequence_classification", "data.chunk_overlap: 9 needs long_text: chunks"),
        ({"chunk_pooling": "max"}, "sequence_classification", "data.chunk_pooling: max needs long_text: chunks"),
        ({"long_text": "chunks"}, "seq2seq", "data.long_text: 'chunks' is not a strategy head 'seq2seq' applies"),
    ],
)
def test_long_text_refusals_name_the_key(recipe, data, head, expected):
    with pytest.raises(RecipeError) as e:
        recipe(data, head)
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(expected), e.value.problems


def test_chunks_cut_a_long_text_into_overlapping_windows_that_name_their_document(recipe, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    long = " ".join(f"w{i}" for i in range(30))  # 'w', '##N': two tokens a word, 60 in all
    rows = {"text": ["short one", long, "two"], "labels": [1, 0, 1]}
    splits = DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict(rows)})
    tokenized, stats = tokenize(splits, tokenizer, recipe({"long_text": "chunks", "chunk_overlap": 4}).data)
    test = tokenized["test"]
    # 14 text tokens a window, each next one starting 10 tokens on (4 shared): 60 tokens make 6 windows.
    assert test["document"] == [0, 1, 1, 1, 1, 1, 1, 2]
    assert test["labels"] == [1, 0, 0, 0, 0, 0, 0, 1]
    windows = [tokenizer.convert_ids_to_tokens(ids) for ids in test["input_ids"][1:7]]
    assert all(len(w) <= 16 and w[0] == "[CLS]" and w[-1] == "[SEP]" for w in windows)
    assert windows[0][-5:-1] == windows[1][1:5]  # the overlap
    body = [t for w in windows for t in w[1:-1]]
    assert len(body) == 60 + 5 * 4 and body[-2:] == ["w", "##29"]  # every token kept, the last one included
    assert "document" not in tokenized["train"].column_names and len(tokenized["train"]) == 8
    assert stats["splits"]["test"]["windows"] == 8 and stats["splits"]["test"]["max"] == 62  # per document: 60 + [CLS], [SEP]


# (head case, pooling) -> test_joins.py's case of the same recipe
JOINS_CASES = {("sequence_classification", "mean"): "chunks", ("binary", "max"): "chunks_max"}


def without_paths(recipe: dict) -> dict:
    """A recipe less its file and folder names, with chunk_pooling's default written out."""
    data = {k: v for k, v in recipe["data"].items() if not k.endswith("_file")}
    training = {k: v for k, v in recipe["training"].items() if k != "output_dir"}
    return {**recipe, "data": {"chunk_pooling": "mean", **data}, "training": training}


@pytest.mark.parametrize(("case", "pooling"), [("sequence_classification", "mean"), ("binary", "max"),
                                               ("multi_label", "max"), ("regression", "mean")])
def test_chunks_predict_each_document_from_its_pooled_windows(request, case, pooling, tmp_path, tmp_path_factory):
    """The run's predictions file, recomputed by hand: every window of a test text through the saved model one
    at a time (no padding), the windows' logits pooled, then the run's own decision rule."""
    import json

    import numpy as np
    import pandas as pd
    import torch
    from conftest import run_cli
    from test_joins import make_recipe, trained_run, write
    from transformers import AutoModelForSequenceClassification

    from recipekit.inference.runs import open_run

    recipe = make_recipe(request, case, tmp_path / "data", tmp_path / "run", plots=True)  # as trained_run makes it
    recipe["data"].update(long_text="chunks", max_length=8, chunk_overlap=2, chunk_pooling=pooling)
    if (case, pooling) in JOINS_CASES:  # the same recipe as a test_joins.py case: its run, trained once
        shared = trained_run(request, tmp_path_factory, JOINS_CASES[case, pooling])
        assert without_paths(shared.recipe) == without_paths(recipe)
        recipe, folder = shared.recipe, shared.dir
    else:
        assert run_cli([write(recipe, tmp_path / "recipe.yaml")]) == 0
        folder = tmp_path / "run"
    texts = pd.read_csv(recipe["data"]["test_file"])["text"].tolist()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    pooled, windows = [], 0
    with torch.no_grad():
        for text in texts:
            cut = tokenizer(text, truncation=True, max_length=8, stride=2, return_overflowing_tokens=True)["input_ids"]
            windows += len(cut)
            logits = torch.cat([model(input_ids=torch.tensor([ids])).logits for ids in cut])
            pooled.append((logits.mean(0) if pooling == "mean" else logits.max(0).values).numpy())
    assert windows > len(texts) + 2  # most texts are cut: the pooling is exercised
    run = open_run(str(folder))
    want = run.head.prediction_columns(np.stack(pooled), None, tokenizer)
    got = pd.read_csv(folder / "predictions.csv", keep_default_na=False)
    assert len(got) == len(texts)
    for name, values in want.items():
        if name == "predicted" and case != "regression":
            assert got[name].astype(str).tolist() == values
        else:
            assert got[name].astype(float).tolist() == pytest.approx(values, abs=1e-5), name
    record = json.loads((folder / "metrics.json").read_text())
    assert record["data"]["tokens"]["splits"]["test"]["windows"] == windows
    if case in ("sequence_classification", "binary"):  # scored per document, not per window
        gold = pd.read_csv(recipe["data"]["test_file"])["label"].tolist()
        assert record["test"]["accuracy"] == pytest.approx(np.mean([p == g for p, g in zip(want["predicted"], gold)]))
