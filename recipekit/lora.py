"""LoRA adapters through the `peft` library, for every head: `model.peft:` holds `peft.LoraConfig` keys.

    model:
      peft: {r: 8, lora_alpha: 16, lora_dropout: 0.1}   # target_modules default to peft's choice per model
                                                        # type (BERT: query, value)

The head decides peft's task type, and with it which new modules train in full and are saved with the
adapter (for classification: the `classifier`/`score` layer). A run saves only the adapter (a few MB);
merge it into an ordinary model that `pipeline` loads with:

    python -m recipekit.lora runs/my-run runs/my-run-merged
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .errors import RecipeError
from .schema import build_kwargs

# Hugging Face pipeline task of a head -> peft task type.
TASK_TYPES = {
    "text-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "question-answering": "QUESTION_ANS",
    "text-generation": "CAUSAL_LM",
    "text2text-generation": "SEQ_2_SEQ_LM",
    "feature-extraction": "FEATURE_EXTRACTION",
}
# Keys the run sets itself: the task from the head, the rest from the model being trained.
RESERVED = ("task_type", "peft_type", "inference_mode", "base_model_name_or_path", "revision")
LABELS_FILE = "labels.json"


def peft_problems(raw: dict) -> list[str]:
    """Problems with `model.peft`, as `peft.<key>: ...` lines (the caller adds `model.`)."""
    try:
        from peft import LoraConfig
    except ImportError:
        return ["peft: LoRA needs the peft package (pip install peft)"]
    errors: list[str] = []
    for key in RESERVED:
        if key in raw:
            errors.append(f"peft.{key}: set by the run (from model.head and model.name_or_path); leave it out")
    kwargs = build_kwargs(LoraConfig, {k: v for k, v in raw.items() if k not in RESERVED}, "peft", errors, list_valid_keys=False)
    if not errors:
        try:
            LoraConfig(**kwargs)
        except (ValueError, TypeError) as e:
            errors.append(f"peft: {str(e).strip().splitlines()[0]}")
    return errors


def apply_peft(model, model_args, head):
    """Wrap `model` with fresh LoRA adapters when the recipe asks for them; otherwise return it unchanged."""
    if model_args.peft is None:
        return model
    from peft import LoraConfig, get_peft_model

    task = TASK_TYPES.get(getattr(head, "pipeline_task", None))
    config = LoraConfig(task_type=task, **model_args.peft)
    return get_peft_model(model, config)


def save_labels(output_dir: str, labels: list[str]) -> None:
    """An adapter folder has no config.json, so the label names a merge needs are kept beside it."""
    from .outputs import write_json

    write_json(Path(output_dir) / LABELS_FILE, labels)


def merge(run_dir: str, out_dir: str) -> None:
    """Load the base model and the run's adapter, fold the adapter into the weights, save a plain model."""
    from peft import PeftModel

    from .heads import HEADS
    from .recipe import ModelArgs
    from .train import load_tokenizer

    run = Path(run_dir)
    if not (run / "adapter_config.json").exists():
        raise RecipeError(f"{run_dir}: no adapter_config.json; merge takes the output_dir of a run with model.peft")
    if Path(out_dir).exists() and any(Path(out_dir).iterdir()):
        raise RecipeError(f"{out_dir}: already exists and is not empty; choose a new folder")
    section = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))["model"]
    model_args = ModelArgs(**{**section, "peft": None})
    labels = json.loads((run / LABELS_FILE).read_text(encoding="utf-8"))
    head = HEADS[model_args.head](model_args.head_options, model_args.head_config)
    head.labels = list(labels)
    model = PeftModel.from_pretrained(head.load_model(model_args), str(run))
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir)
    load_tokenizer(model_args).save_pretrained(out_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipekit.lora", description="Merge a LoRA run's adapter into a full model.")
    parser.add_argument("run_dir", help="output_dir of a run trained with model.peft")
    parser.add_argument("out_dir", help="new folder for the merged model (loads with transformers.pipeline)")
    args = parser.parse_args(argv)
    merge(args.run_dir, args.out_dir)
    print(f"merged model written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    from .cli import guarded

    sys.exit(guarded(main))
