"""data.streaming: a corpus of shards read row by row as training goes, for the pretraining heads."""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, run_cli
from datasets import Dataset, DatasetDict
from test_distributed import launch, ranks

from recipekit.core.errors import RecipeError
from recipekit.data.loading import load_splits
from recipekit.data.steps import STEPS
from recipekit.data.streaming import stream_file
from recipekit.heads import build_head
from recipekit.recipe.data import DataArgs

WORDS = ["red", "green", "blue", "cat", "dog", "bird", "runs", "sleeps", "jumps", "the", "a", "over", "under", "house"]
BIN = Path(sys.executable).parent


def shards(folder: Path, n: int = 4, rows: int = 120, seed: int = 0) -> str:
    """n jsonl shards of made-up sentences; every text distinct (its shard and row are in it)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n):
        lines = [json.dumps({"text": f"s{s} r{i} " + " ".join(rng.choices(WORDS, k=rng.randint(5, 20)))}) for i in range(rows)]
        (folder / f"part-{s:02d}.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder / "part-*.jsonl")


def recipe(tmp_path: Path, train: str, head: str = "causal_lm", out: str = "out", **training) -> dict:
    config = ({"n_layer": 2, "n_embd": 32, "n_head": 2, "n_inner": 64, "n_positions": 64} if head == "causal_lm" else
              {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64})
    return {
        "model": {"init": "scratch", "family": "gpt2" if head == "causal_lm" else "bert", "head": head,
                  "head_options": {"block_size": 16}, "config": config},
        "tokenizer": {"train": {"vocab_size": 400, "min_frequency": 1}},
        "data": {"train_file": train, "streaming": True},
        "preprocess": ["collapse_whitespace", "dedupe"],
        "training": {"output_dir": str(tmp_path / out), "max_steps": 12, "per_device_train_batch_size": 4,
                     "learning_rate": 1.0e-2, "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": 0,
                     "disable_tqdm": True, **training},
    }


def errors_of(write_recipe, raw, capsys) -> list[str]:
    assert run_cli([write_recipe(raw)]) == 2
    return capsys.readouterr().err.strip().splitlines()


def test_what_a_stream_cannot_do_is_refused_by_name_before_anything_is_written(tmp_path, write_recipe, capsys):
    train = shards(tmp_path / "corpus", n=1, rows=10)
    raw = recipe(tmp_path, train)
    del raw["training"]["max_steps"]
    raw["data"]["validation_split"] = 0.1
    raw["preprocess"] = ["dedupe", "near_dedupe", {"balance": {}}]
    assert errors_of(write_recipe, raw, capsys) == [
        "error: training.max_steps: a streamed corpus has no length to count epochs by; set max_steps (data.streaming: true)",
        "error: data.validation_split: a stratified carve needs every row, which a stream never holds; give data.validation_file instead",
        ("error: preprocess[1] near_dedupe: needs the whole training split at once, which a stream never holds; "
        "run it on a copy of the corpus first, or leave it out (data.streaming: true)"),
        ("error: preprocess[2] balance: needs the whole training split at once, which a stream never holds; "
        "run it on a copy of the corpus first, or leave it out (data.streaming: true)"),
    ]
    raw = recipe(tmp_path, train)
    raw["model"] = {"name_or_path": "bert-base-uncased", "head": "token_classification"}
    del raw["tokenizer"]
    assert errors_of(write_recipe, raw, capsys)[0] == (
        "error: data.streaming: head 'token_classification' learns from its whole training split before training; "
        "heads that stream: binary, causal_lm, masked_lm, multi_label, regression, sequence_classification"
    )
    raw["model"] = {"name_or_path": "bert-base-uncased", "head": "regression", "head_options": {"standardize": True}}
    assert errors_of(write_recipe, raw, capsys) == [
        ("error: model.head_options.standardize: needs the mean and spread of every training target, which a stream "
         "never holds; set standardize: false (data.streaming: true)")]
    raw["model"]["head_options"] = {"standardize": False}
    raw["data"]["label_names"] = ["low", "high"]
    assert errors_of(write_recipe, raw, capsys) == [
        "error: data.label_names: head 'regression' has no label set to give (its labels are targets); leave it out"]
    raw["model"] = {"name_or_path": "bert-base-uncased", "head": "sequence_classification", "head_options": {"class_weights": "auto"}}
    assert errors_of(write_recipe, raw, capsys) == [
        ("error: model.head_options.class_weights: auto counts every training label, which a stream never holds; "
         "give one weight per label of data.label_names, or leave it out (data.streaming: true)")]
    raw = recipe(tmp_path, str(tmp_path / "nowhere" / "*.jsonl"))
    assert errors_of(write_recipe, raw, capsys) == [f"error: data.train_file: {str(tmp_path / 'nowhere' / '*.jsonl')!r} matches no file"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # ~50 steps before the bad line: 1-4 min on 2 busy cores
def test_a_bad_json_line_past_the_first_rows_fails_the_run_naming_the_line(tiny_model, tmp_path, write_recipe, capsys):
    train = shards(tmp_path / "corpus", n=2, rows=1500)  # the report's sample reads the first 1,000 rows (and a batch ahead)
    second = tmp_path / "corpus" / "part-01.jsonl"
    lines = second.read_text().splitlines()
    lines[1000] = '{"text": "cut off'
    second.write_text("\n".join(lines) + "\n")
    raw = recipe(tmp_path, train, head="masked_lm", max_steps=1000, per_device_train_batch_size=64)
    raw["tokenizer"] = {"name_or_path": tiny_model}  # a tokenizer trained here would read the stream, and meet the line, first
    assert run_cli([write_recipe(raw)]) == 2
    message = f"{second} line 1001: not valid JSON (Unterminated string starting at): '{{\"text\": \"cut off'"
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status == {"status": "failed", "reason": message}


def test_streamed_blocks_are_the_packed_blocks_of_the_same_texts(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    train = shards(tmp_path / "corpus", n=3, rows=100)  # 300 texts: one packing group of 1,000
    head = build_head("masked_lm", {"block_size": 16}, data=DataArgs(train_file=train, streaming=True))
    streamed, stats = head.tokenize(DatasetDict({"train": stream_file(train, ["text"])}), tokenizer)
    texts = [json.loads(line)["text"] for p in sorted((tmp_path / "corpus").glob("*.jsonl")) for line in p.read_text().splitlines()]
    whole, _ = head.tokenize(DatasetDict({"train": Dataset.from_dict({"text": texts})}), tokenizer)
    assert [row["input_ids"] for row in streamed["train"]] == whole["train"]["input_ids"]
    assert stats["splits"]["train"]["sample_rows"] == 300


def test_streamed_dedupe_and_cleaning_drop_the_rows_the_whole_split_would(tmp_path):
    rows = ["a  cat", "a cat", "the dog", "  ", "a cat", "the dog runs", "The dog"]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    args = DataArgs(train_file=str(tmp_path / "c.jsonl"), streaming=True)
    steps = [STEPS["collapse_whitespace"](), STEPS["dedupe"](ignore_case=True)]
    head = build_head("causal_lm", data=args)
    streamed = load_splits(args, steps, 0, head=head).splits["train"]
    args.streaming = False
    whole = load_splits(args, steps, 0, head=build_head("causal_lm", data=args)).splits["train"]
    assert [r["text"] for r in streamed] == whole["text"] == ["a cat", "the dog", "the dog runs"]
    # A second pass (the next epoch) reads the same rows, not none: the seen set starts afresh.
    assert [r["text"] for r in streamed] == ["a cat", "the dog", "the dog runs"]


@pytest.mark.slow  # three 12-step runs of a 2-layer GPT-2, 30-60 s
def test_a_run_killed_mid_stream_resumes_at_the_row_it_reached(tmp_path):
    train = shards(tmp_path / "corpus")
    raw = recipe(tmp_path, train, save_strategy="steps", save_steps=4)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(raw))
    whole = launch([sys.executable], tmp_path / "probe-whole", str(path), "training.output_dir=whole", tmp=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = launch([sys.executable], tmp_path / "probe-killed", str(path), "training.output_dir=cut",
                    env_extra={"PROBE_KILL_AT_STEP": "4"}, tmp=tmp_path)
    assert killed.returncode == -9
    resumed = launch([sys.executable], tmp_path / "probe-resumed", str(path), "training.output_dir=cut", "--resume", tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first, second = ranks(tmp_path / "probe-whole")[0], ranks(tmp_path / "probe-resumed")[0]
    # The resumed process skipped the 4 steps x 4 blocks already trained on and went on with the next block.
    assert len(first["training_rows"]) == 48 and len(set(first["training_rows"])) == 48
    assert second["training_rows"] == first["training_rows"][16:]
    assert second["weights_sha256"] == first["weights_sha256"]
    assert json.loads((tmp_path / "cut" / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow  # two gloo processes on CPU, 30-60 s
def test_two_processes_read_disjoint_shards(tmp_path):
    train = shards(tmp_path / "corpus")
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe(tmp_path, train)))
    done = launch([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29571"], tmp_path / "probe", str(path), tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = ranks(tmp_path / "probe")
    assert len(one["training_rows"]) == len(two["training_rows"]) == 48
    assert not set(one["training_rows"]) & set(two["training_rows"])
    # Each process read two whole shards: together the first 48 blocks of each half of the corpus, as one process
    # reading shards 0-1 (or 2-3) alone would make them.
    alone = tmp_path / "alone"
    for rank, record in enumerate((one, two)):
        half = alone / f"half{rank}"
        half.mkdir(parents=True)
        for s in (2 * rank, 2 * rank + 1):
            (half / f"part-{s:02d}.jsonl").write_text((tmp_path / "corpus" / f"part-{s:02d}.jsonl").read_text())
        single = recipe(tmp_path, str(half / "part-*.jsonl"), out=f"alone{rank}", max_steps=12)
        single["tokenizer"] = {"name_or_path": str(tmp_path / "out")}  # the two-process run's tokenizer: same ids
        (half.parent / f"r{rank}.json").write_text(json.dumps(single))
        run = subprocess.run([sys.executable, str(ROOT / "tests" / "probe_run.py"), str(alone / f"probe{rank}"), str(half.parent / f"r{rank}.json")],
                             capture_output=True, text=True, cwd=tmp_path, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        assert ranks(alone / f"probe{rank}")[0]["training_rows"] == record["training_rows"]


def test_a_streaming_recipe_writes_its_resolved_yaml_with_the_accelerator_setting_it_needs(tmp_path):
    from recipekit.recipe.build import build_recipe

    built = build_recipe(recipe(tmp_path, shards(tmp_path / "corpus")))
    text = built.to_yaml()
    assert "# accelerator_config: {" in text and "dispatch_batches: false" in text
    assert "# recipekit: data.streaming: each process reads its own shards" in text
    assert build_recipe(yaml.safe_load(text)).to_dict() == built.to_dict()  # the comments load back as nothing


@pytest.mark.slow  # two gloo processes on CPU, 20-40 s
def test_a_bad_line_on_another_rank_stops_every_process_naming_rank_file_and_line(tiny_model, tmp_path):
    corpus = tmp_path / "corpus"
    shards(corpus, n=4, rows=10)
    shards(corpus / "big", n=1, rows=1100)  # the report's sample (the first 1,000 rows) lies in rank 0's first shard
    (corpus / "big" / "part-00.jsonl").replace(corpus / "part-00.jsonl")
    bad = corpus / "part-02.jsonl"  # rank 1 reads shards 2 and 3
    lines = bad.read_text().splitlines()
    lines[4] = '{"text": "cut off'
    bad.write_text("\n".join(lines) + "\n")
    raw = recipe(tmp_path, str(corpus / "part-*.jsonl"), head="masked_lm", max_steps=20)
    raw["tokenizer"] = {"name_or_path": tiny_model}  # a tokenizer trained here would read the stream, and meet the line, first
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    done = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29573", str(ROOT / "run.py"), str(path)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    took = time.monotonic() - started
    assert done.returncode != 0 and took < 300, (took, done.stderr[-3000:])  # the collective time-out is 1,800 s (ddp_timeout)
    message = f"rank 1 of 2: {bad} line 5: not valid JSON (Unterminated string starting at): '{{\"text\": \"cut off'"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {message}"] * 2, done.stderr[-3000:]  # the rank that met it, and rank 0
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status == {"status": "failed", "reason": message}


def labelled(folder: Path, n: int, rows: int, seed: int) -> None:
    """Shards (or, n=0, one file) of texts whose label is a word in them: 'good' rows are pos, 'bad' rows neg."""
    rng = random.Random(seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for s in range(max(n, 1)):
        lines = []
        for i in range(rows):
            label = rng.choice(["neg", "pos"])
            words = rng.choices(WORDS, k=rng.randint(3, 8)) + ["good" if label == "pos" else "bad"]
            rng.shuffle(words)
            lines.append(json.dumps({"text": f"s{s} r{i} " + " ".join(words), "label": label}))
        path = folder / f"part-{s:02d}.jsonl" if n else folder
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def streamed_classifier(tiny_model, tmp_path_factory):
    """One sequence_classification run trained on 2 streamed shards (validation and test read whole), shared by
    the assertions below."""
    import run

    tmp = tmp_path_factory.mktemp("streamed-classifier")
    labelled(tmp / "corpus", n=2, rows=200, seed=0)
    labelled(tmp / "valid.jsonl", n=0, rows=60, seed=1)
    labelled(tmp / "test.jsonl", n=0, rows=60, seed=2)
    raw = {
        "model": {"name_or_path": tiny_model, "head": "sequence_classification"},
        "data": {"train_file": str(tmp / "corpus" / "part-*.jsonl"), "validation_file": str(tmp / "valid.jsonl"),
                 "test_file": str(tmp / "test.jsonl"), "streaming": True, "label_names": ["neg", "pos"], "max_length": 32},
        "training": {"output_dir": str(tmp / "out"), "max_steps": 60, "per_device_train_batch_size": 16, "learning_rate": 1.0e-3,
                     "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "seed": 0, "disable_tqdm": True},
        "report": {"plots": False},
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert run.main([str(path)]) == 0
    return tmp


@pytest.mark.slow  # one 60-step run of a 2-layer BERT, 30-150 s on 2 busy cores
def test_a_classifier_trains_on_a_stream_with_its_given_labels_then_predicts_and_evaluates(streamed_classifier, capsys):
    out = streamed_classifier / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
    # The label word is in every text: 60 steps rank every test row right (roc_auc 1.0 when measured; labels
    # misaligned with their texts would give about 0.5), though the tiny model's probabilities are still near 0.5.
    assert metrics["test"]["roc_auc"] >= 0.95 and metrics["test"]["loss"] < 0.69
    report = json.loads((out / "data_report.json").read_text())
    assert report["sizes"]["train"] == "streamed" and report["tokens"]["splits"]["train"]["sample_rows"] == 400
    assert run_cli(["predict", str(out), "--input", str(streamed_classifier / "test.jsonl"), "--output", str(streamed_classifier / "p.csv")]) == 0
    predicted = pd.read_csv(streamed_classifier / "p.csv")
    assert predicted["predicted"].tolist() == pd.read_csv(out / "predictions.csv")["predicted"].tolist()
    assert run_cli(["evaluate", str(out), "--input", str(streamed_classifier / "test.jsonl"), "--metrics", str(streamed_classifier / "m.json")]) == 0
    evaluated = json.loads((streamed_classifier / "m.json").read_text())["metrics"]
    assert evaluated["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


@pytest.mark.slow  # a 60-step tiny run, cut at step 24 and resumed
def test_a_streamed_classifier_killed_and_resumed_ends_where_the_uninterrupted_run_ends(streamed_classifier):
    """Trainer skips the batches a checkpoint already trained on by reading past them in the stream: the resumed
    run sees the rows the uninterrupted one saw, in the same order, and ends with its scores and predictions."""
    import signal

    from test_joins import SignalAt

    import run
    from recipekit.recipe.build import load_recipe

    raw = yaml.safe_load((streamed_classifier / "recipe.yaml").read_text())
    raw["training"].update(output_dir=str(streamed_classifier / "cut"), save_strategy="steps", save_steps=12)
    path = streamed_classifier / "cut.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert run.fine_tune(load_recipe(str(path)), callbacks=[SignalAt(24)]) == 128 + signal.SIGTERM
    assert run_cli([path, "--resume"]) == 0
    resumed = json.loads((streamed_classifier / "cut" / "metrics.json").read_text())
    whole = json.loads((streamed_classifier / "out" / "metrics.json").read_text())
    assert resumed["train"]["resumed_from_step"] == 24
    assert resumed["test"]["loss"] == pytest.approx(whole["test"]["loss"], abs=1e-6)
    assert resumed["test"]["accuracy"] == whole["test"]["accuracy"]
    cut = pd.read_csv(streamed_classifier / "cut" / "predictions.csv")
    assert cut["predicted"].tolist() == pd.read_csv(streamed_classifier / "out" / "predictions.csv")["predicted"].tolist()


def test_a_streamed_classifier_without_its_labels_and_heads_that_cannot_stream_are_refused_in_one_line(tmp_path, write_recipe, capsys):
    labelled(tmp_path / "corpus", n=1, rows=5, seed=0)
    raw = {"model": {"name_or_path": "bert-base-uncased", "head": "sequence_classification"},
           "data": {"train_file": str(tmp_path / "corpus" / "part-*.jsonl"), "streaming": True},
           "training": {"output_dir": str(tmp_path / "out"), "max_steps": 5}}
    message = ("error: data.label_names: head 'sequence_classification' on a streamed corpus needs its labels given, since the "
               "stream is not read before training; set data.label_names, e.g. [negative, positive]")
    assert errors_of(write_recipe, raw, capsys) == [message]
    raw["data"]["label_names"] = ["neg", "pos"]
    for command, what in (("cv", "folds are carved from"), ("curve", "subsets are drawn from")):
        assert run_cli([command, write_recipe(raw)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: {command}: {what} every training row, which a stream never holds; run {command} with data.streaming: false"]
    del raw["data"]["label_names"]
    raw["model"]["head"] = "multi_label"
    assert errors_of(write_recipe, raw, capsys) == [message.replace("sequence_classification", "multi_label")]
    raw["model"]["head"] = "setfit"
    raw["data"]["label_names"] = ["neg", "pos"]
    assert "error: data.streaming: head 'setfit' learns from its whole training split before training; heads that stream: binary, " \
        "causal_lm, masked_lm, multi_label, regression, sequence_classification" in errors_of(write_recipe, raw, capsys)
    raw["model"]["head"] = "binary"
    raw["data"].update(streaming=False, train_file=str(tmp_path / "corpus" / "part-00.jsonl"))
    assert errors_of(write_recipe, raw, capsys) == [
        "error: data.label_names: read only with data.streaming (otherwise the labels are those of the training split); leave it out"]
    assert not (tmp_path / "out").exists()


def test_streamed_regression_targets_are_the_files_numbers_and_a_bad_one_is_named(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"text": f"row {i}", "score": str(i / 4)} for i in range(6)]
    for name, extra in (("a", []), ("b", [{"text": "row 6", "score": "high"}])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + extra))
    args = DataArgs(train_file=str(tmp_path / "a.jsonl"), streaming=True, label_column="score", max_length=16)
    head = build_head("regression", data=args)
    tokenized, _ = head.tokenize(load_splits(args, [], 0, head=head).splits, tokenizer)
    assert [row["labels"] for row in tokenized["train"]] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    args.train_file = str(tmp_path / "b.jsonl")  # met in the report's sample of the first rows: before training starts
    with pytest.raises(RecipeError, match="column 'score' of a streamed training row: target is not a finite number: 'high'"):
        head.tokenize(load_splits(args, [], 0, head=head).splits, tokenizer)


def test_streamed_multi_label_rows_are_hot_vectors_of_the_given_labels_and_the_prior_is_the_first_rows(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    rows = [{"text": "a b", "tags": "sport,news"}, {"text": "c", "tags": "news"}, {"text": "d e", "tags": "news"}, {"text": "f", "tags": "art"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = DataArgs(train_file=str(tmp_path / "a.jsonl"), streaming=True, label_column="tags", label_names=["news", "sport", "art"])
    head = build_head("multi_label", data=args)
    tokenized, _ = head.tokenize(load_splits(args, [], 0, head=head).splits, AutoTokenizer.from_pretrained(tiny_model))
    assert [row["labels"] for row in tokenized["train"]] == [[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert head.labels == ["news", "sport", "art"] and head.positive_rate.tolist() == [0.75, 0.25, 0.25]
