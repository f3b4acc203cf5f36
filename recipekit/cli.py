"""Command-line parsing and the one place where a RecipeError becomes a one-line message and exit status 2."""

from __future__ import annotations

import argparse
import sys

from .errors import RecipeError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Train and evaluate a model from a YAML recipe.",
        epilog="Example: python run.py recipes/quickstart.yaml training.learning_rate=3.0e-5 data.max_train_samples=200",
    )
    parser.add_argument("recipe", help="path to a YAML recipe")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override recipe values (parsed as YAML)")
    parser.add_argument("--check", action="store_true", help="validate, print the resolved recipe, train nothing")
    parser.add_argument("--data-only", action="store_true", help="run the data pipeline, print its report, train nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    # Intermixed: flags may come before, between or after the overrides.
    return parser.parse_intermixed_args(argv)


def guarded(main, argv=None) -> int:
    """Run `main`; report recipe and data problems as `error: ...` lines with exit status 2, no traceback."""
    try:
        return main(argv)
    except RecipeError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
