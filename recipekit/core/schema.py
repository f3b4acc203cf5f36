"""Map plain YAML mappings onto dataclasses, strictly.

One mechanism serves our own sections and `transformers.TrainingArguments`: every key must be a field,
every value must fit the field's type hint, and every problem is collected with its full key path so a
recipe with three mistakes reports three lines at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
import types
import typing
from typing import Any

import yaml

_MISSING = object()
# Integers beyond int64 overflow in torch and numpy (a step count, a seed) long after validation.
MAX_INT = 2**63 - 1
# PyYAML follows YAML 1.1, which reads `1e-5` (no dot) as a string; a float field accepts such text.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class Problem(Exception):
    """A value that does not fit its field; the message names what was expected."""


def spelling(word) -> str:
    """A word as synonym tables list it: `Multi-Label`, `multi label` and `multi_label` are one spelling."""
    return re.sub(r"[\s-]+", "_", str(word).strip().lower())


def did_you_mean(word: str, choices, synonyms: dict | None = None) -> str:
    """The choice the user meant: by meaning first (a synonym table: `epochs` is `num_train_epochs`, `classification`
    is `sequence_classification`), else by spelling. A synonym may name a key of another section (`training.x`)."""
    meant = (synonyms or {}).get(spelling(word))
    if meant is not None and meant != word:
        return f"; did you mean '{meant}'?"
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def not_one_of(value, choices, what: str = "valid", synonyms: dict | None = None) -> str:
    hint = did_you_mean(value, choices, synonyms)
    return f"{show(value)} is not {what}{hint or '.'} Choices: {', '.join(map(str, choices))}"


# A value shown in a message is cut to this many characters (a pasted file, an expanded YAML alias).
SHOWN_CHARS = 300


def show(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"


def describe(tp) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(e.value) for e in tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in typing.get_args(tp)))
    if origin is typing.Literal:
        return "one of " + ", ".join(show(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {describe(inner)}" if inner is not Any else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(value, tp):
    """Return `value` converted to fit `tp`, or raise Problem."""
    if tp is Any:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        # Said here, not as "expected a number or null": .nan is a number, just not a usable one.
        raise Problem(f"expected a finite number, got {show(value)}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise Problem(f"expected {describe(tp)}, got null")
        # An Enum|str field accepts only the Enum's values: a free string would fail later, less clearly.
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, enum.Enum) and isinstance(value, (str, bool)):
                return coerce(value, arg)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except Problem:
                continue
        raise Problem(f"expected {describe(tp)}, got {show(value)}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise Problem(f"expected {describe(tp)}, got {show(value)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [e.value for e in tp]
        if value is False and "no" in values:
            return "no"  # YAML 1.1 reads a bare `no` (eval_strategy: no) as false
        if value in values:
            return value
        raise Problem(not_one_of(value, values))
    if origin is list or tp is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            # One item where a list goes (`text_columns: review_body`) is a list of that one item.
            value = [value]
        if not isinstance(value, list):
            raise Problem(f"expected {describe(tp)}, got {show(value)}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(coerce(item, inner))
            except Problem as p:
                raise Problem(f"item {i}: {p}") from None
        return out
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
        raise Problem(f"expected a mapping, got {show(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise Problem(f"{show(value)} is out of range (at most {MAX_INT:,} in size)")
            return value
    elif tp is float:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric or (isinstance(value, str) and _FLOAT_TEXT.match(value.strip())):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            # .nan, .inf and 1.0e+400 (read as inf) pass every comparison check and then crash, or train nothing.
            if not math.isfinite(number):
                raise Problem(f"expected a finite number, got {show(value)}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type):
        # Types YAML cannot produce (config objects): the target class checks them itself.
        return value
    else:
        return value
    raise Problem(f"expected {describe(tp)}, got {show(value)}")


def build_kwargs(cls, raw, path: str, errors: list[str], list_valid_keys: bool = True, synonyms: dict | None = None) -> dict:
    """Check `raw` against dataclass `cls`; return the coerced keyword arguments that were given. `synonyms`
    (spelling -> key) names the key an unknown one most likely meant; a field's metadata `synonyms` does the
    same for its choices."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{path}: expected a mapping of keys to values, got {show(raw)}")
        return {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out = {}
    for key, value in raw.items():
        if key not in fields:
            hint = did_you_mean(key, fields, synonyms)
            valid = f" Valid keys: {', '.join(fields)}" if list_valid_keys else ""
            errors.append(f"{path}.{key}: unknown key{hint or '.'}{valid}")
            continue
        try:
            out[key] = coerce(value, hints[key])
        except Problem as p:
            errors.append(f"{path}.{key}: {p}")
            continue
        choices = fields[key].metadata.get("choices")
        if choices is not None:
            choices = choices() if callable(choices) else choices
            meanings = fields[key].metadata.get("synonyms")
            meanings = meanings() if callable(meanings) else meanings
            items = out[key] if isinstance(out[key], list) else [out[key]]
            for item in items:
                if item is not None and item not in choices:
                    what = fields[key].metadata.get("what", "valid")
                    errors.append(f"{path}.{key}: {not_one_of(item, choices, what, synonyms=meanings)}")
    return out


def help_table(cls) -> list[tuple[str, str, str]]:
    """(key, default, help) for every field: the README's reference tables come from here."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required"
        )
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        rows.append((f.name, shown, f.metadata.get("help", "")))
    return rows
