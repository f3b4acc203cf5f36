"""`run.py merge RUN OUT` (or `python -m recipekit.commands.merge RUN OUT`): merge a LoRA run's adapter into an ordinary model.

The merged folder is a finished run like any other: the model and tokenizer (`transformers.pipeline`
loads them), its head state, the run's recipe.yaml (with `model.peft` cleared) and metrics.json, so
`run.py predict` and `evaluate` take it too.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from ..core.errors import RecipeError
from ..core.files import follow_umask, write_atomic
from ..inference.runs import open_run
from ..modeling.loading import load_tokenizer
from .cli import guarded, parse_command


def merge(run_dir: str, out_dir: str) -> None:
    """Load the base model and the run's adapter, fold the adapter into the weights, save a finished run."""
    run = open_run(run_dir)
    if not run.adapter:
        raise RecipeError(f"{run_dir}: no adapter_config.json; merge takes the output_dir of a run with model.peft")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RecipeError(f"{out_dir}: already exists and is not empty; choose a new folder")
    model = run.load_model()
    run.head.record(model)
    with follow_umask(out):  # safetensors writes the merged weights 0600
        model.save_pretrained(out_dir)
        load_tokenizer(run.model_args_for_tokenizer).save_pretrained(out_dir)
        run.head.save_state(out_dir)
        recipe = yaml.safe_load((run.folder / "recipe.yaml").read_text(encoding="utf-8"))
        recipe["model"]["peft"] = None
        write_atomic(out / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
        # The merged model computes what the adapter run computed (up to float rounding): its metrics stand.
        shutil.copyfile(run.folder / "metrics.json", out / "metrics.json")


def merge_command(args) -> int:
    merge(args.run_dir, args.out_dir)
    print(f"merged model written to {args.out_dir}")
    return 0


def main(argv=None) -> int:
    return merge_command(parse_command(["merge", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(guarded(main))
