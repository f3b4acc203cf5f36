"""Flattened batches (batching.padding: flatten): the same logits, loss and gradient as padded batches, for every
pooled head and model family, through training, prediction and the fallback."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AttentionInterface,
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    TrainingArguments,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from recipekit.heads import build_head
from recipekit.recipe.data import DataArgs
from recipekit.recipe.model import ModelArgs
from recipekit.trainer.flatten import ATTENTION, FlatForward, flat_inputs, recomputing, resolve_padding
from recipekit.trainer.trainer import RecipeTrainer

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48, "vocab_size": 120,
         "max_position_embeddings": 64}
FAMILIES = {
    "bert": {"model_type": "bert", **SMALL, "type_vocab_size": 2},
    "roberta": {"model_type": "roberta", **SMALL, "pad_token_id": 1},  # positions count from pad_token_id + 1
    "distilbert": {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 48, "vocab_size": 120,
                   "max_position_embeddings": 64},
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 120, "n_positions": 64,
             "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3},  # causal, pools its last real token
    # Causal with rotary positions and grouped-query attention (2 key heads serve 4 query heads).
    "llama": {"model_type": "llama", **SMALL, "num_key_value_heads": 2, "pad_token_id": 0},
}
LENGTHS = [5, 17, 3, 11, 9, 2]


def uneven_batch(pad_id: int, token_types: bool = False, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    width = max(LENGTHS)
    mask = (torch.arange(width)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    ids = torch.randint(5, 120, (len(LENGTHS), width), generator=generator).masked_fill(mask == 0, pad_id)
    batch = {"input_ids": ids, "attention_mask": mask}
    if token_types:  # a text pair: the second segment from the row's middle on
        batch["token_type_ids"] = ((torch.arange(width)[None, :] >= (torch.tensor(LENGTHS)[:, None] // 2)) & (mask == 1)).long()
    return batch


def family_model(name: str, labels: int = 3):
    torch.manual_seed(0)
    settings = dict(FAMILIES[name])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings, num_labels=labels)
    return AutoModelForSequenceClassification.from_config(config).eval()


def both_ways(model, batch):
    """(padded logits, flattened logits) of one batch, and the hooks (their `flattened` counts encoder calls)."""
    hooks, why = FlatForward.install(model)
    assert hooks is not None, why
    hooks.active = False
    padded = model(**batch).logits
    hooks.active = True
    calls = hooks.flattened
    flat = model(**batch).logits
    assert hooks.flattened == calls + 1  # the second call really ran flattened
    hooks.remove()
    return padded, flat


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_gives_the_padded_logits_flattened(family):
    model = family_model(family)
    batch = uneven_batch(model.config.pad_token_id or 0, token_types=family == "bert")
    with torch.no_grad():
        padded, flat = both_ways(model, batch)
    assert padded.shape == (len(LENGTHS), 3)
    torch.testing.assert_close(flat, padded, rtol=0, atol=1e-5)


def test_texts_do_not_see_each_other_flattened():
    # Changing one text's tokens moves that text's logits only: attention stays inside each text.
    model = family_model("bert")
    hooks, why = FlatForward.install(model)
    assert hooks is not None and why == ""
    probed = hooks.flattened  # the probe's own flattened call
    batch = uneven_batch(0)
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][1, :4] = 7
    with torch.no_grad():
        before, after = model(**batch).logits, model(**other).logits
    assert hooks.flattened == probed + 2  # both calls ran flattened
    moved = (before - after).abs().amax(dim=1)
    assert moved[1] > 1e-3 and moved[[0, 2, 3, 4, 5]].max() == 0


def test_flat_inputs_restart_positions_per_text_and_mark_the_boundaries():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 1]])  # the third row left-padded
    ids = torch.tensor([[10, 11, 12, 0], [20, 21, 22, 23], [0, 0, 30, 31]])
    flat = flat_inputs(mask, ids, None, start=2)
    assert flat["input_ids"].tolist() == [[10, 11, 12, 20, 21, 22, 23, 30, 31]]
    assert flat["position_ids"].tolist() == [[2, 3, 4, 2, 3, 4, 5, 2, 3]]
    assert flat["cu_seq_lens_q"].tolist() == [0, 3, 7, 9] and flat["max_length_q"] == 4


HEADS = {
    "sequence_classification": (["a", "b", "c"], None, lambda n: torch.tensor([0, 2, 1, 0, 1, 2])[:n]),
    "binary": (["neg", "pos"], None, lambda n: torch.tensor([0, 1, 1, 0, 1, 0])[:n]),
    "multi_label": (["x", "y", "z"], None, lambda n: torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]])[:n].float()),
    "regression": (["y"], None, lambda n: torch.tensor([0.5, -1.0, 2.0, 0.1, 1.5, -0.3])[:n]),
    "mean pooling": (["a", "b"], {"pooling": "mean", "hidden_sizes": [16], "dropout": 0.0}, lambda n: torch.tensor([0, 1, 1, 0, 1, 0])[:n]),
    "max pooling": (["a", "b"], {"pooling": "max", "dropout": 0.0}, lambda n: torch.tensor([0, 1, 1, 0, 1, 0])[:n]),
}


def head_step(tiny_model, tmp_path, name, flatten: bool, pairs: bool = False, use_cpu: bool = True):
    """(loss, logits, gradients) of one training step of `name`'s model on the tiny BERT, dropout off; with
    use_cpu=False on the GPU (tests/test_gpu.py)."""
    labels, head_config, targets = HEADS[name]
    head = build_head(name if name in ("sequence_classification", "binary", "multi_label", "regression") else "sequence_classification",
                      head_config=head_config, data=DataArgs(train_file="train.csv"))
    head.state.labels = labels
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = head.load_model(ModelArgs(name_or_path=tiny_model, hidden_dropout=0.0, attention_dropout=0.0, classifier_dropout=0.0), tokenizer)
    texts = ["good", "a long and winding review that goes on about the plot and the actors", "fine film", "bad acting",
             "the best thing I saw this year, truly", "meh"]
    rows = [tokenizer(t, "and a second text" if pairs else None) for t in texts]
    batch = dict(DataCollatorWithPadding(tokenizer)(rows))
    batch["labels"] = targets(len(texts))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=use_cpu, report_to="none")
    trainer = RecipeTrainer(model=model, args=args, processing_class=tokenizer, compute_loss_func=head.loss(args), flatten=flatten)
    assert trainer.padding == ("flatten" if flatten else "dynamic")
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    loss = trainer.training_step(trainer.model, dict(batch), num_items_in_batch=torch.tensor(len(texts)))
    with torch.no_grad():
        logits = model(**{k: v.to(model.device) for k, v in batch.items() if k != "labels"}).logits.cpu()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), logits, grads


@pytest.mark.parametrize("name,pairs", [(n, False) for n in HEADS] + [("sequence_classification", True)])
def test_every_pooled_head_has_the_padded_logits_loss_and_gradient_flattened(tiny_model, tmp_path, name, pairs):
    padded_loss, padded_logits, padded = head_step(tiny_model, tmp_path, name, flatten=False, pairs=pairs)
    flat_loss, flat_logits, flat = head_step(tiny_model, tmp_path, name, flatten=True, pairs=pairs)
    torch.testing.assert_close(flat_logits, padded_logits, rtol=0, atol=1e-5)
    assert flat_loss == pytest.approx(padded_loss, abs=1e-5)
    assert padded.keys() == flat.keys() and len(padded) > 20
    for key in padded:
        torch.testing.assert_close(flat[key], padded[key], rtol=0, atol=1e-5, msg=key)


def test_a_flattened_step_counts_its_real_tokens_without_reading_them_back(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = RecipeTrainer(model=family_model("bert"), args=args, flatten=True)
    trainer.create_optimizer_and_scheduler(num_training_steps=2)
    batch = {**uneven_batch(0), "labels": torch.tensor([0, 2, 1, 0, 1, 2])}
    for _ in range(2):
        trainer.training_step(trainer.model, dict(batch), num_items_in_batch=torch.tensor(len(LENGTHS)))
    # A tensor (on the GPU, the device's): int() at each step would wait for the device.
    assert isinstance(trainer.computed_tokens, torch.Tensor)
    assert int(trainer.computed_tokens) == int(trainer.real_tokens) == 2 * sum(LENGTHS)
    assert trainer.padding_share == 0.0


class NoKeywords(torch.nn.Module):
    """An encoder whose forward takes no attention keywords: the texts' boundaries cannot reach its attention."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None, return_dict=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def test_a_model_that_cannot_flatten_falls_back_to_the_length_split_and_says_so_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("recipekit.trainer.flatten.SAID", set())
    model = family_model("bert")
    model.bert = NoKeywords(model.bert)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = RecipeTrainer(model=model, args=args, chunk_cost=128, flatten=True)
    assert (trainer.padding, trainer.chunk_cost, trainer.flat) == ("length_split", 128, None)
    said = capsys.readouterr().out.strip().splitlines()
    assert said == [("batching.padding: flatten: BertForSequenceClassification's encoder takes no attention keywords to flatten "
                     "with; running the length split (chunk cost 128 tokens) instead")]
    assert not model._forward_pre_hooks and not model.bert._forward_hooks  # the probe's hooks are gone
    assert model.config._attn_implementation != ATTENTION
    RecipeTrainer(model=model, args=args, chunk_cost=128, flatten=True)  # the run's prediction Trainer, say
    assert capsys.readouterr().out == ""


