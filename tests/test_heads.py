"""Every head end to end on a toy task it can learn, with tiny models built from configs; bad input per head."""

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli

from recipekit.core.errors import RecipeError
from recipekit.evaluation import metrics as M
from recipekit.recipe.build import build_recipe

POSITIVE = ["good", "great", "fine", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "dreadful", "boring"]
FILLER = ["the", "film", "was", "plot", "actors", "and", "a", "it", "story"]


def review(rng, words, n=6) -> str:
    return " ".join(rng.choice(FILLER + words + words) for _ in range(n))


def write_csv(path, rows) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def recipe(path, train, head, tmp_path, **sections) -> dict:
    out = {
        "model": {"name_or_path": path, "head": head, **sections.pop("model", {})},
        "data": {"train_file": train, "max_length": 32, **sections.pop("data", {})},
        "training": {
            "output_dir": str(tmp_path / "out"), "max_steps": 40, "per_device_train_batch_size": 16,
            "learning_rate": 3.0e-3, "logging_steps": 5, "save_strategy": "no", "report_to": "none", "seed": 0,
            "disable_tqdm": True, **sections.pop("training", {}),
        },
    }
    out.update(sections)
    return out


def run(write_recipe, raw, *extra) -> dict:
    assert run_cli([write_recipe(raw), *extra]) == 0
    out = raw["training"]["output_dir"]
    with open(f"{out}/metrics.json") as f:
        return json.load(f)


def losses(output_dir) -> list[float]:
    with open(f"{output_dir}/trainer_state.json") as f:
        return [row["loss"] for row in json.load(f)["log_history"] if "loss" in row]


def errors_of(write_recipe, raw, capsys) -> list[str]:
    assert run_cli([write_recipe(raw)]) == 2
    # datasets prints progress bars on stderr too; the user's error lines are the ones that say so.
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.fixture
def sentiment(tmp_path):
    rng = random.Random(0)
    rows = [{"text": review(rng, POSITIVE if i % 2 else NEGATIVE), "label": "pos" if i % 2 else "neg"} for i in range(400)]
    return {
        "train": write_csv(tmp_path / "train.csv", rows[:300]),
        "validation": write_csv(tmp_path / "validation.csv", rows[300:350]),
        "test": write_csv(tmp_path / "test.csv", rows[350:]),
    }


# binary


