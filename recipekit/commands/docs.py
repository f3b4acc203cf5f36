"""The README's reference tables, from the dataclasses themselves: python -m recipekit.commands.docs [--write]

The README embeds this output and a test compares the two, so a key's default and help live in one place.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.schema import help_table
from ..data.steps import STEPS
from ..heads import HEADS
from ..recipe.data import DataArgs
from ..recipe.model import ModelArgs
from ..recipe.sections import BatchingArgs, RegularizationArgs, ReportArgs, SanityArgs
from ..recipe.sweep import SpaceArgs, SweepArgs


def key_table(cls, section: str) -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, text in help_table(cls):
        lines.append(f"| `{section}.{key}` | `{default}` | {text} |")
    return "\n".join(lines)


def step_table() -> str:
    lines = ["| step | options | what it does |", "| --- | --- | --- |"]
    for name, cls in STEPS.items():
        options = ", ".join(f"`{k}` ({d})" for k, d, _ in help_table(cls)) or "none"
        lines.append(f"| `{name}` | {options} | {(cls.__doc__ or '').strip().splitlines()[0]} |")
    return "\n".join(lines)


def head_table() -> str:
    lines = ["| head | `model.head_options` | what it trains | teacher term (`model.teacher`, temperature T) |", "| --- | --- | --- | --- |"]
    for name, head in HEADS.items():
        options = ", ".join(f"`{k}` ({d})" for k, d, _ in help_table(head.Options)) if dataclasses.is_dataclass(head.Options) else ""
        lines.append(f"| `{name}` | {options or 'none'} | {(head.__doc__ or '').strip().splitlines()[0]} | {head.distillation or 'takes no teacher'} |")
    return "\n".join(lines)


def reference() -> str:
    return "\n\n".join([
        key_table(ModelArgs, "model"), key_table(DataArgs, "data"), step_table(), head_table(),
        key_table(RegularizationArgs, "regularization"), key_table(BatchingArgs, "batching"), key_table(SanityArgs, "sanity"), key_table(ReportArgs, "report"),
        key_table(SweepArgs, "sweep"), key_table(SpaceArgs, "sweep.space.KEY"),
    ])


START, END = "<!-- reference:start (python -m recipekit.commands.docs) -->\n", "<!-- reference:end -->"


def update_readme(path: str = "README.md") -> None:
    """python -m recipekit.commands.docs --write: replace the README's reference block with a fresh one."""
    text = Path(path).read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + START + reference() + "\n" + END + tail)


if __name__ == "__main__":
    import sys

    update_readme() if "--write" in sys.argv else print(reference())
