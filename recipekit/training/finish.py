"""Finishing a run, in one place: tune the head's decision rule, save the model with its head state, score
every split, write the predictions (the test file's columns, its gold label under data.label_column, then the
head's prediction columns), the report and model card, then metrics.json last.

Every score of a split comes from the head's one scoring code with the decision rule the run chose (a tuned
threshold, per-label cuts), whether it lands in the console, metrics.json, report.md, the model card or
predictions file; `run.py predict`/`evaluate` call the same head.predict on new files.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from ..core.files import write_atomic, write_json, write_predictions
from ..evaluation.metrics import strip_prefix
from ..heads.base import column_values
from ..inference.predictor import predict_in_length_order, predict_rows
from ..inference.runs import open_run
from ..outputs.checkpoints import kept_checkpoint, kept_text, stopped_early, stopped_text
from ..outputs.folder import mark
from ..outputs.provenance import manifest, versions
from ..outputs.report import write_report


def finish_run(recipe, head, trainer, tokenized, data, train_result, model_size: dict, started: float) -> int:
    """Everything after `trainer.train()` returned normally; files are written by the main process only."""
    kept = kept_checkpoint(trainer.state, trainer.args)
    stop = stopped_early(trainer.state, trainer.callback_handler.callbacks)
    if stop and trainer.is_world_process_zero():
        print(stopped_text(stop))
    if kept and trainer.is_world_process_zero():
        # The scores printed below are this checkpoint's, not the last evaluation's printed above.
        print(f"kept {kept_text(kept)}")
    if head.splits_batches and trainer.padding_share is not None:
        # What padding cost this run: the share of computed positions that held no token.
        train_result.metrics["padding_share"] = round(trainer.padding_share, 4)
        path = {"flatten": "flattened batches", "length_split": f"length split: chunk cost {trainer.chunk_cost} tokens"}
        print(f"training: {trainer.padding_share:.0%} of the computed positions were padding "
              f"({path.get(trainer.padding, 'padded batches, no length split')})")
    tuned = head.after_training(trainer, tokenized)
    head.record(trainer.model)  # the state, as the run ends, in the saved config.json
    trainer.save_model()  # with model.peft: the adapter and the head layer only
    output_dir = recipe.training.output_dir
    # should_save: process 0, or with training.save_on_each_node the first process of every node, each
    # writing the whole run into its own node's output_dir (Trainer's save_state is process 0's alone).
    if trainer.args.should_save:
        trainer.state.save_to_json(str(Path(output_dir) / "trainer_state.json"))
        head.save_state(output_dir)  # beside the model, and beside a LoRA adapter, which has no config.json
    trainer.accelerator.wait_for_everyone()  # every process reads the saved run to predict its test split
    results, predictions, outputs = evaluate_splits(trainer, head, tokenized, data, output_dir)
    if not trainer.args.should_save:
        return 0
    results = {"train": train_result.metrics, **({"tuned": tuned} if tuned else {}), **results}
    record = run_record(recipe, results, data, head, outputs, started, trainer.padding)
    model = trainer.model
    if kept:
        record["kept_checkpoint"] = kept
    if stop:
        record["stopped_early"] = stop
    record["model"] = {**model_size, "parameters": model.num_parameters(), "trainable_parameters": model.num_parameters(only_trainable=True)}
    write_report(output_dir, recipe.to_dict(), head, record, outputs, plots_on=recipe.report.plots)
    write_run(recipe, record, predictions, head.predictions_file)
    if trainer.is_world_process_zero():
        print(summary(results))
    return 0


def evaluate_splits(trainer, head, tokenized, data, output_dir) -> tuple[dict, pd.DataFrame | None, dict]:
    """Validation and test metrics; predictions for the test split (with gold labels where it has them);
    and (label_ids, predictions) of each labelled split, for the report.

    Validation is scored by the run's Trainer, across processes (Trainer gathers predictions and drops the
    duplicates that pad a distributed sampler's last batch). The test split is predicted through the saved
    run, exactly as `run.py predict` and `evaluate` will predict it: on one process the predictions file and
    those commands then agree field for field.
    """
    results, outputs = {}, {}
    if "validation" in tokenized:
        output = trainer.predict_split(trainer.eval_dataset, "eval")  # the run's last evaluation, when it is current
        results["validation"] = head.scores(strip_prefix(output.metrics, "eval_"))
        outputs["validation"] = (output.label_ids, output.predictions)
    if "test" not in tokenized:
        return results, None, outputs
    if head.predictions_file is None:  # a corpus has nothing to predict: loss and perplexity only
        output = trainer.predict(tokenized["test"], metric_key_prefix="test")
        results["test"] = head.scores(strip_prefix(output.metrics, "test_"))
        return results, None, outputs
    # Every process takes part: the predicting Trainer shares the test rows among them and gathers the result.
    test = data.splits["test"]
    gold = [c for c in dict.fromkeys(("labels", head.data.label_column)) if c in test.column_names]  # a label column may be named labels
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        # A sharded engine predicts in its own Trainer (a second Trainer would start a second engine).
        # In length order, as the saved run predicts it (the same batches, so the same loss).
        prediction = predict_in_length_order(head, trainer, tokenized["test"], test)
    else:
        run = open_run(output_dir, finished=False)
        _, prediction = next(predict_rows(run, test.select_columns(head.data.text_columns + gold), None, len(test), bool(gold)))
    output = prediction.output
    if output is not None and output.label_ids is not None:
        # Loading a model for prediction is timed too; a timing is no score and differs between equal runs.
        results["test"] = {k: v for k, v in head.scores(strip_prefix(output.metrics, "test_")).items() if k != "model_preparation_time"}
        outputs["test"] = (output.label_ids, output.predictions)
    frame = pd.DataFrame({c: column_values(test, c) for c in user_columns(test)})
    for name, values in {**head.gold(test), **prediction.columns}.items():
        frame[name] = values
    return results, frame, outputs


def user_columns(split) -> list[str]:
    """The test file's own columns, in its order (ids, metadata and the text): the predictions file keeps them, so
    a prediction joins back to its row. The gold label follows under its own name (the head decodes it from
    `labels`); internal columns (`labels`, `__row`) are left out."""
    return [c for c in split.column_names if c != "labels" and not c.startswith("__")]


def run_record(recipe, results: dict, data, head, outputs: dict, started: float, padding: str) -> dict:
    """What metrics.json holds: the recipe's metrics per split, and the head's full evaluation of each labelled split."""
    evaluation = {split: head.evaluation(y, p) for split, (y, p) in outputs.items()}
    return {
        "status": "finished",
        **results,
        "evaluation": {split: table for split, table in evaluation.items() if table is not None},
        "decision_rule": head.decision_rule(),
        "head_state": head.state.to_dict(),
        "data": data.report,
        "labels": data.labels,
        "wall_time_s": round(time.time() - started, 2),
        "versions": versions(),
        "manifest": manifest(recipe, data, padding),
    }


def write_run(recipe, record: dict, predictions, predictions_file: str | None) -> None:
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


def interrupted(trainer, signum: int) -> int:
    """After a signal: the checkpoint is saved; say how to continue and exit as a signalled program does."""
    step = trainer.state.global_step
    if trainer.args.should_save:
        mark(trainer.args.output_dir, "interrupted", step=step, signal=signum)
    if trainer.is_world_process_zero():
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