@pytest.mark.slow  # trains a tiny model for 40-150 steps: 20-60 s on 2 busy CPU cores
def test_binary_learns_with_one_logit_and_stores_the_tuned_threshold(tiny_model, sentiment, tmp_path, write_recipe):
    raw = recipe(tiny_model, sentiment["train"], "binary", tmp_path, model={"head_options": {"threshold": "tune"}},
                 data={"validation_file": sentiment["validation"], "test_file": sentiment["test"]}, report={"plots": True})
    result = run(write_recipe, raw)
    assert result["test"]["accuracy"] >= 0.9
    assert result["test"]["roc_auc"] >= 0.95
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    # One output, never the regression that transformers infers from num_labels=1.
    assert config["id2label"] == {"0": "pos"} and config["problem_type"] == "multi_label_classification"
    assert config["recipekit"]["labels"] == ["neg", "pos"]
    assert config["recipekit"]["threshold"] == result["tuned"]["threshold"] == result["test"]["threshold"]
    assert 0.0 < config["recipekit"]["threshold"] < 1.0
    frame = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(frame.columns) == ["text", "label", "predicted", "prob_pos"]
    assert ((frame["prob_pos"] >= config["recipekit"]["threshold"]) == (frame["predicted"] == "pos")).all()
    report = (tmp_path / "out" / "report.md").read_text()
    for png in ("confusion_matrix.png", "roc.png", "pr.png", "reliability.png"):
        assert (tmp_path / "out" / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png in report
    assert result["evaluation"]["test"]["scores"]["roc_auc"] == pytest.approx(result["test"]["roc_auc"])


def test_binary_needs_two_labels_and_tune_needs_validation(tiny_model, tmp_path, write_recipe, capsys):
    three = write_csv(tmp_path / "three.csv", [{"text": "a", "label": x} for x in "abc"])
    assert errors_of(write_recipe, recipe(tiny_model, three, "binary", tmp_path), capsys) == [
        "error: data.label_column: head binary needs exactly 2 labels, the training split has 3: a, b, c"
    ]
    raw = recipe(tiny_model, three, "binary", tmp_path, model={"head_options": {"threshold": "tune"}})
    assert errors_of(write_recipe, raw, capsys) == [
        ("error: model.head_options.threshold: tune needs a validation set "
        "(data.validation_file, validation_split_name or validation_split)")
    ]


# sequence_classification: class weights and label smoothing


def test_class_weights_auto_are_balanced_and_smoothing_reaches_the_loss(tmp_path):
    from datasets import ClassLabel, Dataset

    from recipekit.heads import HEADS, build_head

    head = build_head("sequence_classification", {"class_weights": "auto"}, state=HEADS["sequence_classification"].State("sequence_classification", ["a", "b", "c"]))
    train = Dataset.from_dict({"labels": [0] * 6 + [1] * 3 + [2]}).cast_column("labels", ClassLabel(names=head.labels))
    head.learn(train)
    # sklearn's "balanced": n / (classes * count) = 10 / (3 * [6, 3, 1])
    assert head.state.class_weights == pytest.approx([10 / 18, 10 / 9, 10 / 3], abs=1e-6)

    class Args:
        label_smoothing_factor = 0.1

    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    got = head.loss(Args)({"logits": logits}, labels)
    weight = torch.tensor(head.state.class_weights)
    per_item = torch.nn.functional.cross_entropy(logits, labels, weight=weight, label_smoothing=0.1, reduction="none")
    assert got.item() == pytest.approx(per_item.mean().item(), rel=1e-6)
    # With gradient accumulation Trainer passes the item count of the whole accumulated batch.
    assert head.loss(Args)({"logits": logits}, labels, num_items_in_batch=8).item() == pytest.approx(per_item.sum().item() / 8)


def test_class_weights_must_match_the_labels(tiny_model, sentiment, tmp_path, write_recipe, capsys):
    raw = recipe(tiny_model, sentiment["train"], "sequence_classification", tmp_path,
                 model={"head_options": {"class_weights": [1.0, 2.0, 3.0]}})
    assert errors_of(write_recipe, raw, capsys) == ["error: model.head_options.class_weights: 3 weights for 2 labels (neg, pos)"]
    assert not (tmp_path / "out").exists()


# multi_label


@pytest.fixture
def topics(tmp_path):
    """Each text mentions one or two topics; its labels, as GoEmotions stores them, are a string like '0,2'."""
    rng = random.Random(1)
    words = {0: "goal match team", 1: "vote party law", 2: "cake bake sugar"}
    rows = []
    for _ in range(360):
        chosen = sorted(rng.sample(range(3), rng.choice([1, 1, 2])))
        text = " ".join(rng.choice(words[c].split()) for c in chosen for _ in range(2)) + " " + rng.choice(FILLER)
        rows.append({"text": text, "label": ",".join(map(str, chosen))})
    return {
        "train": write_csv(tmp_path / "train.csv", rows[:300]),
        "validation": write_csv(tmp_path / "validation.csv", rows[300:330]),
        "test": write_csv(tmp_path / "test.csv", rows[330:]),
    }


@pytest.mark.slow  # trains a tiny model for 40-150 steps: 20-60 s on 2 busy CPU cores
def test_multi_label_learns_and_saves_per_label_thresholds(tiny_model, topics, tmp_path, write_recipe):
    raw = recipe(tiny_model, topics["train"], "multi_label", tmp_path, model={"head_options": {"threshold": "tune"}},
                 data={"validation_file": topics["validation"], "test_file": topics["test"]}, training={"max_steps": 150})
    result = run(write_recipe, raw)
    assert result["test"]["f1_micro"] >= 0.9
    assert set(result["test"]) >= {"f1_macro", "subset_accuracy", "roc_auc_macro", "f1_label_0", "f1_label_1", "f1_label_2"}
    assert result["data"]["labels"]["train"] == {k: v for k, v in result["data"]["labels"]["train"].items()}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_labels"] if "num_labels" in config else len(config["id2label"]) == 3
    assert config["recipekit"]["labels"] == ["0", "1", "2"]
    assert len(config["recipekit"]["thresholds"]) == 3
    frame = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"label": str, "predicted": str})
    assert list(frame.columns) == ["text", "label", "predicted", "prob_0", "prob_1", "prob_2"]
    assert (frame["label"] == frame["predicted"]).mean() >= 0.8


