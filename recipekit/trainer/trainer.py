"""The one Trainer class recipekit trains and predicts with, and the parts it is made of."""

from __future__ import annotations

import functools
from pathlib import Path

from transformers import Trainer

from ..core.files import follow_umask
from .each_node import EachNodeSave
from .evaluations import EvaluationCache
from .flatten import Flattening
from .head_loss import BatchMeanLoss
from .length_split import LengthSplit
from .schedule import CustomSchedule
from .teacher import TeacherColumn
from .windows import WindowPooling


class RecipeTrainer(
    # Outermost first: each part's override calls the next one's through super().
    # The cache keeps what the evaluation loop returns, so it must sit outside the pooling: the pooled evaluation.
    EvaluationCache,
    # Evaluation and prediction of windows (data.long_text: chunks), pooled into one row per document.
    WindowPooling,
    # Every batch's encoder pass on one row of real tokens; or, where a model cannot, the length split below.
    Flattening,
    # Training batches as length-sorted chunks; each chunk's step still goes through the teacher's compute_loss.
    LengthSplit,
    # The teacher's logits, taken out of each training batch and handed to the loss.
    TeacherColumn,
    # Trainer's loss scaling for a head whose loss is a batch mean.
    BatchMeanLoss,
    # A learning-rate schedule made by a function (the learning-rate range test's).
    CustomSchedule,
    # Model weights on every node's disk with training.save_on_each_node.
    EachNodeSave,
    Trainer,
):
    """Trainer with recipekit's parts, each configured by its keyword argument and inert without it:
    flatten (Flattening), chunk_cost and pad_multiple (LengthSplit), chunk_pooling (WindowPooling), teacher (TeacherColumn),
    batch_mean_loss (BatchMeanLoss), schedule (CustomSchedule). The evaluation cache is always on and only
    ever answers `predict_split` for the trainer's own eval_dataset at the step it was evaluated."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # The run's model and each checkpoint's: safetensors writes weights 0600, whatever the user's umask.
        with follow_umask(Path(output_dir or self.args.output_dir)):
            super().save_model(output_dir, _internal_call)


@functools.cache
def trainer_class(base: type = Trainer) -> type:
    """RecipeTrainer on the head's declared base (`Head.trainer_base`), made once per base.

    Generation heads need Seq2SeqTrainer (predict_with_generate), but the others cannot sit on it: it reads
    `args.generation_config` and `args.predict_with_generate`, which only Seq2SeqTrainingArguments have, and
    its evaluate() and predict() gather with accelerator.gather instead of gather_for_metrics, keeping the rows
    a distributed sampler repeats to fill its last batch, so scores under several processes would move.
    Seq2SeqTrainer overrides none of the parts' methods, so the parts above it behave as above Trainer.
    """
    if base is Trainer:
        return RecipeTrainer
    return type(f"Recipe{base.__name__}", (RecipeTrainer, base), {})
