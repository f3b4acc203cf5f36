"""The recipe: a YAML file whose sections map onto the dataclasses below, validated before anything runs.

Sections: `model`, `data`, `preprocess` (ordered steps), `metrics` (names), and `training`, which is
`transformers.TrainingArguments` itself: its fields are checked against that class, never re-declared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml
from transformers import TrainingArguments

from ..core import paths
from ..core.errors import RecipeError
from ..core.launch import launch_problems
from ..core.safety import parse_yaml, read_yaml_file, yaml_problem
from ..core.schema import Problem, build_kwargs, not_one_of, show
from ..data.loading import INTERNAL_PREFIX
from ..data.steps import STEPS
from ..evaluation import metrics as metric_registry
from ..heads import DEFAULT_HEAD, HEADS
from ..heads.language_model import BLOCK_KEY
from ..modeling.models import (
    TokenizerArgs,
    build_tokenizer_args,
    kept_layers_problems,
    local_config,
    shape_problems,
    usable_positions,
)
from .data import DATA_SYNONYMS, DEFAULT_MAX_LENGTH, DataArgs, SourceArgs, file_kind
from .model import MODEL_SYNONYMS, ModelArgs
from .sections import BatchingArgs, RegularizationArgs, ReportArgs, SanityArgs
from .sweep import SweepArgs, build_sweep
from .training import (
    SET_BECAUSE,
    SHOWN_IN_EFFECT,
    TRAINING_SYNONYMS,
    derive_accumulation,
    early_stopping_problems,
    training_problems,
    with_best_model_default,
    with_checkpoint_limit,
    with_device_defaults,
    with_run_length_defaults,
)


@dataclass
class Recipe:
    model: ModelArgs
    data: DataArgs
    preprocess: list
    metrics: list[str]
    training: TrainingArguments
    training_keys: dict  # what the recipe itself set under `training:`, coerced; recipe.yaml writes these
    regularization: RegularizationArgs = field(default_factory=RegularizationArgs)
    sanity: SanityArgs = field(default_factory=SanityArgs)
    batching: BatchingArgs = field(default_factory=BatchingArgs)
    sweep: SweepArgs | None = None
    sweep_raw: dict | None = None  # the sweep section as written, for --check and reproduction
    source: str | None = None
    # Kept out of TrainingArguments, whose pickle (training_args.bin) lands in every checkpoint.
    hub_token: str | None = field(default=None, repr=False)
    tokenizer: TokenizerArgs = field(default_factory=TokenizerArgs)
    report: ReportArgs = field(default_factory=ReportArgs)
    training_set: list = field(default_factory=list)  # TrainingArguments keys recipekit set that the recipe did not write

    def to_dict(self) -> dict:
        steps = [{s.name: dataclasses.asdict(s)} for s in self.preprocess]
        training = {k: v for k, v in self.training_keys.items() if k != "hub_token"}
        tokenizer = {"tokenizer": dataclasses.asdict(self.tokenizer)} if self.tokenizer != TokenizerArgs() else {}
        return {
            "model": dataclasses.asdict(self.model),
            **tokenizer,
            "data": dataclasses.asdict(self.data),
            "preprocess": steps,
            "metrics": list(self.metrics),
            "training": training,
            "regularization": dataclasses.asdict(self.regularization),
            "batching": dataclasses.asdict(self.batching),
            "sanity": dataclasses.asdict(self.sanity),
            "report": dataclasses.asdict(self.report),
            **({"sweep": self.sweep_raw} if self.sweep_raw is not None else {}),
        }

    def to_yaml(self) -> str:
        """The recipe with every default spelled out; under `training:`, as comments, the TrainingArguments values
        in effect that the recipe did not write (recipekit's, marked with why, and Trainer's): the file loads back
        as the same recipe, and the comments follow from it."""
        parts = []
        for section, value in self.to_dict().items():
            parts.append(yaml.safe_dump({section: value}, sort_keys=False, allow_unicode=True))
            if section == "training":
                parts.append(self.training_comments())
        return "".join(parts)

    def training_comments(self) -> str:
        written = {k for k in self.training_keys if k not in self.training_set}
        keys = [k for k in dict.fromkeys([*self.training_set, *SHOWN_IN_EFFECT]) if k not in written and hasattr(self.training, k)]
        lines = ["  # In effect, not written above (recipekit's choices say why; the rest are Trainer's defaults):"]
        for key in keys:
            value = getattr(self.training, key)
            value = getattr(value, "value", value)  # enums as written in a recipe
            value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # accelerator_config
            if value is None and key not in self.training_set:
                continue  # a Trainer setting that is off (eval_steps without step evaluations)
            # width: never wrapped, since a wrapped value's second line would not be a comment.
            shown = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=float("inf"))
            shown = shown.strip().removesuffix("...").strip()
            why = f"  # recipekit: {SET_BECAUSE[key]}" if key in self.training_set and key in SET_BECAUSE else ""
            lines.append(f"  # {key}: {shown}{why}")
        return "\n".join(lines) + "\n"


SECTIONS = {"model", "tokenizer", "data", "preprocess", "metrics", "training", "regularization", "batching", "sanity", "report", "sweep"}
MAPPING_SECTIONS = ("model", "tokenizer", "data", "training", "regularization", "batching", "sanity", "report", "sweep")


def read_yaml(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        raise RecipeError(f"{path}: recipe file does not exist")
    if p.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file")
    if not p.is_file():
        raise RecipeError(f"{path}: is not a regular file ({file_kind(p)}); give a recipe file")
    raw = read_yaml_file(p, "recipe")
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty; expected sections {', '.join(sorted(SECTIONS))}")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: the top level must be a mapping of sections ({', '.join(sorted(SECTIONS))}), got a {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict, overrides) -> None:
    """Set `section.key=value` pairs into `raw`; values are parsed as YAML scalars or lists, never evaluated."""
    errors = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            errors.append(f"override {show(item)}: expected section.key=value, e.g. training.learning_rate=3.0e-5")
            continue
        try:
            value = parse_yaml(text) if text.strip() else None
        except yaml.YAMLError as e:
            errors.append(f"override {show(item)}: the value is not valid YAML ({yaml_problem(e)})")
            continue
        node, parts = raw, key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                errors.append(f"override {item!r}: {'.'.join(parts[:depth + 1])} is not a mapping")
                break
            node = child
        else:
            node[parts[-1]] = value
    if errors:
        raise RecipeError(errors)


def build_recipe(raw: dict, source: str | None = None) -> Recipe:
    """Validate every section of `raw` and report all problems at once."""
    errors: list[str] = []
    for key in raw:
        if key not in SECTIONS:
            errors.append(f"{key}: {not_one_of(key, sorted(SECTIONS), 'a recipe section')}")
    # A section given as a scalar or a list reads as an empty one, whose missing keys would be blamed instead.
    for key in MAPPING_SECTIONS:
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            errors.append(f"{key}: the section must be a mapping of keys to values (e.g. {key}: {{key: value}}), got {show(raw[key])}")
    if errors:
        raise RecipeError(errors)

    model = ModelArgs(**build_kwargs(ModelArgs, raw.get("model"), "model", errors, synonyms=MODEL_SYNONYMS))
    errors += [f"model.{p}" for p in model.problems()]
    head = HEADS.get(model.head, HEADS[DEFAULT_HEAD])
    tokenizer = build_tokenizer_args(raw.get("tokenizer"), errors, head.tokenizer_algorithm)
    errors += tokenizer_problems(model, tokenizer)
    raw_data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if "length_split_cost" in raw_data:
        errors.append("data.length_split_cost: a training-step setting, now batching.length_split_cost; move it there")
        raw_data = {k: v for k, v in raw_data.items() if k != "length_split_cost"}
    data = DataArgs(**build_kwargs(DataArgs, raw_data if raw.get("data") is not None else None, "data", errors, synonyms=DATA_SYNONYMS))
    data.sources = build_sources(data.sources, errors)
    errors += [f"data.{p}" for p in data.problems()]
    if head.needs_labels and data.label_column in data.text_columns:
        errors.append(
            f"data.text_columns: {data.text_columns} includes data.label_column {data.label_column!r}; "
            "the model would read the answer; name the text column(s) and the label column apart"
        )
    errors += column_name_problems(data, head)
    steps = build_steps(raw.get("preprocess"), errors)
    names = build_metrics(raw.get("metrics"), errors, head)

    arguments = head.training_args_class
    training_keys = build_kwargs(arguments, raw.get("training"), "training", errors, list_valid_keys=False, synonyms=TRAINING_SYNONYMS)
    for key, value in head.training_defaults.items():
        training_keys.setdefault(key, value)
    errors += [f"training.{p}" for p in training_problems(training_keys, names, data)]
    errors += data.streaming_problems(head, sorted(n for n, h in HEADS.items() if h.streams), steps, training_keys)
    regularization = RegularizationArgs(**build_kwargs(RegularizationArgs, raw.get("regularization"), "regularization", errors))
    errors += [f"regularization.{p}" for p in regularization.problems()]
    sanity = SanityArgs(**build_kwargs(SanityArgs, raw.get("sanity"), "sanity", errors))
    errors += [f"sanity.{p}" for p in sanity.problems()]
    report = ReportArgs(**build_kwargs(ReportArgs, raw.get("report"), "report", errors))
    batching = BatchingArgs(**build_kwargs(BatchingArgs, raw.get("batching"), "batching", errors))
    errors += [f"batching.{p}" for p in batching.problems()]
    if isinstance(batching.length_split_cost, int) and not head.splits_batches:
        errors.append(f"batching.length_split_cost: head {model.head!r} trains whole batches (its loss is not a sum over "
                      "examples); only the pooled heads split them; leave it out")
    if batching.padding in ("flatten", "length_split") and not head.flattens:
        errors.append(f"batching.padding: {batching.padding!r} is for the pooled heads (one vector per text); head {model.head!r} "
                      "pads its batches; leave it out (auto) or set dynamic")
    elif batching.padding == "length_split" and not head.splits_batches:
        errors.append(f"batching.padding: 'length_split' splits training batches into chunks, which head {model.head!r} "
                      "never does (it trains whole batches); set auto, flatten or dynamic")
    sweep = build_sweep(raw.get("sweep"), names, training_keys, errors)
    written = {k: v for k, v in training_keys.items() if k != "hub_token"}
    passed = with_checkpoint_limit(with_best_model_default(with_run_length_defaults(dict(written)), data))
    errors += early_stopping_problems(regularization, passed)
    if data.streaming and passed.get("accelerator_config") is None:
        # Each process reads its own shards: accelerate's default for an IterableDataset has process 0 read every
        # batch and send it on, and refuses batches padded to different lengths.
        passed["accelerator_config"] = {"dispatch_batches": False}
    # Into what TrainingArguments gets, not training_keys: recipe.yaml keeps the global batch, so the same file
    # derives the accumulation again on another number of processes.
    errors += derive_accumulation(batching, passed)
    errors += launch_problems(with_device_defaults(dict(passed)))
    if not errors:
        # A saved recipe.yaml spells out every default: only a max_length other than the default counts as chosen.
        chosen = {k for k in raw_data if k != "max_length" or data.max_length != DEFAULT_MAX_LENGTH}
        parts = SimpleNamespace(model=model, data=data, training_keys=training_keys, steps=steps, data_keys=chosen, sanity=sanity)
        errors += head.recipe_problems(model.options(), parts)
        if data.long_text not in head.long_text:
            errors.append(f"data.long_text: {not_one_of(data.long_text, list(head.long_text), f'a strategy head {model.head!r} applies')}")
        if model.teacher and same_folder(model.teacher, training_keys.get("output_dir")):
            errors.append(f"model.teacher: {model.teacher!r} is this run's own training.output_dir; the student needs a folder of its own")
        if model.teacher and data.long_text == "chunks":
            # A training row is then a window, and the teacher's prediction path pools windows into documents.
            errors.append("model.teacher: a teacher scores whole documents, but data.long_text: chunks trains on windows; "
                          "use long_text: head or head_tail with a teacher")
    if not errors:
        errors += fit_model(model, data)
    if errors:
        raise RecipeError(errors)
    effective = with_device_defaults(passed)
    try:
        training = arguments(**effective)
    except (ValueError, TypeError, ImportError) as e:
        raise RecipeError(f"training: {str(e).strip().splitlines()[0]}") from None
    # A head's training_defaults are written under training: (as the recipe needs them); these are the rest.
    training_set = sorted(k for k, v in effective.items() if k not in written or written[k] != v)
    return Recipe(
        model, data, steps, names, training, training_keys, regularization, sanity, batching, sweep, raw.get("sweep"),
        source, training_keys.get("hub_token"), tokenizer, report, training_set,
    )


def column_name_problems(data: DataArgs, head) -> list[str]:
    """Recipe columns named as the pipeline names its own: a text column where the head writes the encoded label
    would be overwritten, and `__` names are its bookkeeping (row numbers, sources, check verdicts). A label column
    named `labels`, as many Hub data sets name it, is the head's own input and works."""
    rename = "rename the column in the file, or read it through data.sources with columns: {old: new}"
    out = []
    for column in data.text_columns:
        if column in head.written_columns:
            out.append(f"data.text_columns: {column!r} is the column head {head.name!r} writes the encoded label into; {rename}")
    for key, column in [*(("text_columns", c) for c in data.text_columns), ("label_column", data.label_column)]:
        if column.startswith(INTERNAL_PREFIX):
            out.append(f"data.{key}: {column!r}: names starting with {INTERNAL_PREFIX!r} are the data pipeline's own columns; {rename}")
    return out


