"""model.peft: LoRA adapters through peft: validation, the trainable-parameter count, learning, merging."""

import json
import random

import pandas as pd
import pytest
from conftest import run_cli

from recipekit.commands.merge import merge
from recipekit.core.errors import RecipeError
from recipekit.heads import HEADS, build_head
from recipekit.modeling.adapters import apply_peft
from recipekit.recipe.build import build_recipe
from recipekit.recipe.data import DataArgs
from recipekit.recipe.model import ModelArgs


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_lora_trains_the_adapters_and_the_head_only(minilm_path):
    head = build_head("sequence_classification", data=DataArgs(train_file="x"), state=HEADS["sequence_classification"].State("sequence_classification", ["negative", "positive"]))
    args = ModelArgs(name_or_path=minilm_path, peft={"r": 8, "lora_alpha": 16})
    full = head.load_model(args, None)
    total = trainable(full)
    assert total == 22_713_986
    lora = apply_peft(full, args, head)
    # peft's default targets for BERT are query and value: 6 layers x 2 matrices x (384x8 + 8x384),
    # plus the new classifier (384x2 + 2), which peft keeps trainable and saves for a classification task.
    assert trainable(lora) == 6 * 2 * (384 * 8 + 8 * 384) + 384 * 2 + 2 == 74_498
    assert trainable(lora) / total < 0.004


def test_lora_target_modules_and_rank_change_the_count(minilm_path):
    head = build_head("sequence_classification", data=DataArgs(train_file="x"), state=HEADS["sequence_classification"].State("sequence_classification", ["a", "b", "c"]))
    args = ModelArgs(name_or_path=minilm_path, peft={"r": 4, "target_modules": ["query", "key", "value", "dense"]})
    lora = apply_peft(head.load_model(args, None), args, head)
    # "dense" also matches each layer's attention output, intermediate (384->1536) and output (1536->384)
    # layers and the pooler: 6 x (3 x 384x384 + 384x384 + 384x1536 + 1536x384) + pooler 384x384, at rank 4.
    per_layer = 4 * (3 * (384 + 384) + (384 + 384) + (384 + 1536) + (1536 + 384))
    assert trainable(lora) == 6 * per_layer + 4 * (384 + 384) + 384 * 3 + 3


def base(tmp_path, peft) -> dict:
    path = tmp_path / "train.csv"
    path.write_text("text,label\ngood film,pos\nbad film,neg\n")
    return {"model": {"name_or_path": "bert-base-uncased", "peft": peft}, "data": {"train_file": str(path)},
            "training": {"output_dir": str(tmp_path / "out")}}


@pytest.mark.parametrize(
    "peft, message",
    [
        ({"lora_alpa": 16}, "model.peft.lora_alpa: unknown key; did you mean 'lora_alpha'?"),
        ({"r": "eight"}, "model.peft.r: expected an integer, got 'eight'"),
        ({"task_type": "SEQ_CLS"}, "model.peft.task_type: set by the run (from model.head and model.name_or_path); leave it out"),
        ({"bias": "some"}, "model.peft.bias: expected one of 'none', 'all', 'lora_only', got 'some'"),
    ],
)
def test_peft_mistakes_are_recipe_errors(tmp_path, peft, message):
    with pytest.raises(RecipeError) as e:
        build_recipe(base(tmp_path, peft))
    assert e.value.problems == [message]


def separable_csv(path, n: int, seed: int) -> str:
    """Reviews whose label is the one sentiment word among random filler: learnable by a tiny model."""
    rng = random.Random(seed)
    filler = ["the", "a", "film", "movie", "plot", "actor", "scene", "story", "it", "was", "and", "very", "quite"]
    rows = []
    for i in range(n):
        label = ("negative", "positive")[i % 2]
        words = rng.choices(filler, k=rng.randint(4, 12))
        words.insert(rng.randrange(len(words) + 1), {"positive": "wonderful", "negative": "terrible"}[label])
        rows.append({"text": " ".join(words), "label": label})
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.mark.slow
def test_lora_run_learns_saves_the_adapter_only_and_merges_for_pipeline(tiny_model, tmp_path, write_recipe):
    from transformers import pipeline

    out = tmp_path / "run"
    recipe = {
        "model": {"name_or_path": tiny_model, "peft": {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value", "dense"]}},
        "data": {
            "train_file": separable_csv(tmp_path / "train.csv", 320, 0),
            "test_file": separable_csv(tmp_path / "test.csv", 80, 1),
            "max_length": 32,
        },
        "metrics": ["accuracy"],
        "training": {
            "output_dir": str(out), "num_train_epochs": 4, "per_device_train_batch_size": 16,
            "learning_rate": 1.0e-2, "save_strategy": "no", "report_to": "none", "seed": 0,
        },
    }
    assert run_cli([write_recipe(recipe)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9

    # The run saved the adapter (LoRA matrices and the head), not the 2-layer model around it.
    assert (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8

    merged = tmp_path / "merged"
    merge(str(out), str(merged))
    classify = pipeline("text-classification", model=str(merged), device="cpu")
    predictions = pd.read_csv(out / "predictions.csv")
    labels = [p["label"] for p in classify(list(predictions["text"]))]
    assert labels == list(predictions["predicted"])
