"""Bad input fails fast and clearly; nothing finished is lost; same seed, same numbers; no secret is written."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipekit.core.errors import RecipeError
from recipekit.core.files import write_atomic
from recipekit.recipe.build import apply_overrides, build_recipe


@pytest.fixture
def files(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\nfine film,pos\nawful film,neg\n")
    (tmp_path / "one_class.csv").write_text("text,label\ngood film,pos\nnice film,pos\n")
    (tmp_path / "ragged.csv").write_text("text,label\ngood film,pos\nbad,neg,extra,more\n")
    (tmp_path / "val_unseen.csv").write_text("text,label\nok film,meh\n")
    (tmp_path / "wrong.csv").write_bytes(b"PAR1\x00\x01 not a csv at all \xff\xfe")
    (tmp_path / "wrong.parquet").write_text("text,label\nthis is csv text in a parquet file,pos\n")
    (tmp_path / "a_file").write_text("x")
    return tmp_path


def recipe_with(files, tiny_model, **changes):
    recipe = {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(files / "train.csv")},
        "training": {"output_dir": str(files / "out"), "max_steps": 2, "report_to": "none"},
    }
    for path, value in changes.items():
        section, key = path.split("__")
        recipe.setdefault(section, {})[key] = value
    return recipe


# (case, recipe changes or raw text, overrides, expected message fragment)
BAD = [
    ("unknown model key", {"model__nme": 1}, [], "model.nme: unknown key"),
    ("unknown data key", {"data__text_column": "t"}, [], "data.text_column: unknown key; did you mean 'text_columns'?"),
    ("unknown training key", {"training__epochs": 1}, [], "training.epochs: unknown key"),
    ("unknown step option", {"preprocess__": None}, [], None),
    ("wrong type", {"data__max_length": "long"}, [], "data.max_length: expected an integer, got 'long'"),
    ("zero batch size", {"training__per_device_train_batch_size": 0}, [], "training.per_device_train_batch_size: 0 must be a positive integer"),
    ("negative batch size", {"training__per_device_eval_batch_size": -8}, [], "training.per_device_eval_batch_size: -8 must be a positive integer"),
    ("zero learning rate", {"training__learning_rate": 0}, [], "training.learning_rate: 0.0 must be positive"),
    ("missing data file", {"data__train_file": "NOPE/train.csv"}, [], "data.train_file: 'NOPE/train.csv' does not exist"),
    ("directory as file", {"data__train_file": "DIR"}, [], "is a directory, not a file"),
    ("wrong format", {"data__train_file": "wrong.parquet"}, [], "wrong.parquet: cannot read as parquet"),
    ("ragged csv", {"data__train_file": "ragged.csv"}, [], "ragged.csv: cannot read as csv"),
    ("missing text column", {"data__text_columns": ["review"]}, [], "data.text_columns: column 'review' is not in the train split; columns: text, label"),
    ("missing label column", {"data__label_column": "stars"}, [], "data.label_column: column 'stars' is not in the train split; columns: text, label"),
    ("one class", {"data__train_file": "one_class.csv"}, [], "the training split has a single class ('pos')"),
    ("unseen validation label", {"data__validation_file": "val_unseen.csv"}, [], "val_unseen.csv line 2: column 'label': label not seen in training: 'meh'"),
    ("empty split after preprocessing", {"preprocess__": [{"regex_replace": {"pattern": ".+"}}, "drop_empty"]}, [], "removed every row of split 'train'"),
    ("output_dir is a file", {"training__output_dir": "a_file"}, [], "is a file, not a folder"),
    ("override without =", {}, ["training.max_steps"], "override 'training.max_steps': expected section.key=value"),
    ("override of unknown key", {}, ["training.max_step=3"], "training.max_step: unknown key; did you mean 'max_steps'?"),
]


@pytest.mark.parametrize("case, changes, overrides, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_line_exit_2_and_nothing_written(case, changes, overrides, expected, files, tiny_model, write_recipe, capsys):
    if case == "unknown step option":
        changes, expected = {"preprocess__": [{"dedupe": {"ignore_cse": True}}]}, "preprocess[0].dedupe.ignore_cse: unknown key; did you mean 'ignore_case'?"
    recipe = recipe_with(files, tiny_model)
    for path, value in changes.items():
        section, key = path.split("__")
        if section == "preprocess":
            recipe["preprocess"] = value
            continue
        if isinstance(value, str) and key.endswith("_file") and not value.startswith("NOPE"):
            value = str(files / value) if value != "DIR" else str(files)
        if key == "output_dir":
            value = str(files / value)
        recipe[section][key] = value
    path = write_recipe(recipe)
    before = sorted(p.name for p in files.iterdir())
    assert run_cli([path, *overrides]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert any(expected in line for line in errors), err
    assert "Traceback" not in err and "ERROR" not in err
    assert sorted(p.name for p in files.iterdir()) == before  # no output_dir, nothing else written


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model: {name_or_path: x\n", "malformed YAML at line 2, column 1"),
        ("", "the recipe is empty"),
        ("- model\n- data\n", "the top level must be a mapping of sections"),
        ("modle: {}\n", "modle: 'modle' is not a recipe section; did you mean 'model'?"),
    ],
)
def test_bad_recipe_files(text, expected, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert run_cli([path]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_unwritable_output_dir_is_refused_before_anything_runs(files, tiny_model, write_recipe, capsys):
    if os.geteuid() == 0:
        target = Path("/proc/recipekit-test/run")  # root may write anywhere but here: /proc takes no new entries
    else:
        (files / "locked").mkdir()
        (files / "locked").chmod(0o555)
        target = files / "locked" / "run"
    assert run_cli([write_recipe(recipe_with(files, tiny_model, training__output_dir=str(target)))]) == 2
    err = capsys.readouterr().err
    assert f"error: training.output_dir: '{target}' is not writable" in err
    assert not target.exists()


KEYS = st.sampled_from(["model", "data", "training", "preprocess", "metrics", "name_or_path", "head", "train_file",
                        "max_length", "learning_rate", "text_columns", "eval_strategy", "seed", "dedupe", "x"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=8) | st.sampled_from(["epoch", "no", "1e-5", "dedupe"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.dictionaries(KEYS, VALUES, max_size=5), overrides=st.lists(st.text(max_size=20), max_size=3))
def test_loader_returns_a_recipe_or_raises_recipe_error_never_anything_else(raw, overrides):
    try:
        apply_overrides(raw, overrides)
        recipe = build_recipe(raw)
    except RecipeError as e:
        assert e.problems and all(isinstance(p, str) and p and "\n" not in p for p in e.problems)
    else:
        assert recipe.model.name_or_path


def test_write_atomic_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_atomic(target, '{"ok": 1}')

    class Boom(Exception):
        pass

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(Boom()))
    with pytest.raises(Boom):
        write_atomic(target, '{"half": ')
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_text() == '{"ok": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


@pytest.fixture
def toy_recipe(tiny_model, tmp_path):
    rows = ["text,label"] + [f"{['awful', 'superb'][i % 2]} film {'so ' * (i % 3)}{i},{i % 2}" for i in range(64)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    return {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(tmp_path / "train.csv"), "test_file": str(tmp_path / "train.csv"), "max_length": 16},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 12, "per_device_train_batch_size": 8,
                     "learning_rate": 3.0e-3, "save_strategy": "no", "logging_steps": 4, "report_to": "none", "seed": 5},
    }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # two whole runs
def test_same_seed_same_machine_gives_identical_metrics_and_weights(toy_recipe, write_recipe, tmp_path):
    runs = []
    for name in ("a", "b"):
        toy_recipe["training"]["output_dir"] = str(tmp_path / name)
        assert run_cli([write_recipe(toy_recipe, f"{name}.yaml")]) == 0
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        runs.append((metrics, sha(tmp_path / name / "model.safetensors")))
    (m1, w1), (m2, w2) = runs
    assert w1 == w2
    timing = ("runtime", "_per_second", "wall_time_s")
    strip = lambda d: {k: v for k, v in d.items() if not k.endswith(timing)}
    assert strip(m1["train"]) == strip(m2["train"]) and strip(m1["test"]) == strip(m2["test"])
    assert m1["manifest"]["dataset_fingerprints"] == m2["manifest"]["dataset_fingerprints"]
    assert m1["manifest"]["data_files"] == {toy_recipe["data"]["train_file"]: sha(Path(toy_recipe["data"]["train_file"]))}
    assert m1["manifest"]["seed"] == 5 and m1["manifest"]["git"]["commit"]


@pytest.mark.slow  # a run, export and cv with a token set
def test_hub_token_never_reaches_any_output_file(toy_recipe, write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_envTOKEN_never_written_123")
    toy_recipe["training"]["hub_token"] = "hf_recipeTOKEN_never_written_456"
    toy_recipe["training"]["save_strategy"] = "steps"
    toy_recipe["training"]["save_steps"] = 6
    assert run_cli([write_recipe(toy_recipe)]) == 0
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in written)
    for p in written:
        data = p.read_bytes()
        assert b"envTOKEN" not in data and b"recipeTOKEN" not in data, p


@pytest.mark.slow  # a run.py process signalled mid-run, then resumed
def test_sigterm_saves_a_checkpoint_and_resume_finishes(toy_recipe, write_recipe, tmp_path):
    toy_recipe["training"].update(max_steps=2000, logging_steps=1)
    path = write_recipe(toy_recipe)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        state = out / "status.json"
        if state.exists() and json.loads(state.read_text())["status"] == "running" and (out / "data_report.json").exists():
            time.sleep(3)  # into the training loop
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "interrupted" and 0 < status["step"] < 2000
    assert (out / f"checkpoint-{status['step']}").is_dir()
    assert not (out / "metrics.json").exists()
    assert "continue with --resume" in err and "Traceback" not in err

    assert run_cli([path, f"training.max_steps={status['step'] + 4}", "--resume"]) == 0
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == status["step"] + 4


def test_trust_remote_code_warns(tiny_model, capsys):
    from recipekit.modeling.loading import load_tokenizer
    from recipekit.recipe.model import ModelArgs

    load_tokenizer(ModelArgs(name_or_path=tiny_model, trust_remote_code=True))
    assert "warning: model.trust_remote_code is true" in capsys.readouterr().err
    load_tokenizer(ModelArgs(name_or_path=tiny_model))
    assert "trust_remote_code" not in capsys.readouterr().err


def test_no_eval_exec_or_unsafe_loading_in_the_code():
    for path in [*(ROOT / "recipekit").rglob("*.py"), ROOT / "run.py"]:
        text = path.read_text()
        assert not re.search(r"(?<![.\w])(eval|exec)\(", text), path
        assert "yaml.load(" not in text and "unsafe_load" not in text and "pickle.load" not in text, path
        assert "torch.load(" not in text or "weights_only=True" in text, path


def test_yaml_python_tags_are_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "r.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    assert run_cli([path]) == 2
    assert "malformed YAML" in capsys.readouterr().err
    assert not marker.exists()
