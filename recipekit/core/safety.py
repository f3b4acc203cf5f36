"""Reading untrusted text safely and recording what ran without leaking what must stay secret.

Recipes, overrides and the files a run leaves (recipe.yaml, metrics.json) are all read through here:
YAML without Python tags, without duplicate keys (PyYAML silently keeps the last), and without alias
"bombs" (a few lines whose aliases expand to billions of values); JSON with one-line errors. Anything
that records a command line or an environment goes through `redact`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from .errors import RecipeError
from .schema import SHOWN_CHARS

# Values a YAML document may expand to through its aliases; real recipes hold a few hundred.
MAX_YAML_VALUES = 100_000
SECRET_NAME = re.compile(r"token|password|passwd|secret|key|credential|auth", re.IGNORECASE)
# Hub, GitHub, OpenAI and AWS token shapes, caught wherever they appear (e.g. a bare positional value).
SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16})\b")
REDACTED = "<redacted>"


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters in all)"


def redact_text(text: str) -> str:
    return SECRET_VALUE.sub(REDACTED, text)


def redact(argv) -> list[str]:
    """A command line with the value of every secret-looking key replaced: `training.hub_token=...`,
    `--hub_token ...`, `--hub-token=...`, and any token-shaped word."""
    out, hide_next = [], False
    for arg in map(str, argv):
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        key, sep, _ = arg.partition("=")
        if sep and SECRET_NAME.search(key):
            out.append(f"{key}={REDACTED}")
            continue
        if arg.startswith("-") and not sep and SECRET_NAME.search(arg):
            hide_next = True
        out.append(redact_text(arg))
    return out


def redact_env(env: dict) -> dict:
    return {k: (REDACTED if SECRET_NAME.search(k) else redact_text(v)) for k, v in env.items()}


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, naming both lines."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = key_node.value
                    line = key_node.start_mark.line + 1
                    if key in seen:
                        raise DuplicateKey(f"key {clip(key, 80)!r} is given twice (lines {seen[key]} and {line}); keep one")
                    seen[key] = line
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(yaml.YAMLError):
    pass


class TooLarge(yaml.YAMLError):
    pass


def expanded_size(node, memo: dict) -> int:
    """Values the node stands for once every alias is expanded; shared nodes are counted once per use."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            return 1  # a recursive alias: SafeLoader builds it as a cycle, not an expansion
        return memo[key]
    memo[key] = None
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def parse_yaml(text: str):
    """YAML text to Python values, safely; raises yaml.YAMLError (DuplicateKey, TooLarge) with a mark where known."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node, {}) > MAX_YAML_VALUES:
            raise TooLarge(f"its aliases expand to more than {MAX_YAML_VALUES:,} values; write the values out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, (DuplicateKey, TooLarge)):
        return str(e)
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = getattr(e, "problem", None) or e
    if "could not determine a constructor" in str(what):
        what = f"{what} (tags such as !!python are not allowed)"
    return f"malformed YAML{where}: {clip(what)}"


def read_yaml_file(path, what: str = "file"):
    """A YAML file as Python values, or one RecipeError line naming the file and the problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read this {what} ({e.strerror or e})") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: {yaml_problem(e)}") from None


def read_json_file(path, what: str = "file"):
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecipeError(f"{path}: this {what} is damaged (not valid JSON: {clip(e)})") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read this {what} ({e.strerror or e})") from None
