"""The head contract is whole: a head defined here, touching nothing in the package, goes through every command
(train, predict, evaluate, report and card, ONNX export, serve); and no code outside recipekit/heads/ names a head."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch.nn.functional as F
import yaml
from conftest import ROOT, run_cli
from test_serve import call, close, predict_file, serving

from recipekit.evaluation import metrics as M
from recipekit.heads import HEADS, register
from recipekit.heads.base import reduce
from recipekit.heads.classification import ClassLabels

NAME = "tempered_softmax"  # registered for this module only
# Strings that equal a head's name but mean something else: scikit-learn's average="binary".
NOT_HEADS = {("recipekit/evaluation/metrics.py", "binary")}


class Tempered(ClassLabels):
    """Softmax over the labels, read at a temperature the run sets after training (a state field of its own)."""

    @dataclass
    class State(ClassLabels.State):
        temperature: float | None = None

    def loss(self, training_args):
        def compute(outputs, labels, num_items_in_batch=None):
            return reduce(F.cross_entropy(outputs["logits"], labels, reduction="none"), num_items_in_batch)

        return compute

    def after_training(self, trainer, tokenized):
        self.state.temperature = 2.0
        self.record(trainer.model)
        return {"temperature": self.state.temperature}

    def predictions_of(self, logits):
        return M.softmax(np.asarray(logits, dtype=np.float64) / (self.state.temperature or 1.0))

    def decision_rule(self):
        return f"the most probable label, probabilities at temperature {self.state.temperature}"


@pytest.fixture(scope="module")
def fake_head():
    register(NAME)(Tempered)
    yield Tempered
    HEADS.pop(NAME)


def rows(n: int, seed: int) -> pd.DataFrame:
    words = {"low": "dull flat grey", "mid": "fine plain okay", "high": "great bright superb"}
    rng = np.random.default_rng(seed)
    labels = [list(words)[i % 3] for i in range(n)]
    return pd.DataFrame({"text": [f"{words[y]} {rng.integers(100)}" for y in labels], "label": labels})


@pytest.fixture(scope="module")
def fake_run(fake_head, tiny_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake-head")
    files = {}
    for split, n, seed in (("train", 30, 1), ("validation", 12, 2), ("test", 9, 3)):
        rows(n, seed).to_csv(folder / f"{split}.csv", index=False)
        files[f"{split}_file"] = str(folder / f"{split}.csv")
    recipe = {
        "model": {"name_or_path": tiny_model, "head": NAME},
        "data": {**files, "max_length": 16},
        "training": {"output_dir": str(folder / "run"), "max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 1.0e-3,
                     "save_strategy": "no", "report_to": "none", "seed": 0, "disable_tqdm": True},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert run_cli([folder / "recipe.yaml"]) == 0
    return folder / "run"


def test_a_head_defined_outside_the_package_trains_and_keeps_its_state(fake_run):
    state = json.loads((fake_run / "head_state.json").read_text())
    assert state["head"] == NAME and state["temperature"] == 2.0 and state["labels"] == ["high", "low", "mid"]
    assert json.loads((fake_run / "config.json").read_text())["recipekit"] == state
    for name in ("report.md", "README.md"):
        assert NAME in (fake_run / name).read_text(), name
    assert "at temperature 2.0" in (fake_run / "README.md").read_text()


def test_it_predicts_evaluates_exports_and_serves(fake_run, tmp_path):
    test = str(fake_run.parent / "test.csv")
    want = predict_file(fake_run, test, tmp_path)
    written = pd.read_csv(fake_run / "predictions.csv")
    assert [w["predicted"] for w in want] == list(written["predicted"])
    assert run_cli(["evaluate", fake_run, "--input", test, "--metrics", tmp_path / "evaluation.json"]) == 0
    scores = json.loads((tmp_path / "evaluation.json").read_text())["metrics"]
    assert scores["accuracy"] == pytest.approx(json.loads((fake_run / "metrics.json").read_text())["test"]["accuracy"])
    out = tmp_path / "onnx"
    assert run_cli(["export", fake_run, "--format", "onnx", "--output", out]) == 0
    close(predict_file(out, test, tmp_path), want, 1e-4)
    with serving(out) as port:
        status, body = call(port, "POST", "/predict", {"texts": list(pd.read_csv(test)["text"])})
    assert status == 200
    close(body["predictions"], want, 1e-4)


def test_no_head_is_named_outside_the_heads_package():
    names = set(HEADS) - {NAME}
    found = []
    for path in sorted((ROOT / "recipekit").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where.startswith("recipekit/heads/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names and (where, node.value) not in NOT_HEADS:
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    assert not found, "a head's name outside recipekit/heads/ (declare what the caller needs on the Head contract):\n" + "\n".join(found)
