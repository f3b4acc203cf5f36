"""The Trainer a run trains with, built from the recipe."""

from __future__ import annotations

from ..core import console
from ..heads.distillation import DistillationLoss
from ..trainer import length_split as batching
from ..trainer.common import logits_only, pad_multiple
from ..trainer.evaluations import by_length
from ..trainer.flatten import resolve_padding
from ..trainer.teacher import TEACHER_COLUMN
from ..trainer.trainer import RecipeTrainer, trainer_class
from ..trainer.windows import chunk_pooling
from . import regularize


def build_trainer(recipe, head, model, tokenizer, tokenized, schedule=None) -> RecipeTrainer:
    """RecipeTrainer on the head's base with the head's collator, loss (None: the model's own) and metrics; with a
    teacher column in the training split, the loss that learns from it too. `schedule` (optimizer -> scheduler)
    replaces the recipe's learning-rate schedule."""
    args = recipe.training
    multiple = pad_multiple(args)
    regularize.freeze(model, recipe.regularization)
    loss = head.loss(args)
    setting = recipe.batching
    cost = batching.resolve_cost(setting.length_split_cost, args, asked=setting.padding == "length_split") if head.splits_batches else None
    padding = resolve_padding(setting.padding, args, cost) if head.flattens else "dynamic"
    teacher = TEACHER_COLUMN in (tokenized["train"].column_names or [])  # a stream after map names no columns
    if teacher:
        loss = DistillationLoss(loss, head.teacher_term, recipe.model.teacher_temperature, recipe.model.teacher_weight)
    trainer = trainer_class(head.trainer_base)(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=by_length(tokenized["validation"])[0] if "validation" in tokenized else None,
        processing_class=tokenizer,
        data_collator=head.collator(tokenizer, model, multiple),
        compute_loss_func=loss,
        compute_metrics=head.compute_metrics(recipe.metrics, tokenizer),
        preprocess_logits_for_metrics=head.preprocess_logits() or logits_only,
        callbacks=regularize.callbacks(recipe.regularization),
        # Flattening that falls back runs the length split at the recipe's cost.
        chunk_cost=cost if padding != "dynamic" else None,
        flatten=padding == "flatten",
        pad_multiple=multiple,
        chunk_pooling=chunk_pooling(head.data),
        teacher=teacher,
        batch_mean_loss=head.batch_mean_loss,
        schedule=schedule,
    )
    regularize.apply_layerwise_lr_decay(trainer, recipe.regularization.layerwise_lr_decay)
    console.quiet_trainer(trainer)
    return trainer