def test_multi_label_reads_lists_and_rejects_empty_and_unknown(tiny_model, tmp_path, write_recipe, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "tags": ["x", "y"]}, {"text": "b", "tags": ["y"]}])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "a", "tags": ["x"]}, {"text": "b", "tags": ["z"]}])
    raw = recipe(tiny_model, train, "multi_label", tmp_path, data={"label_column": "tags", "validation_file": val})
    assert errors_of(write_recipe, raw, capsys) == [
        f"error: data.label_column: {val} line 2: column 'tags': label not seen in training: ['z']; training labels: x, y"
    ]
    # A missing label (None) is dropped and counted by data.py's checks; an empty list is an error.
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": "a", "label": ["x"]}, {"text": "b", "label": None},
                                                   {"text": "c", "label": []}, {"text": "d", "label": []}])
    raw = recipe(tiny_model, empty, "multi_label", tmp_path)
    assert errors_of(write_recipe, raw, capsys) == [
        (f"error: data.label_column: {empty} line 3: column 'label': empty label list: [] (2 rows like it in train); "
        "set model.head_options.allow_empty: true if rows may have no label")
    ]


# regression


@pytest.mark.slow  # trains a tiny model for 40-150 steps: 20-60 s on 2 busy CPU cores
def test_regression_learns_a_count_and_undoes_standardisation(tiny_model, tmp_path, write_recipe):
    rng = random.Random(2)
    rows = []
    for _ in range(360):
        k = rng.randint(0, 4)
        words = ["good"] * k + [rng.choice(FILLER) for _ in range(5 - k)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "score": 100.0 + 10.0 * k})  # far from 0: standardisation matters
    train = write_csv(tmp_path / "train.csv", rows[:300])
    test = write_csv(tmp_path / "test.csv", rows[300:])
    raw = recipe(tiny_model, train, "regression", tmp_path, model={"head_options": {"standardize": True, "loss": "huber"}},
                 data={"label_column": "score", "test_file": test}, training={"max_steps": 60}, report={"plots": True})
    result = run(write_recipe, raw)
    history = losses(tmp_path / "out")
    assert history[-1] < 0.3 * history[0]
    assert result["test"]["pearson"] >= 0.9 and result["test"]["spearman"] >= 0.9
    assert result["test"]["rmse"] < 7.0  # targets span 100..140 with std about 14
    frame = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(frame.columns) == ["text", "score", "predicted"]  # the gold column keeps its own name
    assert abs(frame["predicted"].mean() - frame["score"].mean()) < 5.0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "regression"
    assert config["recipekit"]["target_mean"] == pytest.approx(120.0, abs=3.0)
    scatter = tmp_path / "out" / "plots" / "scatter.png"
    assert scatter.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and scatter.stat().st_size > 10_000
    assert "scatter.png" in (tmp_path / "out" / "report.md").read_text()
    assert result["evaluation"]["test"]["scores"]["rmse"] == pytest.approx(result["test"]["rmse"], rel=1e-4)


def test_regression_target_must_be_a_number(tiny_model, tmp_path, write_recipe, capsys):
    train = write_csv(tmp_path / "train.csv", [{"text": "a", "label": 1.5}, {"text": "b", "label": "high"}, {"text": "c", "label": 2}])
    assert errors_of(write_recipe, recipe(tiny_model, train, "regression", tmp_path), capsys) == [
        f"error: data.label_column: {train} line 3: column 'label': target is not a finite number: 'high'"
    ]


