"""The one Trainer class (recipekit/trainer/trainer.py) and its parts: each does its job when configured through the
constructor and nothing otherwise, and no code assembles a Trainer by assigning onto an instance."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from recipekit.trainer.teacher import TEACHER_COLUMN
from recipekit.trainer.trainer import RecipeTrainer, trainer_class

PACKAGE = Path(__file__).resolve().parent.parent / "recipekit"
# A name bound onto a trainer object from outside its class (`trainer.evaluation_loop = ...`, `self.trainer.x = ...`,
# `setattr(trainer, ...)`): the Trainer is then assembled at run time instead of declared.
ASSIGNED = re.compile(r"(?<![\w.])(?:self\.)?trainer\w*\.\w+(?:\.\w+)*\s*(?:[-+*/|&]?=)(?!=)|setattr\(\s*(?:self\.)?trainer\w*\s*,")


def test_no_code_assigns_onto_a_trainer_instance():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if ASSIGNED.search(line.split("#")[0]):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "a Trainer part belongs in recipekit/trainer/, configured through the constructor:\n" + "\n".join(found)


def test_the_check_catches_each_kind_of_assignment():
    for line in ("trainer.evaluation_loop = loop", "trainer.chunk_cost = 16", "self.trainer.last = None",
                 "setattr(trainer, name, wrapped)", "trainer.args.fp16 = True", "trainer.count += 1"):
        assert ASSIGNED.search(line), line
    for line in ("if trainer.chunk_cost == 16:", "trainer = build_trainer(recipe)", "x = trainer.predict(ds)",
                 "trainer_base: ClassVar[type] = Trainer"):
        assert not ASSIGNED.search(line), line


def test_one_class_per_base_with_the_parts_above_it():
    from transformers import Seq2SeqTrainer, Trainer

    assert trainer_class(Trainer) is RecipeTrainer and trainer_class() is RecipeTrainer
    generating = trainer_class(Seq2SeqTrainer)
    assert generating is trainer_class(Seq2SeqTrainer)  # made once
    mro = generating.__mro__
    assert mro.index(RecipeTrainer) < mro.index(Seq2SeqTrainer) < mro.index(Trainer)
    for name in ("evaluation_loop", "get_eval_dataloader", "training_step", "compute_loss", "predict_split"):
        assert getattr(generating, name) is getattr(RecipeTrainer, name), name


@pytest.fixture(scope="module")
def parts(tiny_model, tmp_path_factory):
    """A tiny 2-label BERT classifier (dropout off), its tokenizer, and a maker of RecipeTrainers around them."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        TrainingArguments,
    )

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).eval()
    folder = tmp_path_factory.mktemp("parts")

    def make(**kw):
        args = TrainingArguments(output_dir=str(folder), use_cpu=True, report_to="none", disable_tqdm=True,
                                 per_device_eval_batch_size=4, per_device_train_batch_size=4)
        return RecipeTrainer(model=model, args=args, processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer), **kw)

    return tokenizer, make


def windows(tokenizer):
    from datasets import Dataset

    texts = ["good", "good and fine", "bad", "a long and winding plot", "dull", "great fun"]
    return Dataset.from_dict({**tokenizer(texts), "labels": [1, 1, 0, 1, 1, 0], "document": [0, 0, 1, 2, 2, 3]})


