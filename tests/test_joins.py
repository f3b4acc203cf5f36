"""Every head through every command that touches a run, on tiny models for a few steps (these test the joins;
test_heads.py tests that each head learns):

  train -> `predict` on the test file writes the run's own predictions file, field for field
        -> `evaluate` on the test file gives metrics.json's test metrics exactly
        -> report.md and the model card carry those numbers and the run's decision rule
        -> kill at a checkpoint and `--resume`: the same metrics and predictions as the uninterrupted run
  LoRA train -> predict (adapter) -> merge -> predict (merged) and transformers.pipeline agree
  sanity.overfit_batch and sanity.lr_range_test run for the head
  masked_lm / causal_lm pretraining -> fine-tuning with each classifier head (a fresh head layer)
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import run_cli
from transformers import TrainerCallback

POS = ["good", "great", "fine", "superb", "lovely"]
NEG = ["bad", "awful", "poor", "dreadful", "boring"]
MID = ["plain", "average", "okay"]
FILLER = ["the", "film", "was", "plot", "actors", "and", "a", "it", "story"]
NAMES, PLACES = ["alice", "bob", "carol"], ["paris", "rome", "oslo"]

# name: (model fixture, head, data kind, model section extras)
CASES = {
    "sequence_classification": ("tiny_model", "sequence_classification", "three", {}),
    "binary": ("tiny_model", "binary", "two", {"head_options": {"threshold": "tune"}}),
    "multi_label": ("tiny_model", "multi_label", "multi", {"head_options": {"threshold": "tune", "tune_min_positives": 1}}),
    "regression": ("tiny_model", "regression", "count", {"head_options": {"standardize": True}}),
    "pairs": ("tiny_model", "sequence_classification", "pairs", {}),
    "custom": ("tiny_model", "binary", "two", {"head_config": {"pooling": "mean", "hidden_sizes": [8]}}),
    "token_classification": ("tiny_model", "token_classification", "tags", {}),
    "seq2seq": ("tiny_t5", "seq2seq", "reverse", {}),
    "causal_lm_sft": ("tiny_gpt2", "causal_lm_sft", "complete", {"head_options": {"max_new_tokens": 3}}),
    # A GPT-2 whose tokenizer has no pad token, as GPT-2's, Llama's and Qwen's: end-of-text pads.
    "decoder_classifier": ("tiny_decoder", "sequence_classification", "two", {}),
    # Long texts as windows pooled per document (DATA below): most test rows are two or three windows.
    "chunks": ("tiny_model", "sequence_classification", "three", {}),
    "chunks_max": ("tiny_model", "binary", "two", {"head_options": {"threshold": "tune"}}),
    # setfit trains by its own options (TrainingArguments' loop keys are refused): the loop's steps, batch and rate.
    "setfit": ("tiny_model", "setfit", "three", {"head_options": {"num_iterations": 1, "max_steps": 4, "batch_size": 8, "body_learning_rate": 1.0e-3}}),
}
# Heads that train by their own options: make_recipe leaves TrainingArguments' loop keys out for them.
OWN_LOOP = {"setfit"}
# (case, what) a head cannot run: the one-line refusal it gives instead, before anything is written.
REFUSED = {
    ("setfit", "sanity"): "error: sanity: head setfit has no Trainer loop to overfit a batch or sweep a learning rate in; leave sanity out",
    ("setfit", "peft"): "error: model.peft: head setfit trains the whole encoder with setfit; leave peft out",
}
DATA = {
    "chunks": {"long_text": "chunks", "max_length": 8, "chunk_overlap": 2},
    "chunks_max": {"long_text": "chunks", "max_length": 8, "chunk_overlap": 2, "chunk_pooling": "max"},
}
COLUMNS = {
    "pairs": (["premise", "hypothesis"], "label"), "tags": (["tokens"], "tags"),
    "reverse": (["source"], "target"), "complete": (["prompt"], "completion"),
}
LOOP = {"max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 1.0e-3}
TIMING = ("runtime", "samples_per_second", "steps_per_second", "preparation_time")


def sentence(rng, words) -> str:
    # 3-9 words: lengths differ, so batches are padded and every join sees padding.
    return " ".join(rng.choice(FILLER + words + words) for _ in range(rng.randint(3, 9)))


def row(kind: str, rng) -> dict:
    if kind in ("three", "two"):
        label = rng.choice(["pos", "neg", "mid"] if kind == "three" else ["pos", "neg"])
        return {"text": sentence(rng, {"pos": POS, "neg": NEG, "mid": MID}[label]), "label": label}
    if kind == "multi":
        labels = sorted(set(rng.sample(["a", "b", "c"], rng.randint(1, 2))))
        return {"text": " ".join(f"{x} {sentence(rng, [])}" for x in labels), "label": ",".join(labels)}
    if kind == "count":
        text = sentence(rng, POS)
        return {"text": text, "label": float(sum(w in POS for w in text.split()))}
    if kind == "pairs":
        a, b = rng.choice([POS, NEG]), rng.choice([POS, NEG])
        return {"premise": sentence(rng, a), "hypothesis": sentence(rng, b), "label": "same" if a is b else "different"}
    if kind == "tags":
        words, tags = [], []
        for _ in range(rng.randint(2, 6)):
            word = rng.choice(FILLER + NAMES + PLACES)
            words.append(word)
            tags.append("B-PER" if word in NAMES else "B-LOC" if word in PLACES else "O")
        return {"tokens": words, "tags": tags}
    if kind == "reverse":
        seq = rng.sample(FILLER, 3)
        return {"source": " ".join(seq), "target": " ".join(reversed(seq))}
    country = rng.choice(["france", "italy", "norway"])
    return {"prompt": f"the capital of {country} is", "completion": {"france": "paris", "italy": "rome", "norway": "oslo"}[country]}


def write_split(folder: Path, kind: str, name: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    rows = [row(kind, rng) for _ in range(n)]
    if kind == "tags":  # word lists: JSON lines
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path = folder / f"{name}.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def make_recipe(request, case: str, folder: Path, output_dir: Path, plots: bool = False, **training) -> dict:
    fixture, head, kind, model = CASES[case]
    folder.mkdir(parents=True, exist_ok=True)
    text_columns, label = COLUMNS.get(kind, (["text"], "label"))
    return {
        "model": {"name_or_path": request.getfixturevalue(fixture), "head": head, **model},
        "data": {
            "train_file": write_split(folder, kind, "train", 32, 1),
            "validation_file": write_split(folder, kind, "validation", 12, 2),
            # 10 rows in batches of 4: the last batch is partial, as real test sets' are.
            "test_file": write_split(folder, kind, "test", 10, 3),
            "text_columns": text_columns, "label_column": label, "max_length": 24, **DATA.get(case, {}),
        },
        "training": {
            "output_dir": str(output_dir), **({} if head in OWN_LOOP else LOOP), "per_device_eval_batch_size": 4,
            "logging_steps": 2, "save_strategy": "no", "report_to": "none", "seed": 0, "disable_tqdm": True, **training,
        },
        # The session's shared runs draw every head's figures; the many runs a test trains for itself need none.
        "report": {"plots": plots},
    }


def write(recipe: dict, path: Path) -> str:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def refused(recipe_path: str, error: str, output_dir: Path, *args: str) -> None:
    """The run is refused with exactly `error`, one line, and nothing is written."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_cli([recipe_path, *args]) == 2
    assert err.getvalue().strip().splitlines() == [error]
    assert not output_dir.exists()


