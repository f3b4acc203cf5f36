"""run.py end to end on a tiny BERT (seconds): every output file exists and agrees with the others."""

import json
import random

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_cli

WORDS = {1: ["awful"], 2: ["okay"], 4: ["superb"]}


def three_class_files(folder):
    rng = random.Random(0)

    def write(name, n):
        rows = []
        for i in range(n):
            label = [1, 2, 4][i % 3]
            rows.append({"text": f"{rng.choice(WORDS[label])} film {'really ' * (i % 4)}{i}", "label": label})
        path = folder / name
        pd.DataFrame(rows).to_csv(path, index=False)
        return str(path)

    return write("train.csv", 90), write("val.csv", 30), write("test.csv", 30)


def make_recipe(tiny_model, folder) -> dict:
    # Warmup matters: a first full 3e-3 step from random init can saturate the pooler and merge two classes for good.
    train, val, test = three_class_files(folder)
    return {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": train, "validation_file": val, "test_file": test, "max_length": 32},
        "preprocess": ["drop_empty", "dedupe"],
        "training": {
            "output_dir": str(folder / "run"), "max_steps": 60, "learning_rate": 3.0e-3, "warmup_steps": 6,
            "per_device_train_batch_size": 16, "eval_strategy": "steps", "eval_steps": 30,
            "save_strategy": "steps", "save_steps": 30, "logging_steps": 5, "report_to": "none", "seed": 1,
        },
    }


@pytest.fixture
def recipe(tiny_model, tmp_path):
    return make_recipe(tiny_model, tmp_path)


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory):
    """The recipe's 60-step run, with training.seed=3 given as an override: the tests that read a finished run share it."""
    folder = tmp_path_factory.mktemp("end-to-end")
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(make_recipe(tiny_model, folder), sort_keys=False))
    assert run_cli([path, "training.seed=3"]) == 0
    return folder / "run"


@pytest.mark.slow  # a whole run with figures
def test_run_writes_a_complete_consistent_run(finished):
    out = finished
    for name in ("model.safetensors", "config.json", "tokenizer.json", "recipe.yaml", "metrics.json", "predictions.csv"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")) or list(out.glob("*.bin")) == [out / "training_args.bin"]

    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "1", "1": "2", "2": "4"}
    assert config["problem_type"] == "single_label_classification"

    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == ["text", "label", "predicted", "prob_1", "prob_2", "prob_4"]
    probs = preds[["prob_1", "prob_2", "prob_4"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (preds["predicted"].astype(str) == pd.Series(np.array(["1", "2", "4"])[probs.argmax(1)])).all()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert metrics["data"]["sizes"] == {"train": 90, "validation": 30, "test": 30}
    steps = [(r["step"], r["split"]) for r in metrics["data"]["steps"] if r["step"] in ("drop_empty", "dedupe")]
    assert steps == [(s, split) for s in ("drop_empty", "dedupe") for split in ("train", "validation", "test")]
    assert metrics["test"]["accuracy"] == pytest.approx((preds["label"] == preds["predicted"]).mean())
    assert metrics["test"]["accuracy"] > 0.9  # the toy task is learnable: one word decides the label
    assert set(metrics["versions"]) >= {"torch", "transformers", "datasets", "accelerate"}
    assert metrics["train"]["train_loss"] > 0 and metrics["wall_time_s"] > 0

    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["training"]["seed"] == 3 and resolved["data"]["max_length"] == 32


def test_pipeline_reloads_the_model_and_reproduces_predictions(finished):
    from transformers import pipeline

    out = finished
    preds = pd.read_csv(out / "predictions.csv")
    classifier = pipeline("text-classification", model=str(out), top_k=None, device="cpu")
    for row, scores in zip(preds.itertuples(), classifier(list(preds["text"]))):
        by_label = {s["label"]: s["score"] for s in scores}
        assert by_label["4"] == pytest.approx(row.prob_4, abs=1e-5)
        assert max(by_label, key=by_label.get) == str(row.predicted)


def test_finished_run_is_not_overwritten_unless_asked(recipe, write_recipe, tmp_path, capsys):
    path = write_recipe(recipe)
    recipe["training"]["max_steps"] = 4
    recipe["training"]["eval_steps"] = recipe["training"]["save_steps"] = 2
    path = write_recipe(recipe)
    assert run_cli([path]) == 0
    before = (tmp_path / "run" / "metrics.json").read_text()
    capsys.readouterr()
    assert run_cli([path]) == 2
    assert "holds a finished run (metrics.json); pass --overwrite to replace it" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.json").read_text() == before
    assert run_cli([path, "--overwrite", "training.seed=9"]) == 0
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["training"]["seed"] == 9
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-2", "checkpoint-4"]


def test_batches_are_padded_to_their_own_longest_text(recipe, tiny_model):
    from conftest import load_splits

    from recipekit.heads import head_for
    from recipekit.modeling.loading import load_tokenizer
    from recipekit.recipe.build import build_recipe
    from recipekit.training.trainer import build_trainer

    r = build_recipe(recipe)
    head = head_for(r)
    data = load_splits(r.data, r.preprocess, 0, head=head)
    tokenizer = load_tokenizer(r.model)
    tokenized, _ = head.tokenize(data.splits, tokenizer)
    lengths = [len(x) for x in tokenized["train"]["input_ids"]]
    assert len(set(lengths)) > 1  # stored unpadded
    trainer = build_trainer(r, head, head.load_model(r.model, tokenizer), tokenizer, tokenized)
    batch = trainer.data_collator([tokenized["train"][i] for i in range(4)])
    assert batch["input_ids"].shape == (4, max(lengths[:4]))