# sentence pairs


def test_sentence_pairs_truncate_longest_first(minilm_path):
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    from recipekit.data.tokenizing import tokenize
    from recipekit.recipe.data import DataArgs

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    premise, hypothesis = " ".join(["word"] * 100), "a short claim"
    splits = DatasetDict({"train": Dataset.from_dict({"premise": [premise], "hypothesis": [hypothesis], "labels": [0]})})
    args = DataArgs(train_file="x.csv", text_columns=["premise", "hypothesis"], max_length=20)
    tokenized, _ = tokenize(splits, tokenizer, args)
    ids = tokenized["train"][0]["input_ids"]
    assert len(ids) == 20
    # [CLS] premise [SEP] hypothesis [SEP]: the long premise was cut, the short hypothesis kept whole.
    assert tokenizer.decode(ids[ids.index(102) + 1:], skip_special_tokens=True) == hypothesis


@pytest.mark.slow  # trains a tiny model for 40-150 steps: 20-60 s on 2 busy CPU cores
def test_sentence_pairs_train_a_binary_head(tiny_model, tmp_path, write_recipe):
    rng = random.Random(3)
    rows = []
    for i in range(240):
        a = rng.choice(POSITIVE + NEGATIVE)
        same = i % 2 == 0
        b = a if same else rng.choice([w for w in POSITIVE + NEGATIVE if w != a])
        rows.append({"first": f"the film was {a}", "second": f"it is {b}", "label": int(same)})
    train = write_csv(tmp_path / "train.csv", rows)
    raw = recipe(tiny_model, train, "binary", tmp_path, data={"text_columns": ["first", "second"]})
    run(write_recipe, raw)
    history = losses(tmp_path / "out")
    assert history[-1] < history[0]


# custom heads


@pytest.mark.slow  # trains a tiny model for 40-150 steps: 20-60 s on 2 busy CPU cores
def test_custom_head_trains_saves_and_reloads_exactly(tiny_model, sentiment, tmp_path, write_recipe):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from recipekit.heads.custom import EncoderWithHead

    raw = recipe(tiny_model, sentiment["train"], "sequence_classification", tmp_path,
                 model={"head_config": {"pooling": "mean", "hidden_sizes": [16], "activation": "tanh"}},
                 regularization={"freeze_layers": 1, "freeze_embeddings": True},
                 data={"test_file": sentiment["test"]})
    result = run(write_recipe, raw)
    assert result["test"]["accuracy"] >= 0.9
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert isinstance(model, EncoderWithHead) and model.config.head["hidden_sizes"] == [16]
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    frame = pd.read_csv(tmp_path / "out" / "predictions.csv")
    with torch.no_grad():
        probs = model(**tokenizer(list(frame["text"][:5]), return_tensors="pt", padding=True)).logits.softmax(-1)
    assert probs[:, 1].numpy() == pytest.approx(frame["prob_pos"][:5].to_numpy(), abs=1e-5)
    # regularization.freeze_layers froze the embeddings and layer 0 of the custom head's encoder during the run.
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 40 and result["model"]["trainable_parameters"] < result["model"]["parameters"]


def test_frozen_encoder_gets_no_gradient_and_mean_pooling_ignores_padding(tiny_model):
    from transformers import AutoModel, AutoTokenizer

    from recipekit.heads.custom import EncoderWithHead, HeadConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = EncoderWithHead.on_encoder(AutoModel.from_pretrained(tiny_model), HeadConfig(pooling="mean", freeze_encoder=True), 2)
    batch = tokenizer(["a good film"], return_tensors="pt")
    model(**batch).logits.sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.head.parameters())

    for pooling in ("mean", "max"):
        model = EncoderWithHead.on_encoder(AutoModel.from_pretrained(tiny_model), HeadConfig(pooling=pooling, dropout=0.0), 2).eval()
        short = tokenizer(["a good film"], padding="max_length", max_length=8, return_tensors="pt")
        long = tokenizer(["a good film"], padding="max_length", max_length=64, return_tensors="pt")
        with torch.no_grad():
            assert torch.allclose(model(**short).logits, model(**long).logits, atol=1e-5)