def metrics_of(folder) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


def scores(split_metrics: dict) -> dict:
    return {k: v for k, v in split_metrics.items() if not k.endswith(TIMING)}


def predictions_file(folder: Path) -> Path:
    return next(p for p in (folder / "predictions.csv", folder / "predictions.jsonl") if p.exists())


def predicted(path: Path) -> dict[str, list]:
    """The prediction columns of a predictions file, as written: strings for CSV fields, JSON values for JSON lines."""
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])
    return {c: frame[c].tolist() for c in frame.columns if c.startswith(("predicted", "prob_", "generated"))}


class Run:
    def __init__(self, recipe: dict, recipe_path: str):
        self.recipe, self.recipe_path = recipe, recipe_path
        self.dir = Path(recipe["training"]["output_dir"])
        self.test = recipe["data"]["test_file"]


RUNS: dict[str, Run] = {}  # case -> its run, for the whole session


def trained_run(request, tmp_path_factory, case: str) -> Run:
    """`make_recipe`'s run of `case`, unchanged, trained at its first use in the session. Other test files
    (serve, fixed costs, long texts) read the same runs instead of training the same recipe again; a test
    that changes a run writes its changes beside it, never into it."""
    if case not in RUNS:
        folder = tmp_path_factory.mktemp(case)
        recipe = make_recipe(request, case, folder / "data", folder / "run", plots=True)
        path = write(recipe, folder / "recipe.yaml")
        assert run_cli([path]) == 0
        RUNS[case] = Run(recipe, path)
    return RUNS[case]


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, tmp_path_factory) -> Run:
    return trained_run(request, tmp_path_factory, request.param)


