"""Task heads, chosen by `model.head`. The contract is `Head` in base.py; one module per family:
classification (softmax, binary), multi_label, regression, tagging (token_classification), generation
(seq2seq, causal_lm_sft), language_model (masked_lm, causal_lm), and custom pooled heads (custom.py).
"""

from __future__ import annotations

# Each family registers its heads on import, in the order the README's table lists them.
# isort: off
from . import classification  # noqa: F401
from . import multi_label  # noqa: F401
from . import generation  # noqa: F401
from . import language_model  # noqa: F401
from . import regression  # noqa: F401
from . import tagging  # noqa: F401
from . import fewshot  # noqa: F401
# isort: on
from .base import DEFAULT_HEAD, HEADS, Head, Prediction, State, head_synonyms, register, saved_state

__all__ = ["DEFAULT_HEAD", "HEADS", "Head", "Prediction", "State", "build_head", "head_synonyms", "register", "saved_state"]


def build_head(name: str, options: dict | None = None, head_config: dict | None = None, data=None,
               state: State | None = None) -> Head:
    """The head `name` for a recipe's `data:` section, or for a finished run's `state`."""
    return HEADS[name](options, head_config, data, state)


def head_for(recipe) -> Head:
    """The head a recipe asks for."""
    return build_head(recipe.model.head, recipe.model.head_options, recipe.model.head_config, recipe.data)