def accuracy(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


def test_window_pooling_returns_one_row_per_document(parts):
    tokenizer, make = parts
    ds = windows(tokenizer)
    per_window = make().predict(ds)  # not configured: the document column is dropped like any other
    assert per_window.predictions.shape == (6, 2)
    pooled = make(chunk_pooling="mean", compute_metrics=accuracy).predict(ds)
    assert pooled.predictions.shape == (4, 2) and pooled.label_ids.tolist() == [1, 0, 1, 0]
    expected = [per_window.predictions[[0, 1]].mean(0), per_window.predictions[2], per_window.predictions[[3, 4]].mean(0),
                per_window.predictions[5]]
    np.testing.assert_allclose(pooled.predictions, np.stack(expected), rtol=1e-5, atol=1e-6)
    assert pooled.metrics["test_accuracy"] == accuracy(pooled)["accuracy"]  # scored on documents, not windows
    top = make(chunk_pooling="max").predict(ds).predictions
    np.testing.assert_allclose(top[0], per_window.predictions[[0, 1]].max(0), rtol=1e-5, atol=1e-6)


def test_the_evaluation_cache_is_reused_only_while_it_is_current(parts):
    from transformers import TrainerCallback

    class Predictions(TrainerCallback):
        count = 0

        def on_predict(self, args, state, control, **kwargs):
            self.count += 1

    tokenizer, make = parts
    ds = windows(tokenizer).remove_columns("document")
    predictions = Predictions()
    trainer = make(eval_dataset=ds, compute_metrics=accuracy, callbacks=[predictions])
    fresh = trainer.predict_split(ds, "tune")
    assert predictions.count == 1 and trainer.last_evaluation is None  # nothing evaluated yet
    trainer.evaluate()
    kept = trainer.predict_split(ds, "tune")
    assert predictions.count == 1  # the evaluation just made, reused
    np.testing.assert_allclose(kept.predictions, fresh.predictions, rtol=1e-6)
    assert kept.metrics["tune_accuracy"] == fresh.metrics["tune_accuracy"]
    assert kept.metrics["tune_loss"] == pytest.approx(fresh.metrics["tune_loss"], rel=1e-6)
    trainer.predict_split(ds.select(range(6)), "tune")  # another dataset than the one evaluated
    assert predictions.count == 2
    trainer.state.global_step += 1  # the model has trained since
    trainer.predict_split(ds, "tune")
    assert predictions.count == 3


class Recorder:
    """A compute_loss_func that records the teacher rows the trainer hands it."""

    def __init__(self):
        self.teacher_logits = None
        self.seen = []

    def __call__(self, outputs, labels, num_items_in_batch=None):
        teacher, self.teacher_logits = self.teacher_logits, None
        self.seen.append(teacher)
        return outputs["logits"].sum() * 0


def test_the_teacher_part_hands_the_teacher_column_to_the_loss(parts):
    tokenizer, make = parts
    batch = {**tokenizer(["good", "bad film"], padding=True, return_tensors="pt"), "labels": torch.tensor([1, 0])}
    rows = torch.tensor([[0.5, -0.5], [-1.0, 1.0]])
    loss = Recorder()
    trainer = make(compute_loss_func=loss, teacher=True)
    trainer._set_signature_columns_if_needed()
    assert TEACHER_COLUMN in trainer._signature_columns
    trainer.compute_loss(trainer.model, {**batch, TEACHER_COLUMN: rows}, num_items_in_batch=2)
    trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=2)  # an evaluation batch: no column
    assert torch.equal(loss.seen[0], rows) and loss.seen[1] is None
    plain = make(compute_loss_func=Recorder())
    plain._set_signature_columns_if_needed()
    assert TEACHER_COLUMN not in plain._signature_columns  # not configured: Trainer drops the column as unused


def test_loss_scaling_and_schedule_parts_are_inert_unless_configured(parts):
    from torch.optim.lr_scheduler import LambdaLR

    _, make = parts
    assert make().model_accepts_loss_kwargs is True  # BERT's forward takes **kwargs: Trainer's own reading
    assert make(batch_mean_loss=True).model_accepts_loss_kwargs is False
    made = []
    trainer = make(schedule=lambda optimizer: made.append(LambdaLR(optimizer, lambda step: 2.0**step)) or made[-1])
    trainer.create_optimizer_and_scheduler(num_training_steps=3)
    assert made and trainer.lr_scheduler is made[0] and made[0].optimizer is trainer.optimizer
    plain = make()
    plain.create_optimizer_and_scheduler(num_training_steps=3)
    assert len(made) == 1 and plain.lr_scheduler is not None  # the recipe's own schedule


def test_length_split_is_off_without_a_chunk_cost(parts):
    _, make = parts
    assert not make().can_split(num_items_in_batch=4)
    assert not make(chunk_cost=16).can_split(num_items_in_batch=4)  # no compute_loss_func: the model's own loss
    assert make(chunk_cost=16, compute_loss_func=Recorder()).can_split(num_items_in_batch=4)