def test_head_config_errors(tiny_model, sentiment, tmp_path):
    base = recipe(tiny_model, sentiment["train"], "token_classification", tmp_path, model={"head_config": {"pooling": "mean"}})
    with pytest.raises(RecipeError) as e:
        build_recipe(base)
    assert e.value.problems == [
        ("model.head_config: head 'token_classification' has no custom head; heads that take one: "
        "sequence_classification, binary, multi_label, regression")
    ]
    base["model"].update(head="binary", head_config={"pooling": "avg", "dropout": 1.5}, head_options={"threshold": "best"})
    with pytest.raises(RecipeError) as e:
        build_recipe(base)
    assert e.value.problems == [
        "model.head_options.threshold: 'best' must be a probability in (0, 1) or tune",
        "model.head_config.pooling: 'avg' is not valid. Choices: cls, mean, max",
    ]
    base["model"].update(head_config={"dropout": 1.5}, head_options={"threshol": 0.3})
    with pytest.raises(RecipeError) as e:
        build_recipe(base)
    assert e.value.problems == [
        "model.head_options.threshol: unknown key; did you mean 'threshold'? Valid keys: threshold, positive_label",
        "model.head_config.dropout: 1.5 must be in [0, 1)",
    ]


def test_metrics_are_checked_against_the_head(tiny_model, sentiment, tmp_path):
    raw = recipe(tiny_model, sentiment["train"], "regression", tmp_path, metrics=["rmse", "accuracy"])
    with pytest.raises(RecipeError) as e:
        build_recipe(raw)
    assert e.value.problems == ["metrics: 'accuracy' is not a metric of head regression. Choices: rmse, mae, pearson, spearman, r2"]
    del raw["metrics"]
    assert build_recipe(raw).metrics == ["rmse", "mae", "pearson", "spearman", "r2"]


# token_classification


def test_entities_follow_seqeval_rules():
    from recipekit.evaluation.metrics import entities, entity_scores

    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # conlleval: an I- after O (or after another type) starts an entity; a type change ends one.
    assert entities(["O", "I-PER", "I-PER", "I-LOC"]) == [("PER", 1, 2), ("LOC", 3, 3)]
    assert entities(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]
    # seqeval's README example: 1 of 2 predicted entities right, 1 of 2 gold found.
    true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = entity_scores(true, pred)
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0.5
    assert scores["accuracy"] == pytest.approx(8 / 10)  # tags 2 and 3 of the first sentence differ


