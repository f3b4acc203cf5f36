"""The tokenizer, the Trainer a run trains with, and the Trainer a finished run predicts with."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from transformers import AutoTokenizer, Trainer

from . import batching, console, paths, regularize
from .errors import RecipeError
from .evaluation_cache import by_length, remember_evaluations
from .heads.distillation import TEACHER_COLUMN, DistillationLoss, with_teacher
from .recipe import with_device_defaults
from .windows import pool_windows


def load_tokenizer(model_args, tokenizer_args=None):
    """The tokenizer named by `tokenizer.name_or_path`, else the model's; None when `tokenizer.train` will make one."""
    if tokenizer_args is not None and tokenizer_args.train is not None:
        return None
    if model_args.trust_remote_code:
        print(f"warning: model.trust_remote_code is true: code shipped with {model_args.name_or_path!r} will run here", file=sys.stderr)
    if tokenizer_args is not None and tokenizer_args.name_or_path:
        with model_load_errors(tokenizer_args.name_or_path, "tokenizer.name_or_path"):
            return AutoTokenizer.from_pretrained(resolve_path(tokenizer_args.name_or_path), trust_remote_code=model_args.trust_remote_code)
    with model_load_errors(model_args):
        return AutoTokenizer.from_pretrained(
            model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code
        )


def resolve_path(spec: str) -> str:
    return str(Path(paths.resolve(spec)).expanduser()) if paths.looks_local(spec) else spec


@contextmanager
def model_load_errors(model_args, key: str = "model.name_or_path"):
    """A model or tokenizer that cannot be loaded (no network, a typo in a Hub id) is a recipe error."""
    name = model_args if isinstance(model_args, str) else model_args.name_or_path
    try:
        yield
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f"{key}: cannot load {name!r}: {first}") from None


def pad_multiple(args) -> int | None:
    # Multiples of 8 let fp16/bf16 matmuls use tensor cores; on the CPU they only add padding.
    return 8 if (args.fp16 or args.bf16) and not args.use_cpu else None


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


def use_head_loss(trainer, head) -> None:
    if head.batch_mean_loss:
        # The model's forward takes **kwargs, so Trainer assumes its loss is a sum normalised by the item count
        # of the whole step: it would then skip dividing by gradient_accumulation_steps and multiply by the
        # number of processes (a loss of 2 x ln 2 = 1.386 at chance under 2 processes). The loss is a batch mean.
        trainer.model_accepts_loss_kwargs = False


def score_documents(trainer, head) -> None:
    if head.data is not None and head.data.long_text == "chunks":
        pool_windows(trainer, head.data.chunk_pooling)


def logits_only(logits, labels):
    """Keep the logits, drop hidden states or attentions a model config may add: evaluation holds only what metrics need."""
    return logits[0] if isinstance(logits, tuple) else logits


# What a finished run's `training:` section says about how it predicted; everything else is for training.
PREDICTION_SETTINGS = ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval", "use_cpu", "predict_with_generate",
                       "generation_max_length", "generation_num_beams", "remove_unused_columns")


@contextmanager
def inference_trainer(head, model, tokenizer, settings: dict, batch_size: int, metric_names=None):
    """A Trainer that only predicts, set up as the run's own was at its end (batch size, precision, generation,
    collator, metrics), so a finished run's predictions on its test file are the ones it wrote."""
    fields = {f.name for f in dataclasses.fields(head.training_args_class)}
    folder = tempfile.mkdtemp(prefix="recipekit-predict-")
    kw = {"output_dir": folder, "per_device_eval_batch_size": batch_size, "report_to": "none", "disable_tqdm": True,
          **{k: settings[k] for k in PREDICTION_SETTINGS if k in settings and k in fields}}
    try:
        args = head.training_args_class(**with_device_defaults(kw))
        trainer = head.trainer_class(
            model=model, args=args, processing_class=tokenizer, data_collator=head.collator(tokenizer, model, pad_multiple(args)),
            compute_loss_func=head.loss(args),
            compute_metrics=head.compute_metrics(metric_names, tokenizer) if metric_names else None,
            preprocess_logits_for_metrics=head.preprocess_logits() or logits_only,
        )
        use_head_loss(trainer, head)
        score_documents(trainer, head)
        yield trainer
    finally:
        shutil.rmtree(folder, ignore_errors=True)
