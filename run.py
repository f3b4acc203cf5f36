"""Fine-tune a model from a YAML recipe: python run.py RECIPE [section.key=value ...] [--check|--data-only|--overwrite|--resume].

Finished runs: python run.py predict|evaluate OUTPUT_DIR --input FILE, python run.py compare OUT1 OUT2 ...
"""

import os
import sys
import time
from pathlib import Path

from transformers import set_seed

from recipekit.cli import COMMANDS, guarded, parse_args, parse_command
from recipekit.compare import compare_command
from recipekit.data import load_splits, tokenize
from recipekit.datareport import format_report
from recipekit.heads import HEADS
from recipekit.interrupt import StopOnSignal
from recipekit.outputs import check_output_dir, start_run, write_json
from recipekit.predict import evaluate_command, predict_command
from recipekit.recipe import load_recipe
from recipekit.report import write_report
from recipekit.train import build_trainer, evaluate_splits, interrupted, load_tokenizer, run_record, summary, write_run


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return run_command(parse_command(argv))
    started = time.time()
    args = parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    if args.check:
        print(recipe.to_yaml(), end="")
        return 0
    training = recipe.training
    if recipe.hub_token:
        os.environ["HF_TOKEN"] = recipe.hub_token  # read by huggingface_hub; never written to any output
    if not args.data_only:
        check_output_dir(training.output_dir, args.overwrite, args.resume)

    tokenizer = load_tokenizer(recipe.model)
    with training.main_process_first(desc="load, preprocess and tokenize data"):
        data = load_splits(recipe.data, recipe.preprocess, training.seed, tokenizer)
        tokenized, data.report["tokens"] = tokenize(data.splits, tokenizer, recipe.data)
        if training.process_index == 0:
            print(format_report(data.report))
            if not args.data_only:
                start_run(training.output_dir, recipe.to_yaml(), clear=args.overwrite)
                write_json(Path(training.output_dir) / "data_report.json", data.report)
    if args.data_only:
        return 0

    set_seed(training.seed)  # before the model: the new head's weights are drawn at load time
    head = HEADS[recipe.model.head]
    model = head.load_model(recipe.model, data.labels)

    trainer = build_trainer(recipe, head, model, tokenizer, tokenized)
    with StopOnSignal() as stop:
        trainer.add_callback(stop)
        train_result = trainer.train(resume_from_checkpoint=True if args.resume else None)
    if stop.received:
        return interrupted(trainer, stop.received)
    trainer.save_model()
    trainer.save_state()
    results, predictions, outputs = evaluate_splits(trainer, head, tokenized, data, recipe.data.text_columns)

    if trainer.is_world_process_zero():
        record = run_record(recipe, {"train": train_result.metrics, **results}, data, head, outputs, started)
        write_report(training.output_dir, recipe.to_dict(), head, record, outputs)
        write_run(recipe, record, predictions)
        print(summary(results))
    return 0


def run_command(args) -> int:
    return {"predict": predict_command, "evaluate": evaluate_command, "compare": compare_command}[args.command](args)


if __name__ == "__main__":
    sys.exit(guarded(main))