def test_only_the_first_sub_token_of_a_word_is_labelled(minilm_path):
    from transformers import AutoTokenizer

    from recipekit.heads.tagging import align

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    enc = tokenizer(["Johanssonberg", "visited", "Reykjavik"], is_split_into_words=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    labels = align(enc.word_ids(), [1, 0, 2])
    assert len(tokens) > 5  # both names split into several pieces
    first_pieces = [t for t, lab in zip(tokens, labels) if lab != -100]
    assert [lab for lab in labels if lab != -100] == [1, 0, 2]
    assert first_pieces == [tokenizer.tokenize("Johanssonberg")[0], "visited", tokenizer.tokenize("Reykjavik")[0]]
    assert labels[0] == labels[-1] == -100  # [CLS], [SEP]


def people_and_places(rng, n):
    names, places = ["alice", "bob", "carol", "dave"], ["paris", "rome", "oslo", "lima"]
    rows = []
    for _ in range(n):
        who, where = rng.choice(names), rng.choice(places)
        words = [who, rng.choice(["smith", "jones"]), "went", "to", where, "today"]
        tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
        rows.append({"tokens": words, "ner_tags": tags})
    return rows


@pytest.mark.slow  # trains a tiny model for 40-150 steps: 20-60 s on 2 busy CPU cores
def test_token_classification_learns_tags_from_conll_and_json(tiny_model, tmp_path, write_recipe):
    rng = random.Random(4)
    rows = people_and_places(rng, 200)
    conll = tmp_path / "train.conll"
    conll.write_text("-DOCSTART- -X- O O\n\n" + "\n\n".join(
        "\n".join(f"{w} NN O {t}" for w, t in zip(r["tokens"], r["ner_tags"])) for r in rows
    ) + "\n")
    # The CoNLL reader names its columns tokens/tags; a JSON lines file names its own.
    test = write_jsonl(tmp_path / "test.jsonl", [{"tokens": r["tokens"], "tags": r["ner_tags"]} for r in people_and_places(rng, 20)])
    raw = recipe(tiny_model, str(conll), "token_classification", tmp_path,
                 data={"text_columns": ["tokens"], "label_column": "tags", "test_file": test})
    result = run(write_recipe, raw)
    history = losses(tmp_path / "out")
    assert history[-1] < 0.3 * history[0]
    assert result["test"]["f1"] >= 0.9
    assert result["data"]["sizes"] == {"train": 200, "test": 20}
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and set(lines[0]) == {"tokens", "tags", "predicted"}
    assert all(len(x["predicted"]) == len(x["tokens"]) for x in lines)
    assert np.mean([x["predicted"] == x["tags"] for x in lines]) >= 0.8

    # `run.py predict` on the same file gives the run's own tags; plain text is split on whitespace.
    again = tmp_path / "again.jsonl"
    assert run_cli(["predict", tmp_path / "out", "--input", test, "--output", again]) == 0
    assert [json.loads(x)["predicted"] for x in again.read_text().splitlines()] == [x["predicted"] for x in lines]
    texts = write_csv(tmp_path / "texts.csv", [{"tokens": "carol jones went to lima today"}, {"tokens": ""}])
    assert run_cli(["predict", tmp_path / "out", "--input", texts, "--output", tmp_path / "tags.csv"]) == 0
    tagged = pd.read_csv(tmp_path / "tags.csv", keep_default_na=False)
    # The text column is read as the words it splits into: one tag per word shown.
    assert list(tagged.columns) == ["tokens", "predicted"] and tagged["tokens"][0] == "carol jones went to lima today"
    assert tagged["predicted"][0] == "B-PER I-PER O O B-LOC O" and tagged["predicted"][1] == ""


def test_tags_and_words_of_unequal_length_name_the_line(tiny_model, tmp_path, write_recipe, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"tokens": ["a", "b"], "tags": ["B-X", "O"]},
        {"tokens": ["a", "b", "c"], "tags": ["B-X", "O"]},
    ])
    raw = recipe(tiny_model, train, "token_classification", tmp_path, data={"text_columns": ["tokens"], "label_column": "tags"})
    assert errors_of(write_recipe, raw, capsys) == [
        f"error: data.label_column: {train} line 2: 3 words in 'tokens' but 2 tags in 'tags' (1 rows like it in train)"
    ]


# seq2seq and causal_lm_sft: tiny models built from configs, with MiniLM's WordPiece tokenizer


def reverse_rows(rng, n):
    words = ["red", "green", "blue", "cat", "dog", "bird", "one", "two", "three"]
    rows = []
    for _ in range(n):
        seq = rng.sample(words, 3)
        rows.append({"source": " ".join(seq), "target": " ".join(reversed(seq))})
    return rows


