"""`run.py new RECIPE.yaml [--from quickstart]`: a recipe to start from, every key with its one-line help.

The new file holds the values the source recipe writes, and below them, commented out at their defaults, the
keys a user most often changes next; each key's comment is the help of the dataclass field that defines it
(TrainingArguments' own for `training:`), so the scaffold and `--check` never disagree about what a key means.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ..core.errors import RecipeError
from ..core.schema import did_you_mean
from ..data.steps import STEPS
from ..modeling.models import TokenizerArgs
from ..recipe.build import load_recipe, read_yaml
from ..recipe.data import DataArgs
from ..recipe.model import ModelArgs
from ..recipe.sections import BatchingArgs, RegularizationArgs, SanityArgs

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# Beyond what the source recipe writes: the keys a new recipe most often changes next, shown commented out.
LIKELY = {
    "model": ("name_or_path", "head", "classifier_dropout", "peft"),
    "data": ("train_file", "validation_file", "test_file", "dataset", "text_columns", "label_column",
             "validation_split", "max_length", "long_text", "max_train_samples"),
    "training": ("output_dir", "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
                 "per_device_eval_batch_size", "gradient_accumulation_steps", "warmup_steps", "weight_decay",
                 "eval_strategy", "save_strategy", "load_best_model_at_end", "metric_for_best_model", "logging_steps",
                 "seed", "bf16"),
    "regularization": ("early_stopping_patience",),
}
HELP_CHARS = 110  # one line: TrainingArguments' helps run to paragraphs


def new_command(args) -> int:
    source = find_source(args.source)
    target = Path(args.path)
    if target.exists():
        raise RecipeError(f"{args.path}: already exists; `new` never replaces a file, choose another name")
    if not target.name.endswith((".yaml", ".yml")):
        raise RecipeError(f"{args.path}: a recipe file ends in .yaml or .yml")
    recipe = load_recipe(str(source))  # the source must be valid: the scaffold starts from a recipe that runs
    text = scaffold(read_yaml(str(source)), type(recipe.training), source, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as f:  # "x": never over a file that appeared meanwhile
        f.write(text)
    print(f"wrote {target} from {shown(source)}; check it: python run.py {target} --check")
    return 0


def find_source(name: str) -> Path:
    """A path, or a shipped recipe's name (`quickstart`, `pretrain/bert_mlm_scratch`)."""
    if Path(name).is_file():
        return Path(name)
    shipped = {str(p.relative_to(RECIPES).with_suffix("")): p for p in sorted(RECIPES.rglob("*.yaml"))
               if "accelerate" not in p.parts}
    if name.removesuffix(".yaml") in shipped:
        return shipped[name.removesuffix(".yaml")]
    raise RecipeError(f"--from: {name!r} is neither a file nor a shipped recipe{did_you_mean(name, shipped) or '.'} "
                      f"Choices: {', '.join(shipped)}")


def scaffold(raw: dict, training_class, source: Path, target: Path) -> str:
    classes = {"model": ModelArgs, "tokenizer": TokenizerArgs, "data": DataArgs, "training": training_class,
               "regularization": RegularizationArgs, "batching": BatchingArgs, "sanity": SanityArgs}
    lines = [
        f"# A recipe started from {shown(source)} by `run.py new`. Each key's comment is its help; the commented-out keys",
        "# are at their defaults. Every key: README.md's recipe reference.",
        f"#   check:  python run.py {target} --check",
        f"#   train:  python run.py {target}",
    ]
    sections = list(raw) + [s for s in LIKELY if s not in raw]
    for section in sections:
        written = raw.get(section)
        lines.append("")
        if section == "preprocess":
            lines.append(f"# Cleaning steps, run in order. Choices: {', '.join(STEPS)}")
            lines += dump({section: written}, "")
            continue
        if section == "metrics":
            lines.append("# Scores computed at every evaluation (the head's defaults when absent)")
            lines += dump({section: written}, "")
            continue
        if section not in classes or not isinstance(written, (dict, type(None))):
            lines += dump({section: written}, "")  # the sweep: section, as written
            continue
        fields = {f.name: f for f in dataclasses.fields(classes[section]) if f.init}
        lines.append(f"{section}:")
        for key, value in (written or {}).items():
            lines += [f"  # {one_line(fields[key])}"] if key in fields else []
            lines += dump({key: value}, "  ")
        for key in LIKELY.get(section, ()):
            if key in (written or {}) or key not in fields:
                continue
            lines.append(f"  # {one_line(fields[key])}")
            lines += dump({key: default(fields[key])}, "  # ")
    return "\n".join(lines) + "\n"


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def one_line(f: dataclasses.Field) -> str:
    text = " ".join(str(f.metadata.get("help", "")).split()) or f.name
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= HELP_CHARS else first[:HELP_CHARS - 3].rstrip() + "..."


def default(f: dataclasses.Field):
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return None if value is dataclasses.MISSING else getattr(value, "value", value)  # an enum as its YAML word


def dump(mapping: dict, indent: str) -> list[str]:
    """`key: value` lines: a mapping as a block below its key, anything else on the key's line (lists in brackets)."""
    lines = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            block = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
            lines += [f"{indent}{key}:", *(f"{indent}  {line}" for line in block.splitlines())]
        else:
            # A one-item list in flow style quotes the value as YAML needs; the brackets are then taken off.
            flow = yaml.safe_dump([value], allow_unicode=True, default_flow_style=True, width=1000).strip()
            lines.append(f"{indent}{key}: {flow[1:-1]}")
    return lines
