"""Modules imported at first use. scikit-learn and matplotlib cost about 0.7 s of every command's start on
2 cores, and `--check`, `--data-only` and most of a run's life use neither."""

from __future__ import annotations

import importlib


class Deferred:
    """Stands for a module; the first attribute read imports it (Python caches it from then on)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


skm = Deferred("sklearn.metrics")