def test_gradient_checkpointing_runs_the_length_split_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("recipekit.trainer.flatten.SAID", set())
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", gradient_checkpointing=True)
    trainer = RecipeTrainer(model=family_model("bert"), args=args, chunk_cost=128, flatten=True)
    assert (trainer.padding, trainer.flat) == ("length_split", None)
    assert capsys.readouterr().out.strip() == (
        "batching.padding: flatten: training.gradient_checkpointing recomputes each layer in the backward pass with the "
        "model's own attention, across the flattened texts; running the length split (chunk cost 128 tokens) instead")


def test_fsdp_activation_checkpointing_is_a_recomputing_setting_too(tmp_path):
    # FSDP needs several processes to make a Trainer; the setting is read from the arguments Trainer hands accelerate.
    fsdp = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", fsdp=True,
                             fsdp_config={"activation_checkpointing": True})
    assert recomputing(fsdp) == "FSDP's activation_checkpointing"
    assert recomputing(TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", fsdp=True)) == ""
    assert recomputing(TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")) == ""


RECOMPUTED = []


def spy_attention(module, query, *args, **kwargs):
    RECOMPUTED.append(query.shape[2])
    return sdpa_attention_forward(module, query, *args, **kwargs)


AttentionInterface.register("recipekit_test_spy", spy_attention)


def reentrant(model):
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})


