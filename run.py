"""Fine-tune or pretrain a model from a YAML recipe: python run.py RECIPE [section.key=value ...] [--check|--data-only|--overwrite|--resume].

Finished runs: python run.py predict|evaluate OUTPUT_DIR --input FILE, python run.py compare OUT1 OUT2 ...
Deployment: python run.py export OUTPUT_DIR --format onnx [--quantize int8], python run.py serve OUTPUT_DIR [--port 8000].
Sweeps: python run.py sweep RECIPE (the recipe's `sweep:` section; each trial is fine_tune below, in this process).
Cross-validation: python run.py cv RECIPE --folds 5 [--label-issues] (each fold is fine_tune below, in this process).
A new recipe: python run.py new my.yaml [--from quickstart]; a LoRA run as a full model: python run.py merge OUTPUT_DIR NEW_DIR.
Learning curve: python run.py curve RECIPE --sizes 8,16,32,64,all --seeds 5 (each point is fine_tune below, in this process).
"""
# The command line is read before torch and transformers load (4-8 s): --help and usage errors answer at once

import sys

from recipekit.commands.cli import check_usage

if __name__ == "__main__" and check_usage(sys.argv[1:]):
    sys.exit(2)

import os
import time
from pathlib import Path

from transformers import set_seed

from recipekit.commands.cli import guarded, parse
from recipekit.commands.compare import compare_command
from recipekit.commands.curve import curve_command
from recipekit.commands.cv import cv_command
from recipekit.commands.export import export_command
from recipekit.commands.merge import merge_command
from recipekit.commands.new import new_command
from recipekit.commands.predict import evaluate_command, predict_command
from recipekit.commands.serve import serve_command
from recipekit.commands.sweep import sweep_command
from recipekit.core import console
from recipekit.core.errors import RecipeError
from recipekit.core.files import write_json
from recipekit.core.launch import choose_threads, open_lifeline
from recipekit.data.loading import load_splits
from recipekit.data.report import format_report
from recipekit.heads import head_for
from recipekit.modeling.adapters import apply_peft
from recipekit.modeling.loading import load_tokenizer
from recipekit.modeling.models import parameter_counts, train_tokenizer
from recipekit.outputs.checkpoints import check_resumable, common_checkpoint, whole_run_loss
from recipekit.outputs.folder import check_output_dir, guard_run, start_run
from recipekit.recipe.build import load_recipe
from recipekit.recipe.hub import check_hub, fit_hub_model
from recipekit.training.finish import finish_run, interrupted
from recipekit.training.interrupt import StopOnSignal
from recipekit.training.sanity import lr_range_test, overfit_batch
from recipekit.training.teacher import open_teacher, with_teacher_logits
from recipekit.training.trainer import build_trainer


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    console.configure(getattr(args, "verbose", False))
    if args.command:
        return run_command(args)
    recipe = load_recipe(args.recipe, args.overrides)
    if args.check:
        print(recipe.to_yaml(), end="")
        return 0
    if recipe.sweep:
        raise RecipeError(f"sweep: {args.recipe} is a sweep; run it with: python run.py sweep {args.recipe}")
    return fine_tune(recipe, args.data_only, args.overwrite, args.resume)


@guard_run  # holds the folder's lock from start_run on; a crash after it leaves status `failed` with the reason
def fine_tune(recipe, data_only=False, overwrite=False, resume=False, callbacks=()) -> int:
    started = time.time()
    training = recipe.training
    sanity = recipe.sanity.active  # a sanity check writes only under output_dir/sanity: the folder stays free for the run
    data_only = data_only or sanity
    if recipe.hub_token:
        os.environ["HF_TOKEN"] = recipe.hub_token  # read by huggingface_hub; never written to any output
    check_hub(recipe)  # seconds, not a minute of retries, when the Hub is out of reach
    fit_hub_model(recipe)  # data.max_length against a Hub model's positions
    head = head_for(recipe)
    if not data_only:
        check_output_dir(training.output_dir, overwrite, resume, training=training, writer=training.should_save)
    threads = choose_threads(on_cpu=training.device.type == "cpu")  # training.device starts the process group
    open_lifeline()  # so that a rank that dies is named by the others, not only seen as a closed connection
    if threads and training.process_index == 0:
        print(threads)

    tokenizer = load_tokenizer(recipe.model, recipe.tokenizer)  # None: tokenizer.train learns one from the data
    with training.main_process_first(desc="load, preprocess and tokenize data"):
        data = load_splits(recipe.data, recipe.preprocess, training.seed, tokenizer, head=head)
        if tokenizer is None:
            tokenizer = train_tokenizer(recipe.tokenizer.train, data.splits["train"], recipe.data.text_columns[0], head.tokenizer_template)
            print(f"tokenizer: trained {recipe.tokenizer.train.algorithm}, {len(tokenizer):,} tokens")
        if resume:
            check_resumable(training.output_dir, recipe.to_dict()["model"], data.labels)
        tokenized, data.report["tokens"] = head.tokenize(data.splits, tokenizer)
        teacher = open_teacher(recipe.model, head, recipe.data) if recipe.model.teacher else None  # refused before anything is written
        if training.process_index == 0:
            print(format_report(data.report))
        # Process 0 writes the run folder; with training.save_on_each_node the first process of every node
        # writes its own node's folder (node-local disks).
        if training.should_save and not data_only:
            start_run(training.output_dir, recipe.to_yaml(), clear=overwrite, resume=resume)
            write_json(Path(training.output_dir) / "data_report.json", data.report)
    if data_only and not sanity:
        return 0

    set_seed(training.seed)  # before the model: the new head's weights are drawn at load time
    model = head.load_model(recipe.model, tokenizer)
    size = parameter_counts(model)
    print(f"model: {recipe.model.init} {model.config.model_type}, {size['parameters']:,} parameters "
          f"({size['non_embedding_parameters']:,} outside the embeddings)")
    model = apply_peft(model, recipe.model, head)
    if recipe.sanity.overfit_batch:
        return overfit_batch(recipe, head, model, tokenizer, tokenized)
    if recipe.sanity.lr_range_test:
        return lr_range_test(recipe, head, model, tokenizer, tokenized)
    if teacher is not None:  # on every process at once (outside main_process_first): the teacher's Trainer shares the rows
        tokenized["train"] = with_teacher_logits(teacher, tokenized["train"], data.splits["train"], recipe.data.text_columns)

    trainer = build_trainer(recipe, head, model, tokenizer, tokenized)
    for callback in callbacks:
        trainer.add_callback(callback)
    with StopOnSignal() as stop:
        trainer.add_callback(stop)
        checkpoint = common_checkpoint(training.output_dir) if resume else None  # the newest complete one, on every node
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if checkpoint:
        train_result.metrics.update(whole_run_loss(trainer.state, int(Path(checkpoint).name.split("-")[-1]), train_result.metrics))
    if stop.received:
        return interrupted(trainer, stop.received)
    return finish_run(recipe, head, trainer, tokenized, data, train_result, size, started)


def run_command(args) -> int:
    if args.command == "sweep":
        return sweep_command(args, fine_tune)
    if args.command == "cv":
        return cv_command(args, fine_tune)
    if args.command == "curve":
        return curve_command(args, fine_tune)
    return {"predict": predict_command, "evaluate": evaluate_command, "compare": compare_command,
            "export": export_command, "serve": serve_command, "merge": merge_command, "new": new_command}[args.command](args)


if __name__ == "__main__":
    sys.exit(guarded(main))
