"""data.long_text: what a text over max_length keeps."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from recipekit.errors import RecipeError
from recipekit.recipe import build_recipe
from recipekit.tokenizing import tokenize


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
        ({"long_text": "middle"}, "sequence_classification", "data.long_text: expected one of 'head', 'head_tail', got 'middle'"),
    ],
)
def test_long_text_refusals_name_the_key(recipe, data, head, expected):
    with pytest.raises(RecipeError) as e:
        recipe(data, head)
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(expected), e.value.problems
