"""Before a run touches the Hub: is it reachable, and if not, is what the recipe names already cached?

huggingface_hub retries a failed request five times with backoff (about a minute per file) before it
falls back to the cache or fails with a message that does not say what to do. One short request to the
endpoint tells us the same in a second: when it fails, a run whose Hub models and data sets are cached
switches to offline mode (what `HF_HUB_OFFLINE=1` does), and any other run stops with one line naming
what is missing and how to run without the network. Nothing is written before this check.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import datasets.config
import huggingface_hub.constants
from huggingface_hub import try_to_load_from_cache

from ..core import paths
from ..core.errors import RecipeError
from .build import fit_model

# Seconds to wait for the endpoint: a reachable Hub answers well within it; a black-holed one fails fast.
PROBE_TIMEOUT_S = 5.0
HINTS = {
    "model": "give a local folder or package:NAME/path instead",
    "dataset": "give local files instead (data.train_file, data.test_file)",
}


def hub_references(recipe) -> list[tuple[str, str, str, str | None]]:
    """(recipe key, Hub id, repo type, revision) for every model, tokenizer and data set the recipe takes from the Hub."""
    refs = []
    model, tokenizer, data = recipe.model, recipe.tokenizer, recipe.data
    if model.name_or_path and not paths.looks_local(model.name_or_path):
        refs.append(("model.name_or_path", model.name_or_path, "model", model.revision))
    name = getattr(tokenizer, "name_or_path", None) if tokenizer is not None else None
    if name and not paths.looks_local(name):
        refs.append(("tokenizer.name_or_path", name, "model", None))
    if data.dataset:
        refs.append(("data.dataset", data.dataset, "dataset", data.dataset_revision))
    for i, source in enumerate(data.sources or []):
        if source.dataset:
            refs.append((f"data.sources[{i}].dataset", source.dataset, "dataset", source.dataset_revision))
    return refs


def is_offline() -> bool:
    return huggingface_hub.constants.is_offline_mode()


def reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One request, no retries: any HTTP answer (even an error status) means the Hub can be reached."""
    url = endpoint or huggingface_hub.constants.ENDPOINT
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, refused, DNS failure, timeout; ValueError: a malformed HF_ENDPOINT
        return False
    return True


def is_cached(repo_id: str, repo_type: str, revision: str | None = None) -> bool:
    if repo_type == "model":
        # config.json for a model, tokenizer_config.json for a tokenizer-only repository.
        return any(
            isinstance(try_to_load_from_cache(repo_id, f, revision=revision), str) for f in ("config.json", "tokenizer_config.json")
        )
    # datasets keeps a Hub data set either as the repository's files or as its own prepared Arrow copy.
    hub = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}"
    prepared = Path(datasets.config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")
    return (hub / "snapshots").is_dir() or prepared.is_dir()


def go_offline() -> None:
    """What HF_HUB_OFFLINE=1 does, for this process: huggingface_hub (and transformers through it) and datasets read the cache only."""
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True


def check_hub(recipe, endpoint: str | None = None) -> None:
    """Fail in one line, before anything is written, when the recipe needs the Hub and neither it nor a cached copy is there."""
    refs = hub_references(recipe)
    if not refs:
        return
    offline = is_offline()
    if not offline and reachable(endpoint):
        return
    missing = [(key, repo, kind) for key, repo, kind, revision in refs if not is_cached(repo, kind, revision)]
    where = "HF_HUB_OFFLINE is set" if offline else f"the Hub ({endpoint or huggingface_hub.constants.ENDPOINT}) cannot be reached"
    if missing:
        raise RecipeError([
            f"{key}: {kind} {repo!r} is not cached and {where}; to run offline, cache it once and set HF_HUB_OFFLINE=1, "
            f"or {HINTS[kind]} (make run needs no network)"
            for key, repo, kind in missing
        ])
    if not offline:
        go_offline()
        print(f"hub: {where}; using the cached {', '.join(repo for _, repo, _, _ in refs)} (offline mode)")


def fit_hub_model(recipe) -> None:
    """The recipe's lengths against a Hub model's positions (config.json only), before anything is written;
    a local model was checked with the recipe."""
    from transformers import AutoConfig

    model = recipe.model
    if model.init != "pretrained" or not model.name_or_path or paths.looks_local(model.name_or_path):
        return
    try:
        config = AutoConfig.from_pretrained(model.name_or_path, revision=model.revision, trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError) as e:
        raise RecipeError(f"model.name_or_path: cannot read the config of {model.name_or_path!r}: {str(e).splitlines()[0]}") from None
    problems = fit_model(model, recipe.data, config)
    if problems:
        raise RecipeError(problems)
