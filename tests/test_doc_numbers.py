"""Every figure the docs and recipe headers quote equals its source: a file under bench/results/ that a
benchmark wrote (bench/record.py), or, for a test count, the test file itself.

A quoted figure carries a marker right after it: `<!-- result: NAME.json#KEY -->` in Markdown,
`[result: NAME.json#KEY]` in a recipe's header comment, `<!-- count: tests/FILE.py -->` for a test count.
A numeric value matches the last number before the marker rounded to that number's decimals; a text value
(such as "15 min 11 s") must be the text right before the marker.
"""
import ast
import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
MARKER = re.compile(r"(?:<!--\s*result:\s*([\w.\-]+)#([\w.\-]+)\s*-->|\[result:\s*([\w.\-]+)#([\w.\-]+)\])")
COUNT = re.compile(r"<!--\s*count:\s*(tests/[\w.]+)\s*-->")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# A recipe header line that states a time or a result: it needs a marker, or says it is an estimate.
CLAIM = re.compile(r"\d.*\b(minutes?|min|hours?|seconds|accuracy|ROC-AUC|F1|perplexity|tokens/s)\b|"
                   r"\b(minutes?|accuracy|ROC-AUC|F1|perplexity)\b.*\d", re.IGNORECASE)
# The figures issue 26 found untrue: each of these lines must quote its source (file, text on the line).
LISTED = [
    ("docs/distillation.md", "training sentences (drawn once"),
    ("docs/distillation.md", "| teacher: MiniLM, 6 layers |"),
    ("docs/distillation.md", "| student alone: first 2 layers |"),
    ("docs/distillation.md", "| student distilled, `teacher_weight: 0.5` |"),
    ("docs/heads.md", "| IMDb 800/400 | binary"),
    ("docs/heads.md", "| GoEmotions 6000/2000 | multi_label (tuned"),
    ("docs/pretraining.md", "packing trains"),
    ("docs/pretraining.md", "MLM speed, small BERT"),
    ("docs/pretraining.md", "MLM speed, same model, one padded"),
    ("docs/pretraining.md", "**Speed.** Packing gives"),
    ("docs/choosing.md", "| 1e-04 |"),
    ("docs/choosing.md", "| 3e-04 |"),
    ("docs/choosing.md", "| MiniLM-L6 (pretrained) |"),
    ("docs/choosing.md", "| tiny BERT, 2 layers"),
    ("docs/evaluation.md", "`tests/test_metrics.py` ("),
    ("README.md", "offline on the CPU: the recipe schema"),
    ("README.md", "quiet CPU cores it took"),
    ("README.md", "skips the real-model and multi-process tests"),
    ("README.md", "The 15 slowest tests of the run quoted above"),
]


def results() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}