def test_predict_writes_the_runs_own_predictions(trained, tmp_path):
    want = predictions_file(trained.dir)
    out = tmp_path / f"predicted{want.suffix}"
    assert run_cli(["predict", trained.dir, "--input", trained.test, "--output", out]) == 0
    got, expected = predicted(out), predicted(want)
    assert expected and got == expected


def test_evaluate_gives_the_runs_test_metrics(trained, tmp_path, capsys):
    out = tmp_path / "evaluation.json"
    assert run_cli(["evaluate", trained.dir, "--input", trained.test, "--metrics", out]) == 0
    got, run = json.loads(out.read_text()), metrics_of(trained.dir)
    assert got["metrics"] == scores(run["test"])
    if "test" in run["evaluation"]:
        assert got["scores"] == run["evaluation"]["test"]["scores"]
    assert got["decision_rule"] == run["decision_rule"]


def test_report_and_model_card_carry_the_runs_numbers(trained):
    from huggingface_hub import ModelCard

    run = metrics_of(trained.dir)
    test = {k: v for k, v in scores(run["test"]).items() if isinstance(v, float)}
    # The head's full table scores with the run's decision rule: it agrees with the recipe's metrics.
    table = (run["evaluation"].get("test") or {}).get("scores", {})
    for key in set(table) & set(test):
        assert table[key] == pytest.approx(test[key], abs=1e-9), key
    report = (trained.dir / "report.md").read_text()
    for key, value in test.items():
        assert f"| {key} | " in report, key
        if abs(value) < 100:  # larger values (a tiny model's perplexity) are shown with fewer decimals
            assert f"{value:.4f}" in report, key
    card = ModelCard.load(trained.dir / "README.md")
    published = {r.metric_type: r.metric_value for r in card.data.eval_results or []}
    assert published and all(published[k] == round(v, 4) for k, v in test.items() if k in published)
    if run["decision_rule"]:
        assert run["decision_rule"] in report and run["decision_rule"] in card.text