@pytest.mark.slow  # trains a tiny model for 40-150 steps: 20-60 s on 2 busy CPU cores
def test_seq2seq_learns_and_scores_rouge_on_generations(tiny_t5, tmp_path, write_recipe):
    rng = random.Random(5)
    train = write_jsonl(tmp_path / "train.jsonl", reverse_rows(rng, 320))
    test = write_jsonl(tmp_path / "test.jsonl", reverse_rows(rng, 16))
    raw = recipe(tiny_t5, train, "seq2seq", tmp_path, data={"text_columns": ["source"], "label_column": "target", "test_file": test},
                 training={"max_steps": 60, "learning_rate": 1.0e-2, "generation_max_length": 8})
    result = run(write_recipe, raw)
    history = losses(tmp_path / "out")
    # Cross-entropy over MiniLM's 30,522-word vocabulary starts near ln(30522) = 10.3 and falls steadily.
    assert history[-1] < 0.6 * history[0]
    assert set(result["test"]) >= {"rouge1", "rouge2", "rougeL"}
    assert 0.0 <= result["test"]["rouge2"] <= result["test"]["rouge1"] <= 1.0
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and set(lines[0]) == {"source", "target", "generated"}
    # The decoder learned the words of the task: generations draw on the task's vocabulary.
    vocabulary = {"red", "green", "blue", "cat", "dog", "bird", "one", "two", "three"}
    assert sum(w in vocabulary for x in lines for w in x["generated"].split()) >= 16

    # `run.py predict` generates with the run's generation settings: the same text as the run's own predictions.
    again = tmp_path / "again.jsonl"
    assert run_cli(["predict", tmp_path / "out", "--input", test, "--output", again]) == 0
    assert [json.loads(x)["generated"] for x in again.read_text().splitlines()] == [x["generated"] for x in lines]


def test_seq2seq_needs_its_target_column_and_text_in_it(tiny_t5, tmp_path, write_recipe, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [{"source": "a b", "target": "b a"}, {"source": "c d", "target": ""}])
    raw = recipe(tiny_t5, train, "seq2seq", tmp_path, data={"text_columns": ["source"], "label_column": "summary"})
    assert errors_of(write_recipe, raw, capsys) == [
        "error: data.label_column: column 'summary' is not in the train split; columns: source, target"
    ]
    assert not (tmp_path / "out").exists()
    # An empty target is a missing label, as for every head: the row is dropped and counted, not fatal.
    raw["data"]["label_column"] = "target"
    assert run_cli([write_recipe(raw), "--data-only"]) == 0
    out = capsys.readouterr().out
    assert "checks               train              2         1        1 removed  missing label: 1" in out


@pytest.mark.slow  # trains a tiny model for 40-150 steps: 20-60 s on 2 busy CPU cores
def test_causal_lm_sft_masks_the_prompt_and_learns_completions(tiny_gpt2, tmp_path, write_recipe):
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    from recipekit.heads import build_head
    from recipekit.recipe.data import DataArgs

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    head = build_head("causal_lm_sft", data=DataArgs(train_file="x", text_columns=["prompt"], label_column="completion", max_length=32))
    splits = DatasetDict({"train": Dataset.from_dict({"prompt": ["capital of france :"], "completion": [" paris"]})})
    row = head.tokenize(splits, tokenizer)[0]["train"][0]
    n_prompt = len(tokenizer("capital of france :", add_special_tokens=False)["input_ids"])
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:] == [tokenizer.convert_tokens_to_ids("paris"), tokenizer.sep_token_id]

    rng = random.Random(6)
    capitals = {"france": "paris", "italy": "rome", "norway": "oslo", "peru": "lima"}
    rows = [{"prompt": f"the capital of {c} is", "completion": capitals[c]} for c in rng.choices(list(capitals), k=200)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": f"the capital of {c} is"} for c in capitals])
    raw = recipe(tiny_gpt2, train, "causal_lm_sft", tmp_path,
                 model={"head_options": {"max_new_tokens": 2}},
                 data={"text_columns": ["prompt"], "label_column": "completion", "test_file": test, "validation_split": 0.1},
                 training={"max_steps": 80, "learning_rate": 1.0e-2, "eval_strategy": "steps", "eval_steps": 80})
    result = run(write_recipe, raw)
    history = losses(tmp_path / "out")
    assert history[-1] < 0.3 * history[0]
    assert result["validation"]["perplexity"] == pytest.approx(np.exp(result["validation"]["loss"]), rel=1e-6)
    assert result["validation"]["perplexity"] < 3.0  # 4 equally likely answers + end of text: at best about 2
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [x["prompt"] for x in lines] == [f"the capital of {c} is" for c in capitals]
    assert all(x["generated"].split()[0] in capitals.values() for x in lines)

    again = tmp_path / "again.jsonl"
    assert run_cli(["predict", tmp_path / "out", "--input", test, "--output", again]) == 0
    assert [json.loads(x)["generated"] for x in again.read_text().splitlines()] == [x["generated"] for x in lines]


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_prior_bias_starts_each_sigmoid_at_its_label_frequency(family):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from recipekit.heads.multi_label import prior_bias

    encoder = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    sizes = {"bert": encoder, "roberta": encoder, "gpt2": {"n_embd": 32, "n_layer": 1, "n_head": 2}}[family]
    config = AutoConfig.for_model(family, vocab_size=100, num_labels=4, problem_type="multi_label_classification", **sizes)
    model = AutoModelForSequenceClassification.from_config(config)
    rate = np.array([0.5, 0.04, 0.001, 0.3])
    note = prior_bias(model, rate)
    if family == "gpt2":  # its score layer has no bias: nothing is changed, and the note says so
        assert note == "not applied: GPT2ForSequenceClassification has no output bias"
        return
    bias = (model.classifier.out_proj if family == "roberta" else model.classifier).bias.detach().numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), rate, rtol=1e-5)


