"""Preprocessing steps: each one a small dataclass in one registry (STEPS), run in the order the recipe lists.

Each module registers its steps when imported, and the README's step table lists STEPS in that order:
texts rewritten, rows dropped one by one, rows compared with each other, train's mix changed. Keep these
imports in this order (not sorted).
"""

from . import cleaning  # noqa: F401, I001
from . import filters  # noqa: F401
from . import duplicates  # noqa: F401
from . import resampling  # noqa: F401
from .base import STEPS, STREAM_BATCH, Context, Step, flat, register, run_pipeline, select

__all__ = ["STEPS", "STREAM_BATCH", "Context", "Step", "flat", "register", "run_pipeline", "select"]
