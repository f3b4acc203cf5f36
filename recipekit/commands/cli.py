"""Command-line parsing and the one place where a RecipeError becomes a one-line message and exit status 2.

The first word chooses: a command from COMMANDS, or a recipe to train. Each command has its own parser, read with
`parse_intermixed_args`, so flags and `section.key=value` overrides come in any order on every command. Nothing
here imports torch: `run.py --help` and every usage error answer before the libraries load.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..core.errors import LostRank, RecipeError
from ..core.schema import did_you_mean

VERBOSE_HELP = "print every library progress bar, load report and Trainer log line, on every process"
# Each command with the line `run.py --help` lists and its own --help opens with.
COMMANDS = {
    "predict": "write the run's predictions, with a probability per label, for new texts",
    "evaluate": "predict and score against the gold labels in the input (the run's data.label_column)",
    "compare": "settings and metrics of finished runs side by side, and their validation curves",
    "sweep": "run every trial of the recipe's sweep: section, each into its own folder, and rank them",
    "cv": "k-fold cross-validation: one run per fold, metrics' mean and spread, out-of-fold predictions",
    "curve": "a learning curve: the recipe on seeded class-balanced subsets of each size, beside TF-IDF",
    "export": "write a finished classifier run as an ONNX graph (fp32, or int8) that predict, evaluate and serve read as the run",
    "serve": "serve a finished run (or its ONNX export) over HTTP: POST /predict, GET /health, GET /info, docs at /docs",
    "merge": "fold a LoRA run's adapter into its base model, written as a finished run of its own",
    "new": "write a commented recipe to start from: a shipped recipe's values, every key's one-line help",
}
# Server-side batching defaults: a batch goes when it holds this many texts or its first request has waited this long.
MAX_BATCH = 32
MAX_WAIT_MS = 5.0
MAX_PORT = 65535


def parse_args(argv=None) -> argparse.Namespace:
    """`run.py RECIPE [overrides] [flags]`: train (or check) a recipe."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and mistyped_command(argv[0]):
        raise RecipeError(
            f"{argv[0]}: not a command or a recipe file{did_you_mean(argv[0], COMMANDS) or '.'} "
            f"Commands: {', '.join(COMMANDS)}; or give a recipe: python run.py RECIPE.yaml"
        )
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {name:<{width}}{what}" for name, what in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="run.py",
        usage="run.py RECIPE [section.key=value ...] [--check] [--data-only] [--overwrite] [--resume] [--verbose]\n"
        "       run.py COMMAND ...  (run.py COMMAND --help)",
        description="Train and evaluate a model from a YAML recipe.",
        epilog=f"commands:\n{listing}\n\n"
        "Example: python run.py recipes/quickstart.yaml training.learning_rate=3.0e-5 data.max_train_samples=200",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipe_arguments(parser, check="validate, print the resolved recipe, train nothing")
    parser.add_argument("--data-only", action="store_true", help="run the data pipeline, print its report, train nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    return parser.parse_intermixed_args(argv)


def recipe_arguments(parser: argparse.ArgumentParser, check: str) -> None:
    parser.add_argument("recipe", help="path to a YAML recipe")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override recipe values (parsed as YAML)")
    parser.add_argument("--check", action="store_true", help=check)
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def mistyped_command(word: str) -> bool:
    """A first word that names no file and looks like a command, not a recipe path (`run.py predcit RUN`)."""
    if word.startswith("-") or "=" in word or os.path.exists(word):
        return False
    return not word.lower().endswith((".yaml", ".yml", ".json")) and "/" not in word and os.sep not in word


def parse(argv=None) -> argparse.Namespace:
    """Either command line; `command` is None for training a recipe."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return parse_command(argv)
    args = parse_args(argv)
    args.command = None
    return args


def check_usage(argv) -> int:
    """Read the command line once before the libraries load: --help prints and exits, a usage error exits with 2."""
    def read(argv):
        parse(argv)
        return 0

    return guarded(read, argv)


def parse_command(argv) -> argparse.Namespace:
    """`run.py COMMAND ...`; the first word chooses, so `run.py RECIPE` is unchanged."""
    name, rest = argv[0], list(argv[1:])
    parser = command_parser(name)
    args = parser.parse_intermixed_args(rest)
    args.command = name
    for option in ("batch_size", "workers", "max_batch", "folds"):
        value = getattr(args, option, None)
        if value is not None and value <= 0:
            raise RecipeError(f"{name} --{option.replace('_', '-')}: {value} must be a positive integer")
    if getattr(args, "max_wait_ms", 0) < 0:
        raise RecipeError(f"serve --max-wait-ms: {args.max_wait_ms} must not be negative")
    if name == "serve" and not 0 <= args.port <= MAX_PORT:
        raise RecipeError(f"serve --port: {args.port} is not a TCP port; give 1 to {MAX_PORT}, or 0 for any free port")
    return args


def command_parser(name: str) -> argparse.ArgumentParser:
    what = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"run.py {name}", description=what[0].upper() + what[1:] + ".")
    if name in ("predict", "evaluate"):
        parser.add_argument("run", metavar="OUTPUT_DIR", help="output_dir of a finished run (read, never written)")
        parser.add_argument(
            "--input", required=True,
            help="csv, tsv, json, jsonl or parquet file with the run's text column(s); '-' reads one text per line from stdin",
        )
        default = "CSV on stdout" if name == "predict" else "not written"
        parser.add_argument("--output", help=f"predictions file, .csv or .jsonl (default: {default})")
        parser.add_argument("--batch-size", type=int, help="texts per forward pass (default: the run's per_device_eval_batch_size, else 64)")
        parser.add_argument("--text-column", action="append", metavar="NAME",
                            help="the input's column holding the text, where its name is not the run's text column (twice for a pair run)")
        parser.add_argument("--encoding", help="the input's text encoding, e.g. cp1252 (default: the run's data.encoding, else the byte-order mark's or utf-8)")
        parser.add_argument("--delimiter", help="the input's csv field separator, e.g. ';' (default: the run's data.delimiter, else the one its header uses)")
    if name == "evaluate":
        parser.add_argument("--metrics", help="also write the scores, per-class table and confusion matrix to this JSON file")
        parser.add_argument("--plots", help="also write confusion matrix, ROC, precision-recall and reliability PNGs into this folder")
    elif name == "compare":
        parser.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="output_dir of finished runs")
        parser.add_argument("--split", choices=["validation", "test"], help="metrics of this split (default: test if every run has it)")
        parser.add_argument("--metric", help="validation metric to plot beside the loss (default: the first run's metric_for_best_model or first metric)")
        parser.add_argument("--plot", default="compare.png", help="PNG of validation curves (default: compare.png; '' for none)")
    elif name == "sweep":
        parser.description = "Run every trial of the recipe's sweep: section into OUTPUT_DIR/trial-NNN; finished trials are skipped."
        recipe_arguments(parser, check="validate every trial and list them, train nothing")
    elif name == "cv":
        parser.description = (
            "Train the recipe once per fold into OUTPUT_DIR/fold-K (training.output_dir is OUTPUT_DIR), each fold validated "
            "on its held-out part (the recipe's own validation set is not used); finished folds are skipped."
        )
        recipe_arguments(parser, check="load the data, print the folds' sizes, train nothing")
        parser.add_argument("--folds", type=int, default=5, help="number of folds (default: 5); stratified by label for classification heads, seeded by training.seed")
        parser.add_argument("--group-column", help="column of the training data naming groups (a speaker, a document) that no fold splits")
        parser.add_argument("--label-issues", action="store_true",
                            help="also write label_issues.csv: training rows whose label is likely wrong, ranked by cleanlab (pip install 'recipekit[cv]')")
    elif name == "curve":
        parser.description = ("Train the recipe on seeded, class-balanced subsets of each size into OUTPUT_DIR/size-N/seed-K, "
                              "beside a TF-IDF baseline on the same subsets, and say whether the curve is still rising.")
        recipe_arguments(parser, check="load the data, check the sizes, train nothing")
        parser.add_argument("--sizes", default="8,16,32,64,all", help="training rows per class, increasing; 'all' last: every row (default: 8,16,32,64,all)")
        parser.add_argument("--seeds", type=int, default=5, help="subsets (and training seeds) per size (default: 5)")
    elif name == "export":
        parser.description = "Export a finished run's model to ONNX; the folder also carries its tokenizer, head state, recipe and metrics."
        parser.add_argument("run", metavar="OUTPUT_DIR", help="output_dir of a finished run (read, never written)")
        parser.add_argument("--format", required=True, choices=["onnx"], help="the exported model's format")
        parser.add_argument("--quantize", choices=["int8"], help="int8: 7-bit integer weights per output channel and 8-bit activations per token (a text's answer never depends on its batch mates); ~4x smaller")
        parser.add_argument("--output", help="folder to write (default: OUTPUT_DIR-onnx, or OUTPUT_DIR-onnx-int8, beside the run)")
        parser.add_argument("--overwrite", action="store_true", help="replace --output if it holds files")
    elif name == "serve":
        parser.description = "Serve a finished run over HTTP; SIGTERM or Ctrl-C finish the requests in flight, then exit."
        parser.add_argument("run", metavar="OUTPUT_DIR", help="output_dir of a finished run, or a folder written by run.py export")
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
        parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0: any free port, printed at start)")
        parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model (default: 1)")
        parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                            help=f"most texts per forward pass, and per request (default: {MAX_BATCH})")
        parser.add_argument("--max-wait-ms", type=float, default=MAX_WAIT_MS,
                            help=f"how long the first request of a batch waits for others to join it (default: {MAX_WAIT_MS} ms)")
    elif name == "merge":
        parser.add_argument("run_dir", metavar="OUTPUT_DIR", help="output_dir of a run trained with model.peft")
        parser.add_argument("out_dir", metavar="NEW_DIR", help="new folder for the merged model (loads with transformers.pipeline and run.py predict)")
    elif name == "new":
        parser.add_argument("path", metavar="RECIPE.yaml", help="the recipe file to write (an existing file is never replaced)")
        parser.add_argument("--from", dest="source", default="quickstart",
                            help="recipe to start from: a name under recipes/ (quickstart, binary_imdb, ...) or a path (default: quickstart)")
    return parser


def guarded(main, argv=None) -> int:
    """Run `main`; report recipe and data problems as `error: ...` lines with exit status 2, no traceback."""
    try:
        return main(argv)
    except RecipeError as e:
        # Every process of a multi-process launch finds the same problems; one copy is enough.
        if os.environ.get("RANK", "0") != "0" and not isinstance(e, LostRank):
            return 2
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