def fsdp_wrapper(model):
    # What accelerate does to each layer under FSDP's activation_checkpointing.
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    for i, layer in enumerate(model.bert.encoder.layer):
        model.bert.encoder.layer[i] = checkpoint_wrapper(layer, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


@pytest.mark.parametrize("checkpoint", [reentrant, fsdp_wrapper])
def test_a_recomputed_layer_attends_across_the_flattened_texts(checkpoint):
    """Why checkpointing falls back: the backward pass recomputes each layer on the flattened row, with the model's
    own attention (restored once the encoder returned), which has no boundaries between the texts."""
    model = family_model("bert").train()
    for dropout in (m for m in model.modules() if isinstance(m, torch.nn.Dropout)):
        dropout.p = 0.0  # flattened and padded gradients then agree within 1e-8 without checkpointing
    batch = {**uneven_batch(0), "labels": torch.tensor([0, 2, 1, 0, 1, 2])}
    model(**batch).loss.backward()
    padded = {n: p.grad.clone() for n, p in model.named_parameters()}
    # The model's own attention (sdpa), seen: a name transformers does not know builds no padding mask, hence not before.
    model.config._attn_implementation = "recipekit_test_spy"
    checkpoint(model)
    FlatForward(model, model)  # installed without the probe, as if the fallback were not there
    model.zero_grad()
    RECOMPUTED.clear()
    loss = model(**batch).loss
    assert RECOMPUTED == []  # the forward attends per text, with ours
    try:
        loss.backward()
    except torch.utils.checkpoint.CheckpointError:
        different = True  # non-reentrant: the recompute saved other tensors than the forward did
    else:
        grads = {n.replace("_checkpoint_wrapped_module.", ""): p.grad for n, p in model.named_parameters()}
        different = max(float((grads[n] - padded[n]).abs().max()) for n in padded) > 1e-6
    assert RECOMPUTED[0] == sum(LENGTHS) and different  # one row of all the texts' tokens, attended as one text


def test_auto_flattens_on_the_cpu_and_a_choice_is_kept():
    from types import SimpleNamespace

    assert resolve_padding("auto", SimpleNamespace(use_cpu=True)) == "flatten"
    assert resolve_padding("dynamic", SimpleNamespace(use_cpu=True)) == "dynamic"
    assert resolve_padding("length_split", SimpleNamespace(use_cpu=True)) == "length_split"


def test_auto_on_a_gpu_is_the_length_split_with_a_cost_and_dynamic_without(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    gpu = SimpleNamespace(use_cpu=False)
    assert resolve_padding("auto", gpu, cost=256) == "length_split"
    assert resolve_padding("auto", gpu, cost=None) == "dynamic"  # auto's cost leaves GPU batches whole
    assert resolve_padding("flatten", gpu) == "flatten"
    assert resolve_padding("auto", SimpleNamespace(use_cpu=True), cost=None) == "flatten"  # use_cpu on a GPU machine


def test_padding_is_a_batching_choice_refused_in_one_line(base_recipe):
    from recipekit.core.errors import RecipeError
    from recipekit.recipe.build import build_recipe

    base_recipe["batching"] = {"padding": "flat"}
    with pytest.raises(RecipeError) as error:
        build_recipe(base_recipe)
    assert str(error.value).splitlines() == [
        "batching.padding: expected one of 'auto', 'flatten', 'length_split', 'dynamic', got 'flat'"]
    base_recipe["batching"] = {"padding": "dynamic", "length_split_cost": 64}
    with pytest.raises(RecipeError, match="batching.length_split_cost: 64 splits batches, which padding: dynamic never does"):
        build_recipe(base_recipe)
    base_recipe["batching"] = {"padding": "flatten"}
    base_recipe["model"]["head"] = "token_classification"
    with pytest.raises(RecipeError, match="batching.padding: 'flatten' is for the pooled heads"):
        build_recipe(base_recipe)


@pytest.fixture
def base_recipe(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,1\nbad,0\n")
    return {"model": {"name_or_path": "bert-base-uncased"}, "data": {"train_file": str(tmp_path / "train.csv")},
            "training": {"output_dir": str(tmp_path / "out")}}


def test_a_run_flattens_records_it_and_predicts_as_a_padded_run_does(tiny_model, write_recipe, tmp_path, capsys):
    from conftest import run_cli

    from recipekit.inference.predictor import Predictor
    from recipekit.inference.runs import open_run

    rows = ["text,label"] + [f"{['awful', 'superb'][i % 2]} {'film ' * (30 if i % 8 == 0 else 1)}{i},{i % 2}" for i in range(48)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(rows[:17]) + "\n")
    runs = {}
    for padding in ("flatten", "dynamic"):
        out = tmp_path / padding
        recipe = {
            "model": {"name_or_path": tiny_model, "hidden_dropout": 0.0, "attention_dropout": 0.0, "classifier_dropout": 0.0},
            "data": {"train_file": str(tmp_path / "train.csv"), "test_file": str(tmp_path / "test.csv"), "max_length": 64},
            "batching": {"padding": padding},
            "training": {"output_dir": str(out), "max_steps": 6, "per_device_train_batch_size": 8, "save_strategy": "no",
                         "report_to": "none", "seed": 3, "eval_strategy": "no"},
            "report": {"plots": False},
        }
        assert run_cli([write_recipe(recipe, f"r-{padding}.yaml")]) == 0
        said = capsys.readouterr().out
        runs[padding] = json.loads((out / "metrics.json").read_text())
        assert runs[padding]["manifest"]["padding"] == padding
        if padding == "flatten":
            assert runs[padding]["train"]["padding_share"] == 0.0
            assert "training: 0% of the computed positions were padding (flattened batches)" in said
        run = open_run(str(out))
        with Predictor(run) as predictor:
            prediction = predictor.predict(run_view(run, tmp_path / "test.csv"))
            assert (run.padding, predictor.trainer.padding) == (padding, padding)
            if padding == "flatten":
                # The probe's call, then one per batch of the test file's 16 rows (per_device_eval_batch_size 8).
                assert (run.batch_size, predictor.trainer.flat.flattened) == (8, 1 + 2)
        runs[padding]["logits"] = prediction.output.predictions
    # Same data, seed and steps: the two runs train the same model, up to float rounding.
    assert runs["dynamic"]["train"]["padding_share"] > 0.3
    assert runs["flatten"]["train"]["train_loss"] == pytest.approx(runs["dynamic"]["train"]["train_loss"], abs=1e-4)
    assert runs["flatten"]["test"]["accuracy"] == runs["dynamic"]["test"]["accuracy"]
    torch.testing.assert_close(torch.as_tensor(runs["flatten"]["logits"]), torch.as_tensor(runs["dynamic"]["logits"]), rtol=0, atol=1e-4)


def run_view(run, path):
    import pandas as pd
    from datasets import Dataset

    return Dataset.from_pandas(pd.read_csv(path)[run.data.text_columns], preserve_index=False)