def same_folder(a: str, b: str | None) -> bool:
    try:
        return b is not None and Path(paths.resolve(a)).expanduser().resolve() == Path(b).expanduser().resolve()
    except Problem:
        return False


def fit_model(model: ModelArgs, data: DataArgs, config=None) -> list[str]:
    """Lengths above the model's position embeddings fail as an index error at the first long batch: a length
    the recipe chose is refused, the default max_length is lowered to the model's positions (a tiny model may
    have 128). Here from a local config only, so `--check` stays offline; run.py checks a Hub model's config."""
    problems = []
    if config is None:
        config, problems = local_config(model)
    if config is None:
        return problems
    problems = kept_layers_problems(model, config)
    block = getattr(model.options(), "block_size", None)
    if block:
        return problems + shape_problems(config, block, BLOCK_KEY, pretrained=model.init == "pretrained")
    positions = usable_positions(config)
    if data.max_length == DEFAULT_MAX_LENGTH and positions is not None and positions < data.max_length:
        data.max_length = positions
    head = HEADS.get(model.head)
    return problems + shape_problems(config, data.max_length, "data.max_length", pretrained=model.init == "pretrained",
                                     long_text=head.long_text if head else ())


def tokenizer_problems(model: ModelArgs, tokenizer: TokenizerArgs) -> list[str]:
    if model.init == "scratch" and model.family and not tokenizer.train and not tokenizer.name_or_path:
        return [f"tokenizer: a scratch {model.family} model needs a tokenizer: tokenizer.train (learn one from the data) or tokenizer.name_or_path"]
    if tokenizer.train and model.init == "pretrained":
        return ["tokenizer.train: a pretrained model needs the tokenizer it was trained with; train a tokenizer only for model.init: scratch"]
    if tokenizer.name_or_path:
        try:
            if paths.looks_local(tokenizer.name_or_path) and not Path(paths.resolve(tokenizer.name_or_path)).expanduser().is_dir():
                return [f"tokenizer.name_or_path: {tokenizer.name_or_path!r} is not a folder"]
        except Problem as p:
            return [f"tokenizer.name_or_path: {p}"]
    return []


