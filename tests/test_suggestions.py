"""Error messages suggest the fix the user meant: by meaning (synonym tables), not only by spelling."""

import pytest

from recipekit.core.errors import RecipeError
from recipekit.core.schema import Problem, coerce
from recipekit.heads import HEADS, head_synonyms
from recipekit.recipe.build import apply_overrides, build_recipe

HEAD_CHOICES = "Choices: " + ", ".join(HEADS)


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("review_body,label\ngood film,pos\nbad film,neg\n")
    return {
        "model": {"name_or_path": "bert-base-uncased"},
        "data": {"train_file": str(path), "text_columns": ["review_body"]},
        "training": {"output_dir": str(tmp_path / "out")},
    }


def problems(raw, overrides=()) -> list[str]:
    apply_overrides(raw, overrides)
    with pytest.raises(RecipeError) as e:
        build_recipe(raw)
    return e.value.problems


@pytest.mark.parametrize("written, meant", [
    ("classification", "sequence_classification"),  # spelling alone said token_classification
    ("text-classification", "sequence_classification"),
    ("NER", "token_classification"),
    ("mlm", "masked_lm"),
    ("summarization", "seq2seq"),
    ("sft", "causal_lm_sft"),
    ("multilabel", "multi_label"),
])
def test_a_head_named_by_its_task_suggests_that_head_and_lists_all(base, written, meant):
    base["model"]["head"] = written
    assert problems(base) == [f"model.head: {written!r} is not a head; did you mean {meant!r}? {HEAD_CHOICES}"]


def test_every_head_alias_names_a_head_and_no_alias_is_a_head_name():
    aliases = head_synonyms()
    assert set(aliases.values()) <= set(HEADS)
    assert not set(aliases) & set(HEADS)
    assert sum(len(h.aliases) for h in HEADS.values()) == len(aliases)  # no alias names two heads


@pytest.mark.parametrize("key, meant", [
    ("epochs", "num_train_epochs"),
    ("lr", "learning_rate"),
    ("batch_size", "per_device_train_batch_size"),
    ("eval_batch_size", "per_device_eval_batch_size"),
    ("evaluation_strategy", "eval_strategy"),  # the name before transformers 4.46
    ("warmup_ratio", "warmup_steps"),  # removed in transformers 5: warmup_steps below 1 is the ratio
    ("grad_accum", "gradient_accumulation_steps"),
    ("scheduler", "lr_scheduler_type"),
    ("patience", "regularization.early_stopping_patience"),  # another section's key
    ("max_step", "max_steps"),  # spelling still works
])
def test_a_training_key_by_another_name_suggests_the_trainingarguments_key(base, key, meant):
    assert problems(base, [f"training.{key}=3"]) == [f"training.{key}: unknown key; did you mean {meant!r}?"]


def test_data_and_model_keys_by_another_name(base):
    base["data"]["max_seq_length"] = 128
    base["model"]["model_name_or_path"] = "x"
    got = problems(base)
    assert got[0] == "model.model_name_or_path: unknown key; did you mean 'name_or_path'? Valid keys: " + got[0].split("Valid keys: ")[1]
    assert got[1].startswith("data.max_seq_length: unknown key; did you mean 'max_length'? Valid keys: dataset, ")


def test_one_string_where_a_list_goes_is_a_list_of_it(base):
    base["data"]["text_columns"] = "review_body"
    assert build_recipe(base).data.text_columns == ["review_body"]
    base["preprocess"] = [{"filter_labels": {"keep": "pos"}}]
    assert build_recipe(base).preprocess[0].keep == ["pos"]
    # Any list field, through the schema: one number in a list of numbers too; a wrong item type still fails.
    assert coerce(0.5, list[float]) == [0.5]
    with pytest.raises(Problem, match=r"item 0: expected a string, got 5"):
        coerce(5, list[str])
    # A union that takes a string keeps it a string (report_to: none is not [none]).
    assert coerce("none", None | str | list[str]) == "none"


def test_a_sweep_value_by_another_name_suggests_the_key(base):
    base["sweep"] = {"values": {"training.epochs": [1, 2]}}
    assert problems(base) == ["sweep.values.training.epochs: unknown key; did you mean 'num_train_epochs'?"]