def test_multi_label_bias_init_choices(tiny_model, topics, tmp_path):
    raw = recipe(tiny_model, topics["train"], "multi_label", tmp_path, model={"head_options": {"bias_init": "mean"}})
    with pytest.raises(RecipeError) as e:
        build_recipe(raw)
    assert e.value.problems == ["model.head_options.bias_init: 'mean' is not valid. Choices: prior, zero"]


def test_rare_labels_share_the_micro_f1_best_threshold():
    from recipekit.heads.multi_label import tune_thresholds

    rng = np.random.default_rng(0)
    y = np.zeros((400, 3), dtype=int)
    y[:200, 0] = 1  # common: 200 positives
    y[:120, 1] = 1  # common: 120 positives
    y[:3, 2] = 1  # rare: 3 positives
    probs = np.clip(y * 0.6 + rng.uniform(0, 0.5, size=y.shape), 0, 1)
    cuts, shared = tune_thresholds(y, probs, min_positives=10)
    assert shared == [2]
    assert cuts[0] == M.best_f1_threshold(y[:, 0], probs[:, 0]) and cuts[1] == M.best_f1_threshold(y[:, 1], probs[:, 1])
    assert cuts[2] == M.best_f1_threshold(y.ravel(), probs.ravel())
    cuts, shared = tune_thresholds(y, probs, min_positives=0)
    assert shared == [] and cuts[2] == M.best_f1_threshold(y[:, 2], probs[:, 2])


@pytest.mark.parametrize("bias_init", ["prior", "zero"])
def test_multi_label_model_starts_at_the_training_label_frequencies(tiny_model, bias_init):
    from datasets import Dataset

    from recipekit.heads import HEADS, build_head
    from recipekit.recipe.data import DataArgs
    from recipekit.recipe.model import ModelArgs

    head = build_head("multi_label", {"bias_init": bias_init}, data=DataArgs(train_file="x"), state=HEADS["multi_label"].State("multi_label", ["a", "b", "c"]))
    head.learn(Dataset.from_dict({"labels": [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]}))
    bias = head.load_model(ModelArgs(name_or_path=tiny_model, head="multi_label"), None).classifier.bias.detach().numpy()
    expected = np.log(np.array([0.75, 0.25, 0.25]) / np.array([0.25, 0.75, 0.75])) if bias_init == "prior" else np.zeros(3)
    np.testing.assert_allclose(bias, expected, atol=1e-6)


def test_multi_label_tune_min_positives_must_not_be_negative(tiny_model, topics, tmp_path):
    raw = recipe(tiny_model, topics["train"], "multi_label", tmp_path, model={"head_options": {"tune_min_positives": -1}})
    with pytest.raises(RecipeError) as e:
        build_recipe(raw)
    assert e.value.problems == ["model.head_options.tune_min_positives: -1 must be 0 or more"]