def load_recipe(path: str, overrides=()) -> Recipe:
    raw = read_yaml(path)
    apply_overrides(raw, overrides)
    return build_recipe(raw, source=path)


def build_sources(raw, errors: list[str]) -> list[SourceArgs] | None:
    if raw is None:
        return None
    sources = []
    for i, item in enumerate(raw):
        source = SourceArgs(**build_kwargs(SourceArgs, item, f"data.sources[{i}]", errors))
        errors += [f"data.sources[{i}].{p}" for p in source.problems()]
        sources.append(source)
    return sources


def build_steps(raw, errors: list[str]) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors.append(f"preprocess: expected a list of steps, got {show(raw)}")
        return []
    steps = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
        else:
            errors.append(f"preprocess[{i}]: expected a step name or {{name: {{options}}}}, got {show(item)}")
            continue
        if name not in STEPS:
            errors.append(f"preprocess[{i}]: {not_one_of(name, list(STEPS), 'a preprocessing step')}")
            continue
        path = f"preprocess[{i}].{name}"
        step = STEPS[name](**build_kwargs(STEPS[name], options, path, errors))
        errors += [f"{path}.{p}" for p in step.problems()]
        steps.append(step)
    return steps


def build_metrics(raw, errors: list[str], head) -> list[str]:
    """Classification heads take the evaluation/metrics.py registry (and user functions); the others their own fixed set."""
    if raw is None:
        return list(metric_registry.DEFAULT_CLASSIFICATION if head.metric_names is None else head.default_metrics)
    if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw) or not raw:
        errors.append(f"metrics: expected a non-empty list of metric names, got {show(raw)}")
        return []
    if head.metric_names is not None:
        for name in raw:
            if name not in head.metric_names:
                errors.append(f"metrics: {not_one_of(name, head.metric_names, f'a metric of head {head.name}')}")
        return raw
    for name in raw:
        try:
            metric_registry.resolve(name)
        except Problem as p:
            errors.append(f"metrics: {p}")
    return raw
