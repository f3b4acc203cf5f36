"""Command-line parsing and the one place where a RecipeError becomes a one-line message and exit status 2."""

from __future__ import annotations

import argparse
import os
import sys

from ..core.errors import RecipeError
from ..core.schema import did_you_mean


def parse_args(argv=None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and mistyped_command(argv[0]):
        raise RecipeError(
            f"{argv[0]}: not a command or a recipe file{did_you_mean(argv[0], COMMANDS) or '.'} "
            f"Commands: {', '.join(COMMANDS)}; or give a recipe: python run.py RECIPE.yaml"
        )
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Train and evaluate a model from a YAML recipe.",
        epilog="Example: python run.py recipes/quickstart.yaml training.learning_rate=3.0e-5 data.max_train_samples=200\n"
        "Finished runs: python run.py {predict,evaluate,compare,export,serve} --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="path to a YAML recipe")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override recipe values (parsed as YAML)")
    parser.add_argument("--check", action="store_true", help="validate, print the resolved recipe, train nothing")
    parser.add_argument("--data-only", action="store_true", help="run the data pipeline, print its report, train nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    # Intermixed: flags may come before, between or after the overrides.
    return parser.parse_intermixed_args(argv)


VERBOSE_HELP = "print every library progress bar, load report and Trainer log line, on every process"
COMMANDS = ("predict", "evaluate", "compare", "sweep", "cv", "curve", "export", "serve")
# Server-side batching defaults: a batch goes when it holds this many texts or its first request has waited this long.
MAX_BATCH = 32
MAX_WAIT_MS = 5.0


def mistyped_command(word: str) -> bool:
    """A first word that names no file and looks like a command, not a recipe path (`run.py predcit RUN`)."""
    if word.startswith("-") or "=" in word or os.path.exists(word):
        return False
    return not word.lower().endswith((".yaml", ".yml", ".json")) and "/" not in word and os.sep not in word


def parse_command(argv) -> argparse.Namespace:
    """`predict`, `evaluate` and `compare` work on finished runs; the first word chooses, so `run.py RECIPE` is unchanged."""
    parser = argparse.ArgumentParser(prog="run.py", description="Use and compare finished runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, what in (
        ("predict", "write the run's predictions, with a probability per label, for new texts"),
        ("evaluate", "predict and score against the gold labels in the input (the run's data.label_column)"),
    ):
        sub = commands.add_parser(name, help=what, description=what)
        sub.add_argument("run", metavar="OUTPUT_DIR", help="output_dir of a finished run (read, never written)")
        sub.add_argument(
            "--input", required=True,
            help="csv, tsv, json, jsonl or parquet file with the run's text column(s); '-' reads one text per line from stdin",
        )
        default = "CSV on stdout" if name == "predict" else "not written"
        sub.add_argument("--output", help=f"predictions file, .csv or .jsonl (default: {default})")
        sub.add_argument("--batch-size", type=int, help="texts per forward pass (default: the run's per_device_eval_batch_size, else 64)")
    evaluate = commands.choices["evaluate"]
    evaluate.add_argument("--metrics", help="also write the scores, per-class table and confusion matrix to this JSON file")
    evaluate.add_argument("--plots", help="also write confusion matrix, ROC, precision-recall and reliability PNGs into this folder")
    compare = commands.add_parser("compare", help="settings and metrics of runs side by side, and their validation curves")
    compare.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="output_dir of finished runs")
    compare.add_argument("--split", choices=["validation", "test"], help="metrics of this split (default: test if every run has it)")
    compare.add_argument("--metric", help="validation metric to plot beside the loss (default: the first run's metric_for_best_model or first metric)")
    compare.add_argument("--plot", default="compare.png", help="PNG of validation curves (default: compare.png; '' for none)")
    sweep = commands.add_parser(
        "sweep", help="run every trial of the recipe's sweep: section, each into its own folder, and rank them",
        description="Run every trial of the recipe's sweep: section into OUTPUT_DIR/trial-NNN; finished trials are skipped.",
    )
    sweep.add_argument("recipe", help="path to a YAML recipe with a sweep: section")
    sweep.add_argument("overrides", nargs="*", metavar="section.key=value", help="override recipe values (parsed as YAML)")
    sweep.add_argument("--check", action="store_true", help="validate every trial and list them, train nothing")
    sweep.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    cv = commands.add_parser(
        "cv", help="k-fold cross-validation: one run per fold, metrics' mean and spread, out-of-fold predictions",
        description="Train the recipe once per fold into OUTPUT_DIR/fold-K (training.output_dir is OUTPUT_DIR), each fold "
        "validated on its held-out part (the recipe's own validation set is not used); finished folds are skipped.",
    )
    cv.add_argument("recipe", help="path to a YAML recipe (heads sequence_classification, binary, regression)")
    cv.add_argument("overrides", nargs="*", metavar="section.key=value", help="override recipe values (parsed as YAML)")
    cv.add_argument("--folds", type=int, default=5, help="number of folds (default: 5); stratified by label for classification heads, seeded by training.seed")
    cv.add_argument("--group-column", help="column of the training data naming groups (a speaker, a document) that no fold splits")
    cv.add_argument("--label-issues", action="store_true",
                    help="also write label_issues.csv: training rows whose label is likely wrong, ranked by cleanlab (pip install 'recipekit[cv]')")
    cv.add_argument("--check", action="store_true", help="load the data, print the folds' sizes, train nothing")
    cv.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    curve = commands.add_parser("curve", help="a learning curve: the recipe on seeded class-balanced subsets of each size, beside TF-IDF")
    curve.add_argument("recipe", help="path to a YAML recipe (a head with one class per row)")
    curve.add_argument("overrides", nargs="*", metavar="section.key=value", help="override recipe values (parsed as YAML)")
    curve.add_argument("--sizes", default="8,16,32,64,all", help="training rows per class, increasing; 'all' last: every row (default: 8,16,32,64,all)")
    curve.add_argument("--seeds", type=int, default=5, help="subsets (and training seeds) per size (default: 5)")
    curve.add_argument("--check", action="store_true", help="load the data, check the sizes, train nothing")
    curve.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    export = commands.add_parser(
        "export", help="write a finished classifier run as an ONNX graph (fp32, or int8) that predict, evaluate and serve read as the run",
        description="Export a finished run's model to ONNX; the folder also carries its tokenizer, head state, recipe and metrics.",
    )
    export.add_argument("run", metavar="OUTPUT_DIR", help="output_dir of a finished run (read, never written)")
    export.add_argument("--format", required=True, choices=["onnx"], help="the exported model's format")
    export.add_argument("--quantize", choices=["int8"], help="int8: onnxruntime's dynamic quantization (int8 weights, ~4x smaller, faster on CPU)")
    export.add_argument("--output", help="folder to write (default: OUTPUT_DIR-onnx, or OUTPUT_DIR-onnx-int8, beside the run)")
    export.add_argument("--overwrite", action="store_true", help="replace --output if it holds files")
    serve = commands.add_parser(
        "serve", help="serve a finished run (or its ONNX export) over HTTP: POST /predict, GET /health, GET /info, docs at /docs",
        description="Serve a finished run over HTTP; SIGTERM or Ctrl-C finish the requests in flight, then exit.",
    )
    serve.add_argument("run", metavar="OUTPUT_DIR", help="output_dir of a finished run, or a folder written by run.py export")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    serve.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model (default: 1)")
    serve.add_argument("--max-batch", type=int, default=MAX_BATCH,
                       help=f"most texts per forward pass, and per request (default: {MAX_BATCH})")
    serve.add_argument("--max-wait-ms", type=float, default=MAX_WAIT_MS,
                       help=f"how long the first request of a batch waits for others to join it (default: {MAX_WAIT_MS} ms)")
    args = parser.parse_args(argv)
    for option in ("batch_size", "workers", "max_batch"):
        value = getattr(args, option, None)
        if value is not None and value <= 0:
            parser.error(f"--{option.replace('_', '-')}: {value} must be a positive integer")
    if getattr(args, "max_wait_ms", 0) < 0:
        parser.error(f"--max-wait-ms: {args.max_wait_ms} must not be negative")
    return args


def guarded(main, argv=None) -> int:
    """Run `main`; report recipe and data problems as `error: ...` lines with exit status 2, no traceback."""
    try:
        return main(argv)
    except RecipeError as e:
        # Every process of a multi-process launch finds the same problems; one copy is enough.
        if os.environ.get("RANK", "0") != "0":
            return 2
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
