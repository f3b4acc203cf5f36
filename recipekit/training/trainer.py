"""The Trainer a run trains with, built from the recipe."""

from __future__ import annotations

from transformers import Trainer

from ..core import console
from ..heads.distillation import TEACHER_COLUMN, DistillationLoss, with_teacher
from ..trainer import length_split as batching
from ..trainer.common import logits_only, pad_multiple, score_documents, use_head_loss
from ..trainer.evaluations import by_length, remember_evaluations
from . import regularize


def build_trainer(recipe, head, model, tokenizer, tokenized) -> Trainer:
    """The head's Trainer class with the head's collator, loss (None: the model's own) and metrics; with a teacher
    column in the training split, the Trainer and loss that learn from it too."""
    args = recipe.training
    multiple = pad_multiple(args)
    regularize.freeze(model, recipe.regularization)
    trainer_class, loss = head.trainer_class, head.loss(args)
    if TEACHER_COLUMN in tokenized["train"].column_names:
        trainer_class = with_teacher(trainer_class)
        loss = DistillationLoss(loss, head.teacher_term, recipe.model.teacher_temperature, recipe.model.teacher_weight)
    trainer = trainer_class(
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
    )
    use_head_loss(trainer, head)
    score_documents(trainer, head)
    remember_evaluations(trainer)  # after score_documents: it keeps the pooled evaluation
    if isinstance(trainer, batching.LengthSplitTrainer):
        trainer.chunk_cost = batching.resolve_cost(recipe.batching.length_split_cost, args)
        trainer.pad_multiple = multiple
    regularize.apply_layerwise_lr_decay(trainer, recipe.regularization.layerwise_lr_decay)
    console.quiet_trainer(trainer)
    return trainer
