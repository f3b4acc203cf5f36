"""Length-split training batches: where the cuts fall, what each chunk holds, and that the gradient is the batch's."""

from __future__ import annotations

import pytest
import torch

from recipekit.trainer.length_split import plan, resolve_cost, split
from recipekit.trainer.trainer import RecipeTrainer


def test_plan_cuts_off_long_rows_only_when_the_padding_saved_exceeds_the_chunk_cost():
    lengths = [5] * 30 + [100, 100]
    # One chunk: 128 + 32 x 100 = 3,328; two: 128 + 30 x 5 + 128 + 2 x 100 = 606.
    assert plan(lengths, 128) == [(0, 30), (30, 32)]
    # Saving 3,000 - 150 padded positions is not worth a chunk that costs 5,000.
    assert plan(lengths, 5000) == [(0, 32)]
    assert plan([7] * 16, 1) == [(0, 16)]  # equal lengths: nothing to save


def padded_batch(lengths, side="right"):
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, cols] = torch.arange(1, n + 1) + 1000 * row
        mask[row, cols] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.arange(len(lengths))}


@pytest.mark.parametrize("side", ["right", "left"])
def test_split_keeps_every_row_once_with_its_label_and_trims_only_padding(side):
    lengths = [40, 3, 4, 39, 5, 3, 4, 6]
    batch = padded_batch(lengths, side)
    chunks = split(batch, cost=16, padding_side=side)
    assert len(chunks) == 2
    assert sorted(torch.cat([c["labels"] for c in chunks]).tolist()) == list(range(8))
    assert [c["input_ids"].shape for c in chunks] == [(6, 6), (2, 40)]
    for chunk in chunks:
        for row, label in enumerate(chunk["labels"].tolist()):
            kept = chunk["input_ids"][row][chunk["attention_mask"][row].bool()]
            # The row's real tokens, whole and in order, next to its own label.
            assert kept.tolist() == (torch.arange(1, lengths[label] + 1) + 1000 * label).tolist()
    assert sum(c["input_ids"].numel() for c in chunks) == 6 * 6 + 2 * 40  # against 8 x 40 unsplit


def test_split_chunks_keep_the_collators_multiple_of_8_for_tensor_cores():
    chunks = split(padded_batch([40, 3, 4, 39, 5, 3, 4, 6]), cost=16, multiple=8)
    assert [c["input_ids"].shape[1] for c in chunks] == [8, 40]


def test_split_leaves_a_batch_without_attention_mask_or_worth_splitting_alone():
    batch = padded_batch([5, 5, 6])
    assert split(batch, cost=128)[0] is batch
    no_mask = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
    assert split(no_mask, cost=1)[0] is no_mask


def test_auto_cost_is_the_measured_cpu_cost_and_a_number_is_kept():
    from types import SimpleNamespace

    assert resolve_cost("auto", SimpleNamespace(use_cpu=True)) == 128
    assert resolve_cost(64, SimpleNamespace(use_cpu=False)) == 64
    assert resolve_cost(None, SimpleNamespace(use_cpu=True)) is None


def test_auto_cost_on_a_gpu_splits_only_where_the_recipe_asks_for_the_split(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    gpu = SimpleNamespace(use_cpu=False)
    assert resolve_cost("auto", gpu) is None  # padding auto or a flatten that fell back: whole batches
    assert resolve_cost("auto", gpu, asked=True) == 128  # padding: length_split
    assert resolve_cost(None, gpu, asked=True) is None  # the recipe check refuses this pair before a run


def gradients_after_one_step(tiny_model, tmp_path, chunk_cost, use_cpu=True):
    """Gradients (on the CPU) of one training step of a tiny BERT classifier (dropout off) on a batch of uneven
    lengths; with use_cpu=False the step runs on the GPU (tests/test_gpu.py)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        TrainingArguments,
    )

    from recipekit.heads import build_head

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    texts = ["good"] * 10 + ["a long and winding review that goes on and on about the plot " * 3] * 2 + ["fine film", "bad"]
    rows = [tokenizer(t) | {"labels": i % 3} for i, t in enumerate(texts)]
    batch = DataCollatorWithPadding(tokenizer)(rows)
    head = build_head("sequence_classification")
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=use_cpu, report_to="none")
    trainer = RecipeTrainer(model=model, args=args, processing_class=tokenizer, compute_loss_func=head.loss(args), chunk_cost=chunk_cost)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    loss = trainer.training_step(trainer.model, dict(batch), num_items_in_batch=torch.tensor(len(texts)))
    assert next(model.parameters()).device.type == ("cpu" if use_cpu else "cuda")
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, len(split(batch, chunk_cost)) if chunk_cost else 1


def test_a_split_step_has_the_whole_batchs_loss_and_gradient(tiny_model, tmp_path):
    whole_loss, whole, _ = gradients_after_one_step(tiny_model, tmp_path, chunk_cost=None)
    split_loss, chunked, chunks = gradients_after_one_step(tiny_model, tmp_path, chunk_cost=16)
    assert chunks >= 2
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    assert whole.keys() == chunked.keys() and len(whole) > 20
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_run_reports_the_padding_it_computed_and_the_split_cuts_it(tiny_model, write_recipe, tmp_path, capsys):
    import json

    from conftest import run_cli

    # Mostly two-word reviews and one long one in eight: every unsplit batch pads to the long one.
    rows = ["text,label"] + [
        f"{['awful', 'superb'][i % 2]} {'film ' * (40 if i % 8 == 0 else 1)}{i},{i % 2}" for i in range(64)
    ]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    shares = {}
    for cost in (16, None):
        out = tmp_path / f"run-{cost}"
        recipe = {
            "model": {"name_or_path": tiny_model},
            "data": {"train_file": str(tmp_path / "train.csv"), "max_length": 64},
            "batching": {"padding": "length_split", "length_split_cost": cost} if cost else {"padding": "dynamic"},
            "training": {"output_dir": str(out), "max_steps": 8, "per_device_train_batch_size": 8, "save_strategy": "no",
                         "report_to": "none", "seed": 3},
        }
        assert run_cli([write_recipe(recipe, f"r-{cost}.yaml")]) == 0
        shares[cost] = json.loads((out / "metrics.json").read_text())["train"]["padding_share"]
        assert f"training: {shares[cost]:.0%} of the computed positions were padding" in capsys.readouterr().out
    # Unsplit, a batch holding a long row pads its ~5-token rows to ~45; split, long rows run apart.
    assert (shares[None], shares[16]) == (pytest.approx(0.66, abs=0.1), pytest.approx(0.0, abs=0.1))
