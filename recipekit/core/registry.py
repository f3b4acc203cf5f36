"""Short names for classes (`head: binary`, `preprocess: [dedupe]`): one table per kind, filled by a decorator."""

from __future__ import annotations


def registrar(table: dict[str, type], kind: str):
    """`register = registrar(TABLE, "head")`, then `@register("name")` on a class: sets `cls.name` and adds it to TABLE.

    A second class under a taken name is refused: the later one would silently replace the first in every recipe.
    """

    def register(name: str):
        def add(cls):
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered ({table[name].__module__}.{table[name].__qualname__})")
            cls.name = name
            table[name] = cls
            return cls

        return add

    return register