def quoted(path: Path) -> list[tuple[int, str, str, str]]:
    """(line number, text before the marker since the previous one, file, key) for each result marker."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        start = 0
        for m in MARKER.finditer(line):
            out.append((number, line[start:m.start()], m.group(1) or m.group(3), m.group(2) or m.group(4)))
            start = m.end()
    return out


def header(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def matches(before: str, value) -> str | None:
    """None when the text before a marker ends with the value; else what it says instead."""
    if isinstance(value, str):
        return None if before.rstrip(" ~(:").endswith(value) else repr(before.strip()[-40:])
    numbers = NUMBER.findall(before)
    if not numbers:
        return "no number before the marker"
    text = numbers[-1]
    decimals = len(text.split(".")[1]) if "." in text else 0
    doc = float(text.replace(",", ""))
    if math.isclose(doc, round(float(value), decimals), abs_tol=10 ** -(decimals + 3)):
        return None
    return text


def count_tests(path: Path) -> int:
    """Test functions in a file, each times the product of its literal parametrize lists."""
    total = 0
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            cases = 1
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and ast.unparse(deco.func).endswith("parametrize"):
                    cases *= len(ast.literal_eval(deco.args[1]))
            total += cases
    return total


def test_every_results_file_says_when_where_and_how_it_was_measured():
    files = results()
    assert files, "bench/results/ is empty"
    for name, body in files.items():
        assert body["name"] + ".json" == name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["date"]), name
        assert body["machine"] and body["command"] and body["values"], name


@pytest.mark.parametrize("path", DOCS + RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_figure_equals_its_results_file(path):
    files = results()
    wrong = []
    for number, before, name, key in quoted(path):
        if name not in files:
            wrong.append(f"line {number}: bench/results/{name} does not exist")
        elif key == "date":
            if not before.rstrip(" (").endswith(files[name]["date"]):
                wrong.append(f"line {number}: {name} is dated {files[name]['date']}, the doc says {before.strip()[-12:]!r}")
        elif key not in files[name]["values"]:
            wrong.append(f"line {number}: {name} has no {key!r} (keys: {', '.join(files[name]['values'])})")
        elif key != "durations":
            found = matches(before, files[name]["values"][key])
            if found:
                wrong.append(f"line {number}: {name}#{key} is {files[name]['values'][key]!r}, the doc says {found}")
    assert not wrong, f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


def test_every_quoted_test_count_is_the_files_count():
    seen = 0
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for m in COUNT.finditer(line):
                seen += 1
                said = NUMBER.findall(line[:m.start()])[-1]
                assert int(said) == count_tests(ROOT / m.group(1)), f"{path.name}:{number}: {m.group(1)} has " \
                    f"{count_tests(ROOT / m.group(1))} tests, the doc says {said}"
    assert seen


def test_the_readme_durations_table_is_suite_json_s():
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "suite.json#durations" in line)
    rows = []
    for line in lines[start + 1:]:
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            if rows:
                break
            continue
        if cells[0].isdigit():
            rows.append([int(cells[0]), cells[1], cells[2]])
    assert rows == json.loads((RESULTS / "suite.json").read_text())["values"]["durations"]


def test_every_results_file_is_quoted_somewhere():
    used = {name for path in DOCS + RECIPES for _, _, name, _ in quoted(path)}
    unused = sorted(set(results()) - used)
    assert not unused, f"bench/results/ files nothing quotes: {unused}"


def test_the_listed_figures_quote_their_source():
    missing = []
    for name, anchor in LISTED:
        lines = [line for line in (ROOT / name).read_text().splitlines() if anchor in line]
        if len(lines) != 1:
            missing.append(f"{name}: {len(lines)} lines hold {anchor!r} (one expected)")
        elif not (MARKER.search(lines[0]) or COUNT.search(lines[0])):
            missing.append(f"{name}: {lines[0].strip()[:80]!r} quotes no source")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_recipe_header_states_times_and_results_with_their_source_or_as_estimates(path):
    bare = [line for line in header(path) if CLAIM.search(line.lstrip("# ")) and "run.py" not in line
            and not MARKER.search(line) and "estimate" not in line and "et al" not in line]
    assert not bare, f"{path.relative_to(ROOT)}: a figure with no [result: ...] marker and not called an estimate:\n" \
        + "\n".join(bare)


def test_the_mlm_scratch_header_s_token_count_is_its_recipe_s_arithmetic():
    import yaml

    path = ROOT / "recipes" / "pretrain" / "bert_mlm_scratch.yaml"
    recipe = yaml.safe_load(path.read_text())
    steps, batch = recipe["training"]["max_steps"], recipe["training"]["per_device_train_batch_size"]
    block = recipe["model"]["head_options"]["block_size"]
    text = " ".join(header(path))
    assert f"{steps:,} steps x {batch} x {block} = {steps * batch * block / 1e6:.1f}M tokens" in text


def test_record_writes_the_values_with_date_machine_and_command(tmp_path, monkeypatch):
    import sys

    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.setattr(sys, "argv", ["bench/bench_x.py", "--fast"])
    from record import record

    body = json.loads(record("x", {"accuracy": np.float64(0.75), "steps": np.int64(126)}, folder=tmp_path).read_text())
    assert body["values"] == {"accuracy": 0.75, "steps": 126} and isinstance(body["values"]["steps"], int)
    assert body["command"] == "python bench/bench_x.py --fast" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["date"])
    assert "cores" in body["machine"] and "transcribed" not in body
