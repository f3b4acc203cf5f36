"""Pretraining: tokenizer training, packing, masking, scratch models, recipe chains and bad input."""

import json
import random

import numpy as np
import pytest
import torch
from conftest import run_cli
from datasets import Dataset, DatasetDict

from recipekit.heads import build_head
from recipekit.modeling.models import TrainTokenizerArgs, pack, train_tokenizer
from recipekit.recipe.data import DataArgs

WORDS = ["red", "green", "blue", "cat", "dog", "bird", "runs", "sleeps", "jumps", "the", "a", "over", "under", "house"]


def corpus(n: int, seed: int = 0) -> list[str]:
    """Made-up words from a seeded generator: enough distinct pieces to fill a few hundred merges."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(600)]
    return [" ".join(rng.choices(vocab, k=rng.randint(5, 30))) + rng.choice([".", "!", "?"]) for _ in range(n)]


def write_jsonl(path, texts) -> str:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


@pytest.mark.parametrize("algorithm", ["wordpiece", "byte_level_bpe"])
def test_trained_tokenizer_has_the_requested_vocab_and_round_trips(algorithm, tmp_path):
    texts = corpus(2000)
    args = TrainTokenizerArgs(algorithm=algorithm, vocab_size=700, min_frequency=2, lowercase=True)
    tok = train_tokenizer(args, Dataset.from_dict({"text": texts}), "text", masked=True)
    assert len(tok) == 700
    special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"} if algorithm == "wordpiece" else {"<s>", "<pad>", "</s>", "<unk>", "<mask>"}
    assert set(tok.all_special_tokens) == special
    # Unseen words made of seen characters still round-trip (WordPiece maps an unseen character to [UNK]).
    for text in texts[:50] + ["Unseen Words zyxw qq!"]:
        ids = tok(text)["input_ids"]
        assert ids[0] == (tok.cls_token_id if algorithm == "wordpiece" else tok.bos_token_id)
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text.lower()
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(texts[0])["input_ids"] == tok(texts[0])["input_ids"] and len(again) == 700


def test_packing_yields_full_blocks_without_losing_or_repeating_tokens():
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(5, 1000, size=rng.integers(1, 300))) for _ in range(97)]
    stream = [int(t) for row in rows for t in row]
    packed, counts = pack(Dataset.from_dict({"input_ids": rows}), 64, ["input_ids"])
    blocks = packed["input_ids"]
    assert all(len(b) == 64 for b in blocks)
    assert counts == {"tokens": len(stream), "blocks": len(stream) // 64, "tokens_dropped": len(stream) % 64}
    # The blocks, read in order, are exactly the stream: nothing lost, nothing repeated, only the last partial block left out.
    assert [t for b in blocks for t in b] == stream[: len(blocks) * 64]


def test_masked_lm_labels_are_minus_100_exactly_where_not_masked(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    head = build_head("masked_lm", {"block_size": 32, "mlm_probability": 0.3}, data=DataArgs(train_file="x"))
    splits = DatasetDict({"train": Dataset.from_dict({"text": [" ".join(random.Random(i).choices(WORDS, k=40)) for i in range(40)]})})
    tokenized, stats = head.tokenize(splits, tokenizer)
    torch.manual_seed(0)
    batch = head.collator(tokenizer, None, None)([tokenized["train"][i] for i in range(len(tokenized["train"]))])
    original = torch.tensor(tokenized["train"]["input_ids"])
    masked = batch["labels"] != -100
    assert torch.equal(batch["labels"][masked], original[masked])  # each masked position's label is its original token
    assert torch.equal(batch["input_ids"][~masked], original[~masked])  # everything else is untouched
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not masked[special].any()
    assert 0.25 < masked[~special].float().mean() < 0.35
    replaced = batch["input_ids"][masked] == tokenizer.mask_token_id
    assert 0.7 < replaced.float().mean() < 0.9  # BERT's 80% [MASK], 10% random, 10% kept
    assert stats["splits"]["train"]["blocks"] == len(tokenized["train"]) == stats["splits"]["train"]["tokens"] // 32


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    head = build_head("masked_lm", {"block_size": 64, "mlm_probability": 0.3, "whole_word_mask": True}, data=DataArgs(train_file="x"))
    # Long rare words split into several WordPiece pieces.
    text = " ".join(["unbelievably", "photosynthesis", "cat", "extraordinarily", "dog"] * 30)
    tokenized, _ = head.tokenize(DatasetDict({"train": Dataset.from_dict({"text": [text] * 4})}), tokenizer)
    torch.manual_seed(1)
    rows = [tokenized["train"][i] for i in range(len(tokenized["train"]))]
    batch = head.collator(tokenizer, None, None)(rows)
    masked = batch["labels"] != -100
    pieces = [tokenizer.convert_ids_to_tokens(r["input_ids"]) for r in rows]
    for i, tokens in enumerate(pieces):
        for j in range(1, len(tokens)):
            if tokens[j].startswith("##"):  # a continuation piece is masked exactly when its word's previous piece is
                assert masked[i, j] == masked[i, j - 1]
    assert masked.any()


def lm_recipe(tmp_path, train, head="causal_lm", **sections) -> dict:
    model = {"init": "scratch", "family": "gpt2" if head == "causal_lm" else "bert", "head": head,
             "head_options": {"block_size": 32},
             "config": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                        ("n_inner" if head == "causal_lm" else "intermediate_size"): 64,
                        ("n_positions" if head == "causal_lm" else "max_position_embeddings"): 64}}
    for key, value in sections.pop("model", {}).items():
        model[key] = value
    return {
        "model": model,
        "tokenizer": {"train": {"vocab_size": 400, "min_frequency": 1, **sections.pop("tokenizer", {})}},
        "data": {"train_file": train, **sections.pop("data", {})},
        "training": {"output_dir": str(tmp_path / "out"), "max_steps": 40, "per_device_train_batch_size": 8,
                     "learning_rate": 1.0e-2, "logging_steps": 10, "save_strategy": "no", "report_to": "none", "seed": 0,
                     "disable_tqdm": True, **sections.pop("training", {})},
        **sections,
    }


@pytest.mark.slow  # 60 steps of a 2-layer, 64-wide GPT-2: 10-40 s on 2 busy cores
def test_scratch_causal_lm_memorises_a_toy_corpus_and_saves_its_tokenizer(tmp_path, write_recipe, capsys):
    rng = random.Random(3)
    texts = [" ".join(rng.choices(WORDS, k=10)) for _ in range(4)]  # 4 fixed sentences, repeated: memorisable
    train = write_jsonl(tmp_path / "train.jsonl", texts * 16)
    validation = write_jsonl(tmp_path / "validation.jsonl", texts)
    # Memorising wants no dropout and a little width.
    config = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_inner": 128, "n_positions": 64, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    raw = lm_recipe(tmp_path, train, data={"validation_file": validation}, model={"config": config}, training={"max_steps": 60})
    assert run_cli([write_recipe(raw)]) == 0
    out = tmp_path / "out"
    result = json.loads((out / "metrics.json").read_text())
    history = [r["loss"] for r in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in r]
    # Measured (seed 0): the first 10 steps average 3.39 nats (a uniform guess over the 309-token vocabulary
    # is 5.73), the last 10 average 1.57 (0.46 of the first), validation perplexity 4.9. The bounds keep a
    # margin over those numbers and stay far from an untrained model (loss ratio 1.0, perplexity ~309).
    assert history[0] > 3.0 and history[-1] < 0.6 * history[0]
    assert result["validation"]["perplexity"] == pytest.approx(np.exp(result["validation"]["token_loss"]), rel=1e-5)
    assert result["validation"]["perplexity"] < 7.0
    assert result["model"]["parameters"] > result["model"]["non_embedding_parameters"] > 20_000
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) <= 400 and tokenizer.eos_token == "</s>"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer) and model.config.recipekit["init"] == "scratch"

    capsys.readouterr()
    assert run_cli(["predict", out, "--input", validation]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {out}: a causal_lm pretraining run has nothing to predict; fine-tune it (model.name_or_path: {out}) "
        f"or continue texts with transformers.pipeline('text-generation', model='{out}')"
    )


@pytest.mark.slow  # two tiny runs, 10-30 s
def test_pretrained_bert_output_is_a_fine_tuning_starting_point(tmp_path, write_recipe):
    rng = random.Random(4)
    texts = [" ".join(rng.choices(WORDS, k=15)) for _ in range(120)]
    train = write_jsonl(tmp_path / "train.jsonl", texts)
    raw = lm_recipe(tmp_path, train, head="masked_lm", training={"max_steps": 10}, data={"validation_split": 0.1},
                    tokenizer={"lowercase": True})
    assert run_cli([write_recipe(raw)]) == 0
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0.0 <= result["validation"]["accuracy"] <= 1.0 and result["validation"]["perplexity"] > 1.0

    rows = [{"text": t, "label": "pos" if "cat" in t else "neg"} for t in texts]
    (tmp_path / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fine = {"model": {"name_or_path": str(tmp_path / "out"), "head": "sequence_classification"},
            "data": {"train_file": str(tmp_path / "labelled.jsonl"), "max_length": 32},
            "training": {**raw["training"], "output_dir": str(tmp_path / "fine"), "max_steps": 2}}
    assert run_cli([write_recipe(fine, "fine.yaml")]) == 0
    from transformers import AutoModelForSequenceClassification

    pretrained = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    # The encoder weights carried over (only the new classifier is random).
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert torch.equal(pretrained.bert.embeddings.word_embeddings.weight, mlm.bert.embeddings.word_embeddings.weight)


def errors_of(write_recipe, raw, capsys) -> list[str]:
    assert run_cli([write_recipe(raw)]) == 2
    return capsys.readouterr().err.strip().splitlines()


def test_bad_pretraining_recipes_stop_with_one_clear_error(tmp_path, write_recipe, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", corpus(50))
    raw = lm_recipe(tmp_path, train, head="masked_lm", model={"head_options": {"block_size": 512}})
    assert errors_of(write_recipe, raw, capsys) == [
        ("error: model.head_options.block_size: 512 is above the model's 64 positions (bert max_position_embeddings); "
         "lower it or raise model.config.max_position_embeddings")
    ]
    raw = lm_recipe(tmp_path, train, tokenizer={"vocab_size": 4})
    assert errors_of(write_recipe, raw, capsys) == [
        ("error: tokenizer.train.vocab_size: 4 leaves no room for learned tokens beside the 5 special tokens "
         "and the 256 byte tokens; give more than 261")
    ]
    raw = lm_recipe(tmp_path, train, head="masked_lm")
    del raw["tokenizer"]
    assert errors_of(write_recipe, raw, capsys) == [
        "error: tokenizer: a scratch bert model needs a tokenizer: tokenizer.train (learn one from the data) or tokenizer.name_or_path"
    ]
    raw = lm_recipe(tmp_path, train, head="masked_lm", model={"config": {"num_hiden_layers": 2}})
    assert errors_of(write_recipe, raw, capsys) == [
        "error: model.config.num_hiden_layers: not a setting of BertConfig; did you mean 'num_hidden_layers'?"
    ]
    # Every text is removed by the preprocessing: the run stops before a tokenizer or model is made.
    short = write_jsonl(tmp_path / "short.jsonl", ["ab", "cd", "ef"])
    raw = lm_recipe(tmp_path, short, preprocess=[{"filter_length": {"min": 10, "unit": "chars"}}])
    err = [line for line in errors_of(write_recipe, raw, capsys) if line.startswith("error")]
    assert err == ["error: preprocess[0] filter_length removed every row of split 'train' (3 rows in: text length outside the limits)"]
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_pretraining_recipes_chain_by_output_dir():
    from conftest import ROOT

    from recipekit.recipe.build import read_yaml

    pre = read_yaml(str(ROOT / "recipes/pretrain/bert_mlm_scratch.yaml"))
    fine = read_yaml(str(ROOT / "recipes/pretrain/sst2_finetune_from_scratch.yaml"))
    assert fine["model"]["name_or_path"] == pre["training"]["output_dir"]
    assert pre["model"]["init"] == "scratch" and pre["tokenizer"]["train"]["algorithm"] == "wordpiece"