class SignalAt(TrainerCallback):
    """Send this process SIGTERM at a step's end, as a scheduler's kill would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow  # a second or third tiny run per head
def test_kill_and_resume_ends_where_the_uninterrupted_run_ends(trained, tmp_path):
    import run as runner
    from recipekit.recipe.build import load_recipe

    recipe = json.loads(json.dumps(trained.recipe))
    recipe["training"].update(output_dir=str(tmp_path / "cut"), save_strategy="steps", save_steps=2)
    path = write(recipe, tmp_path / "recipe.yaml")
    assert runner.fine_tune(load_recipe(path), callbacks=[SignalAt(2)]) == 128 + signal.SIGTERM
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert run_cli([path, "--resume"]) == 0
    resumed, whole = metrics_of(tmp_path / "cut"), metrics_of(trained.dir)
    assert scores(resumed["test"]) == scores(whole["test"])
    # The train loss is the whole run's, the steps before the kill included (each head logs every step here).
    assert resumed["train"]["train_loss"] == pytest.approx(whole["train"]["train_loss"], rel=1e-4)
    assert predicted(predictions_file(tmp_path / "cut")) == predicted(predictions_file(trained.dir))


@pytest.mark.slow  # a second or third tiny run per head
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("check", ["overfit_batch", "lr_range_test"])
def test_sanity_checks_run_with_every_head(request, case, check, tmp_path):
    recipe = make_recipe(request, case, tmp_path / "data", tmp_path / "run")
    recipe["sanity"] = {check: True, "overfit_steps": 3, "overfit_loss": 1.0e6, "lr_range_steps": 4}
    if (case, "sanity") in REFUSED:
        return refused(write(recipe, tmp_path / "recipe.yaml"), REFUSED[case, "sanity"], tmp_path / "run")
    assert run_cli([write(recipe, tmp_path / "recipe.yaml")]) == 0
    written = tmp_path / "run" / "sanity" / check / f"{check}.json"
    assert written.exists()
    if check == "overfit_batch":
        assert json.loads(written.read_text())["passed"] is True  # a target no loss misses: the check ran to its end
    assert not (tmp_path / "run" / "metrics.json").exists()


# pipeline(task) on the merged model, and how its answer reads against the run's prediction columns.
def pipeline_answers(task: str, merged: Path, case: str, frame_inputs: list) -> list:
    from transformers import pipeline

    if case == "custom":
        import recipekit.heads  # noqa: F401  (registers the custom head's model class, as the model card says)
    pipe = pipeline(task, model=str(merged), device="cpu")
    if task == "text-classification":  # cut as the run cut its texts
        return [p["label"] for p in pipe(frame_inputs, truncation=True, max_length=24)]
    return [p[0]["generated_text"].strip() for p in pipe(frame_inputs, max_new_tokens=3, do_sample=False)]


PIPELINE_CASES = {"sequence_classification": "text-classification", "decoder_classifier": "text-classification"}


@pytest.mark.slow  # a second or third tiny run per head
@pytest.mark.parametrize("case", list(CASES))
def test_lora_run_predicts_merges_and_the_merged_model_agrees(request, case, tmp_path):
    recipe = make_recipe(request, case, tmp_path / "data", tmp_path / "run")
    recipe["model"]["peft"] = {"r": 4, "lora_alpha": 8}
    if (case, "peft") in REFUSED:
        return refused(write(recipe, tmp_path / "recipe.yaml"), REFUSED[case, "peft"], tmp_path / "run")
    assert run_cli([write(recipe, tmp_path / "recipe.yaml")]) == 0
    run = tmp_path / "run"
    assert (run / "adapter_config.json").exists() and not (run / "model.safetensors").exists()
    assert json.loads((run / "head_state.json").read_text())["head"] == recipe["model"]["head"]
    want = predicted(predictions_file(run))

    out = tmp_path / f"adapter{predictions_file(run).suffix}"
    assert run_cli(["predict", run, "--input", recipe["data"]["test_file"], "--output", out]) == 0
    assert predicted(out) == want

    merged = tmp_path / "merged"
    assert run_cli_module_lora(run, merged) == 0
    out = tmp_path / f"merged{predictions_file(run).suffix}"
    assert run_cli(["predict", merged, "--input", recipe["data"]["test_file"], "--output", out]) == 0
    got = predicted(out)
    # Folding the adapter into the weights changes float rounding only.
    for column, values in want.items():
        if column.startswith("prob_") or (case == "regression" and column == "predicted"):
            assert [float(v) for v in got[column]] == pytest.approx([float(v) for v in values], abs=1e-5), column
        else:
            assert got[column] == values, column
    if case in PIPELINE_CASES:
        texts = pd.read_csv(recipe["data"]["test_file"])["text"].tolist()
        assert pipeline_answers(PIPELINE_CASES[case], merged, case, texts) == want["predicted"]


def run_cli_module_lora(run, merged) -> int:
    from recipekit.commands.cli import guarded
    from recipekit.commands.merge import main

    return guarded(main, [str(run), str(merged)])


CLASSIFIER_CASES = ["sequence_classification", "binary", "multi_label", "regression", "pairs", "custom", "token_classification"]


@pytest.fixture(scope="module")
def pretrained(request, tmp_path_factory) -> dict[str, str]:
    """A masked_lm run on BERT and a causal_lm run on GPT-2: each output folder is a model to fine-tune."""
    out = {}
    for head, fixture in (("masked_lm", "tiny_model"), ("causal_lm", "tiny_gpt2")):
        folder = tmp_path_factory.mktemp(head)
        rng = random.Random(0)
        corpus = folder / "corpus.csv"
        pd.DataFrame({"text": [sentence(rng, POS + NEG) for _ in range(64)]}).to_csv(corpus, index=False)
        recipe = {
            "model": {"name_or_path": request.getfixturevalue(fixture), "head": head, "head_options": {"block_size": 16}},
            "data": {"train_file": str(corpus)},
            "training": {"output_dir": str(folder / "run"), "max_steps": 2, "per_device_train_batch_size": 8,
                         "save_strategy": "no", "report_to": "none", "seed": 0, "disable_tqdm": True},
            "report": {"plots": False},
        }
        assert run_cli([write(recipe, folder / "recipe.yaml")]) == 0
        out[head] = str(folder / "run")
    return out


@pytest.mark.slow  # a second or third tiny run per head
@pytest.mark.parametrize("case", CLASSIFIER_CASES)
@pytest.mark.parametrize("objective", ["masked_lm", "causal_lm"])
def test_a_pretrained_output_fine_tunes_with_every_classifier_head(request, pretrained, objective, case, tmp_path):
    recipe = make_recipe(request, case, tmp_path / "data", tmp_path / "run")
    recipe["model"]["name_or_path"] = pretrained[objective]
    assert run_cli([write(recipe, tmp_path / "recipe.yaml")]) == 0
    state = json.loads((tmp_path / "run" / "head_state.json").read_text())
    assert state["head"] == recipe["model"]["head"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["recipekit"]["head"] == recipe["model"]["head"]
    # The saved model is the classifier, not the pretraining objective's model.
    assert not any(a.endswith(("ForMaskedLM", "LMHeadModel", "ForCausalLM")) for a in config["architectures"])
    out = tmp_path / f"predicted{predictions_file(tmp_path / 'run').suffix}"
    assert run_cli(["predict", tmp_path / "run", "--input", recipe["data"]["test_file"], "--output", out]) == 0
    assert predicted(out) == predicted(predictions_file(tmp_path / "run"))


@pytest.mark.slow  # a Python process per head
@pytest.mark.parametrize("trained", ["sequence_classification", "decoder_classifier", "custom"], indirect=True)
def test_the_model_cards_snippet_runs_as_shown_and_agrees(trained, tmp_path):
    """The card's `pipeline` snippet, run in a fresh interpreter from the run's parent folder, labels the test
    texts as the run did (custom pooled heads need the project's import, which the snippet shows)."""
    import subprocess
    import sys

    card = (trained.dir / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    texts = pd.read_csv(trained.test)["text"].tolist()
    limit = trained.recipe["data"]["max_length"]
    assert f"truncation=True, max_length={limit}" in snippet
    script = [*snippet.splitlines(), f"print(__import__('json').dumps([classifier(t, truncation=True, max_length={limit})[0] for t in {texts!r}]))"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", "\n".join(script)], cwd=trained.dir.parent, capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    want = predicted(predictions_file(trained.dir))
    if trained.recipe["model"]["head"] == "binary":  # one sigmoid output: the pipeline gives P(positive)
        assert [a["score"] for a in answers] == pytest.approx([float(p) for p in want["prob_pos"]], abs=1e-5)
    else:
        assert [a["label"] for a in answers] == want["predicted"]


@pytest.mark.parametrize("trained", ["sequence_classification"], indirect=True)
def test_predict_takes_the_package_form_recipes_take(trained, tmp_path):
    out = tmp_path / "sample.csv"
    assert run_cli(["predict", trained.dir, "--input", "package:recipekit/sample_data/reviews_test.csv", "--output", out]) == 0
    assert len(pd.read_csv(out)) == 120


@pytest.mark.parametrize("case", ["sequence_classification", "token_classification", "regression"])
def test_init_scratch_builds_a_new_model_for_any_head(request, case, tmp_path):
    recipe = make_recipe(request, case, tmp_path / "data", tmp_path / "run")
    tiny = recipe["model"].pop("name_or_path")
    recipe["model"].update(init="scratch", family="bert", config={"hidden_size": 16, "num_hidden_layers": 1,
                                                                  "num_attention_heads": 2, "intermediate_size": 32})
    recipe["tokenizer"] = {"name_or_path": tiny}
    assert run_cli([write(recipe, tmp_path / "recipe.yaml")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (16, 1)
    assert config["recipekit"]["init"] == "scratch" and metrics_of(tmp_path / "run")["head_state"]["init"] == "scratch"


def test_keys_that_cannot_apply_are_refused_where_they_cannot(request, tmp_path, capsys):
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run")
    recipe["model"].update(head="masked_lm", head_options={"block_size": 16})
    assert run_cli([write(recipe, tmp_path / "a.yaml")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: data.max_length: masked_lm cuts its corpus into blocks of model.head_options.block_size tokens (now 16); set that instead"
    )
    recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run")
    recipe["model"]["head_config"] = {"pooling": "mean", "freeze_layers": 1}
    assert run_cli([write(recipe, tmp_path / "b.yaml")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: model.head_config.freeze_layers: freezing layers is regularization.freeze_layers, for every head; move it there"
    )
    assert not (tmp_path / "run").exists()


def test_predict_and_evaluate_refuse_a_pretraining_run_in_one_line(pretrained, tmp_path, capsys):
    text = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a good film"], "label": ["pos"]}).to_csv(text, index=False)
    for command in ("predict", "evaluate"):
        assert run_cli([command, pretrained["masked_lm"], "--input", text]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"error: {pretrained['masked_lm']}: a masked_lm pretraining run has nothing to predict; fine-tune it")
