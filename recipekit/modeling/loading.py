"""Loading a tokenizer (and the errors of loading a model or tokenizer) as recipe errors."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from transformers import AutoTokenizer

from ..core import paths
from ..core.errors import RecipeError


def load_tokenizer(model_args, tokenizer_args=None):
    """The tokenizer named by `tokenizer.name_or_path`, else the model's; None when `tokenizer.train` will make one."""
    if tokenizer_args is not None and tokenizer_args.train is not None:
        return None
    if model_args.trust_remote_code:
        print(f"warning: model.trust_remote_code is true: code shipped with {model_args.name_or_path!r} will run here", file=sys.stderr)
    if tokenizer_args is not None and tokenizer_args.name_or_path:
        with model_load_errors(tokenizer_args.name_or_path, "tokenizer.name_or_path"):
            return AutoTokenizer.from_pretrained(resolve_path(tokenizer_args.name_or_path), trust_remote_code=model_args.trust_remote_code)
    with model_load_errors(model_args):
        return AutoTokenizer.from_pretrained(
            model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code
        )


def resolve_path(spec: str) -> str:
    return str(Path(paths.resolve(spec)).expanduser()) if paths.looks_local(spec) else spec


@contextmanager
def model_load_errors(model_args, key: str = "model.name_or_path"):
    """A model or tokenizer that cannot be loaded (no network, a typo in a Hub id) is a recipe error."""
    name = model_args if isinstance(model_args, str) else model_args.name_or_path
    try:
        yield
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f"{key}: cannot load {name!r}: {first}") from None
