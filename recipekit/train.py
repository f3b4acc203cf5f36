"""The Trainer, the evaluation of each split, and the files a finished run writes."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer, Trainer

from . import batching, paths, regularize
from .errors import RecipeError
from .outputs import manifest, mark, strip_prefix, versions, write_atomic, write_json, write_predictions


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


def build_trainer(recipe, head, model, tokenizer, tokenized) -> Trainer:
    """The head's Trainer class with the head's collator, loss (None: the model's own) and metrics."""
    args = recipe.training
    # Multiples of 8 let fp16/bf16 matmuls use tensor cores; on the CPU they only add padding.
    multiple = 8 if (args.fp16 or args.bf16) and not args.use_cpu else None
    regularize.freeze(model, recipe.regularization)
    trainer = head.trainer_class(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=head.collator(tokenizer, model, multiple),
        compute_loss_func=head.loss(args),
        compute_metrics=head.compute_metrics(recipe.metrics, label_names(tokenized["train"])),
        preprocess_logits_for_metrics=head.preprocess_logits() or logits_only,
        callbacks=regularize.callbacks(recipe.regularization),
    )
    if getattr(head, "batch_mean_loss", False):
        # The model's forward takes **kwargs, so Trainer assumes its loss is a sum normalised by the item count
        # of the whole step: it would then skip dividing by gradient_accumulation_steps and multiply by the
        # number of processes (a loss of 2 x ln 2 = 1.386 at chance under 2 processes). The loss is a batch mean.
        trainer.model_accepts_loss_kwargs = False
    if isinstance(trainer, batching.LengthSplitTrainer):
        trainer.chunk_cost = batching.resolve_cost(recipe.data.length_split_cost, args)
        trainer.pad_multiple = multiple
    regularize.apply_layerwise_lr_decay(trainer, recipe.regularization.layerwise_lr_decay)
    return trainer


def label_names(ds) -> list[str] | None:
    feature = ds.features.get("labels")
    return list(feature.names) if hasattr(feature, "names") else None


def logits_only(logits, labels):
    """Keep the logits, drop hidden states or attentions a model config may add: evaluation holds only what metrics need."""
    return logits[0] if isinstance(logits, tuple) else logits


def evaluate_splits(trainer: Trainer, head, tokenized, data, text_columns) -> tuple[dict, pd.DataFrame | None, dict]:
    """Validation and test metrics; predictions for the test split (with gold labels where it has them);
    and (label_ids, predictions) of each labelled split, for the report.

    Trainer gathers predictions across processes and drops the duplicates that pad a distributed
    sampler's last batch, so every returned array has exactly one row per example.
    """
    results, outputs = {}, {}
    if "validation" in tokenized:
        output = trainer.predict(tokenized["validation"], metric_key_prefix="eval")
        results["validation"] = head.scores(strip_prefix(output.metrics, "eval_"))
        outputs["validation"] = (output.label_ids, output.predictions)
    frame = None
    if "test" in tokenized:
        output = trainer.predict(tokenized["test"], metric_key_prefix="test")
        if output.label_ids is not None:
            results["test"] = head.scores(strip_prefix(output.metrics, "test_"))
            outputs["test"] = (output.label_ids, output.predictions)
        if head.predictions_file is None:  # a corpus has nothing to predict: loss and perplexity only
            return results, None, outputs
        test = data.splits["test"]
        frame = pd.DataFrame({c: list(test[c]) for c in text_columns})
        for name, values in {**head.gold(test), **head.prediction_columns(output, test, trainer)}.items():
            frame[name] = values
    return results, frame, outputs


def run_record(recipe, results: dict, data, head, outputs: dict, started: float) -> dict:
    """What metrics.json holds: the recipe's metrics per split, and the head's full evaluation of each labelled split."""
    evaluation = getattr(head, "evaluation", None)
    return {
        "status": "finished",
        **results,
        "evaluation": {split: evaluation(y, p, data.labels) for split, (y, p) in outputs.items()} if evaluation else {},
        "data": data.report,
        "labels": data.labels,
        "wall_time_s": round(time.time() - started, 2),
        "versions": versions(),
        "manifest": manifest(recipe, data),
    }


def write_run(recipe, record: dict, predictions, predictions_file: str = "predictions.csv") -> None:
    """The predictions file, then metrics.json, then status "finished": metrics.json means every other output is complete."""
    out = Path(recipe.training.output_dir)
    if predictions is not None:
        if predictions_file.endswith(".jsonl"):
            # Lists (tags per word) and free text stay whole in JSON lines; CSV would flatten them to strings.
            write_atomic(out / predictions_file, predictions.to_json(orient="records", lines=True, force_ascii=False))
        else:
            write_predictions(out / predictions_file, predictions)
    write_json(out / "metrics.json", record)
    mark(str(out), "finished")  # after metrics.json: a kill in between leaves "running", never a false "finished"


def interrupted(trainer: Trainer, signum: int) -> int:
    """After a signal: the checkpoint is saved; say how to continue and exit as a signalled program does."""
    step = trainer.state.global_step
    if trainer.is_world_process_zero():
        mark(trainer.args.output_dir, "interrupted", step=step, signal=signum)
        print(f"interrupted at step {step}: checkpoint saved in {trainer.args.output_dir}; continue with --resume", file=sys.stderr)
    return 128 + signum


def summary(results: dict) -> str:
    lines = []
    for split in ("validation", "test"):
        scores = results.get(split)
        if scores:
            shown = ", ".join(
                f"{k} {v:.4f}" for k, v in scores.items()
                if isinstance(v, float) and not k.endswith(("_per_second", "runtime")) and not k.startswith("f1_label_")
            )
            lines.append(f"{split}: {shown}")
    return "\n".join(lines)
