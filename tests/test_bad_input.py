"""Bad input, round two: what a tired user, a damaged disk and a copy-paste error produce.

Every case exits with status 2 and exactly one `error:` line naming the problem, shows no traceback, and
writes nothing: neither in the test's folder nor in the folder the command runs from. All fail at
validation, before a model loads.
"""

import os
import stat

import pytest
import yaml
from conftest import ROOT, run_cli

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


def base(folder, model) -> dict:
    return {
        "model": {"name_or_path": model},
        "data": {"train_file": str(folder / "train.csv")},
        "training": {"output_dir": str(folder / "out"), "max_steps": 2, "report_to": "none"},
    }


# (case id, {dotted key: value} set in the recipe, extra arguments, expected fragment of the one error line)
RECIPE_CASES = [
    ("nan learning rate", {"training.learning_rate": float("nan")}, [], "training.learning_rate: expected a finite number, got nan"),
    ("inf learning rate", {"training.learning_rate": float("inf")}, [], "training.learning_rate: expected a finite number, got inf"),
    ("-inf learning rate", {"training.learning_rate": float("-inf")}, [], "training.learning_rate: expected a finite number, got -inf"),
    ("huge learning rate", {"training.learning_rate": 1.0e9}, [], "training.learning_rate: 1000000000.0 is out of range"),
    ("epochs 1e400 override", {}, ["training.num_train_epochs=1.0e+400"], "training.num_train_epochs: expected a finite number"),
    ("epochs absurd", {"training.num_train_epochs": 1.0e30}, [], "training.num_train_epochs: 1e+30 is out of range"),
    ("seed 2**32", {"training.seed": 4294967296}, [], "training.seed: 4294967296 is out of range for a seed"),
    ("seed -1", {"training.seed": -1}, [], "training.seed: -1 is out of range for a seed"),
    ("data_seed negative", {"training.data_seed": -5}, [], "training.data_seed: -5 is out of range for a seed"),
    ("max_steps beyond int64", {"training.max_steps": 2**70}, [], "training.max_steps: 1180591620717411303424 is out of range"),
    ("max_steps huge", {"training.max_steps": 2**40}, [], "training.max_steps: 1099511627776 is out of range"),
    ("batch size inf", {}, ["training.per_device_train_batch_size=.inf"], "training.per_device_train_batch_size: expected a finite number, got inf"),
    ("negative weight decay", {"training.weight_decay": -0.1}, [], "training.weight_decay: -0.1 is out of range"),
    ("negative warmup", {"training.warmup_steps": -1}, [], "training.warmup_steps: -1.0 is out of range"),
    ("adam_beta1 of 1", {"training.adam_beta1": 1.0}, [], "training.adam_beta1: 1.0 is out of range"),
    ("adam_beta2 above 1", {"training.adam_beta2": 1.5}, [], "training.adam_beta2: 1.5 is out of range"),
    ("adam_epsilon 0", {"training.adam_epsilon": 0}, [], "training.adam_epsilon: 0.0 is out of range"),
    ("label smoothing 1", {"training.label_smoothing_factor": 1.0}, [], "training.label_smoothing_factor: 1.0 is out of range"),
    ("negative grad norm", {"training.max_grad_norm": -1}, [], "training.max_grad_norm: -1.0 is out of range"),
    ("logging_steps 0", {"training.logging_steps": 0}, [], "training.logging_steps: 0.0 is out of range"),
    ("save_total_limit 0", {"training.save_total_limit": 0}, [], "training.save_total_limit: 0 is out of range"),
    ("negative workers", {"training.dataloader_num_workers": -1}, [], "training.dataloader_num_workers: -1 is out of range"),
    ("nan dropout", {"model.hidden_dropout": float("nan")}, [], "model.hidden_dropout: expected a finite number, got nan"),
    ("nan validation_split", {"data.validation_split": float("nan")}, [], "data.validation_split: expected a finite number, got nan"),
    ("inf early stopping threshold", {"regularization.early_stopping_threshold": float("inf")}, [], "regularization.early_stopping_threshold: expected a finite number"),
    ("nan num_proc", {"data.num_proc": float("nan")}, [], "data.num_proc: expected a finite number, got nan"),
    ("max_length above positions", {"data.max_length": 1024}, [], "data.max_length: 1024 is above the model's 128 positions"),
    ("label column as text column", {"data.text_columns": ["label"]}, [], "data.text_columns: ['label'] includes data.label_column 'label'"),
    ("metric os:system", {"metrics": ["os:system"]}, [], "metrics: 'os:system': 'system' in module 'os' is not a function of (y_true, y_pred, probs)"),
    ("metric math:sqrt", {"metrics": ["math:sqrt"]}, [], "'sqrt' in module 'math' is not a function of (y_true, y_pred, probs)"),
    ("python tag in an override", {}, ["model.name_or_path=!!python/name:os.system"], "tags such as !!python are not allowed"),
    ("duplicate csv columns", {"data.train_file": "dup_columns.csv"}, [], "dup_columns.csv: column 'text' appears more than once in the header (columns 1, 2)"),
    ("duplicate tsv columns", {"data.train_file": "dup_columns.tsv"}, [], "dup_columns.tsv: column 'label' appears more than once in the header (columns 2, 3)"),
    ("named pipe as data file", {"data.train_file": "pipe.csv"}, [], "data.train_file: '{folder}/pipe.csv' is not a regular file (a named pipe)"),
    ("empty output_dir", {"training.output_dir": ""}, [], "training.output_dir: '' is empty"),
    ("empty output_dir with --overwrite", {"training.output_dir": ""}, ["--overwrite"], "training.output_dir: '' is empty"),
    ("cwd as output_dir", {"training.output_dir": "."}, ["--overwrite"], "training.output_dir: '.' is the current folder"),
    ("root as output_dir", {"training.output_dir": "/"}, ["--overwrite"], "training.output_dir: '/' is a file-system root"),
    ("home as output_dir", {"training.output_dir": "~"}, ["--overwrite"], "is your home folder; a run needs a folder of its own"),
    ("user's folder", {"training.output_dir": "mine"}, [], "training.output_dir: '{folder}/mine' is not empty and holds no run of ours (README.md, notes.txt)"),
    ("user's folder with --overwrite", {"training.output_dir": "mine"}, ["--overwrite"], "is not empty and holds no run of ours (README.md, notes.txt)"),
    ("user's saved model with --overwrite", {"training.output_dir": "their_model"}, ["--overwrite"], "is not empty and holds no run of ours (config.json, model.safetensors)"),
    ("resume a folder that is not there", {"training.output_dir": "nothing"}, ["--resume"], "--resume: '{folder}/nothing' has no checkpoint-* folder to resume from"),
    ("resume a run without complete checkpoint", {"training.output_dir": "half_run"}, ["--resume"], "--resume: '{folder}/half_run' has no complete checkpoint-* folder"),
    ("overwrite and resume", {}, ["--overwrite", "--resume"], "--overwrite and --resume: choose one"),
    ("long override value is cut", {}, ["training.output_dir=[" + ", ".join(["x" * 50] * 2000) + "]"], "training.output_dir: expected a string or null, got ['xxxx"),
]

RAW_CASES = [
    ("training section twice", "model: {{name_or_path: {model}}}\ntraining: {{max_steps: 2}}\ndata: {{train_file: {folder}/train.csv}}\ntraining: {{max_steps: 3}}\n",
     "key 'training' is given twice (lines 2 and 4); keep one"),
    ("learning_rate twice", "model: {{name_or_path: {model}}}\ntraining:\n  learning_rate: 1.0e-5\n  learning_rate: 1.0e-3\n",
     "key 'learning_rate' is given twice (lines 3 and 4); keep one"),
    ("alias bomb", BOMB, "its aliases expand to more than 100,000 values"),
    ("python tag in the recipe", "model: !!python/object/apply:os.system ['true']\n", "tags such as !!python are not allowed"),
    ("recipe is a named pipe", None, "is not a regular file (a named pipe)"),
]

COMMAND_CASES = [
    ("mistyped predict", ["predcit", "{folder}/run", "--input", "{folder}/train.csv"], "predcit: not a command or a recipe file; did you mean 'predict'?"),
    ("mistyped compare", ["compair", "{folder}/run"], "compair: not a command or a recipe file; did you mean 'compare'?"),
    ("predict with damaged head_state.json", ["predict", "{folder}/bad_head", "--input", "{folder}/train.csv"], "bad_head/head_state.json: this head state is damaged (not valid JSON"),
    ("predict with a python tag in recipe.yaml", ["predict", "{folder}/bad_recipe", "--input", "{folder}/train.csv"], "tags such as !!python are not allowed"),
    ("compare with damaged metrics.json", ["compare", "{folder}/bad_metrics", "--plot", ""], "bad_metrics/metrics.json: this run's metrics is damaged (not valid JSON"),
    ("compare with a python tag in recipe.yaml", ["compare", "{folder}/bad_recipe", "--plot", ""], "bad_recipe/recipe.yaml: malformed YAML at line 1"),
    ("compare with metrics.json a list", ["compare", "{folder}/list_metrics", "--plot", ""], "this run's metrics are damaged (expected a JSON object, got list)"),
    ("compare with damaged trainer_state.json", ["compare", "{folder}/bad_state"], "bad_state/trainer_state.json: this trainer state is damaged"),
]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\nfine film,pos\nawful film,neg\n")
    (tmp_path / "dup_columns.csv").write_text("text,text,label\na,b,pos\nc,d,neg\n")
    (tmp_path / "dup_columns.tsv").write_text("text\tlabel\tlabel\na\tpos\tneg\n")
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("my notes\n")
    (tmp_path / "mine" / "notes.txt").write_text("more notes\n")
    (tmp_path / "their_model").mkdir()
    (tmp_path / "their_model" / "config.json").write_text("{}")
    (tmp_path / "their_model" / "model.safetensors").write_bytes(b"\0" * 16)
    half = tmp_path / "half_run"
    (half / "checkpoint-2").mkdir(parents=True)
    (half / "recipe.yaml").write_text("model: {}\n")
    (half / "status.json").write_text('{"status": "running"}')
    recipe = yaml.safe_dump({"model": {"name_or_path": "x", "head": "sequence_classification"}, "data": {"text_columns": ["text"]}})
    for name, recipe_text, metrics in (
        ("bad_metrics", recipe, '{"labels": ["neg", "pos"], "test": {"accu'),
        ("bad_recipe", "model: !!python/object/apply:os.system ['true']\n", '{"labels": ["neg", "pos"]}'),
        ("list_metrics", recipe, "[1, 2]"),
        ("bad_state", recipe, '{"labels": ["neg", "pos"], "validation": {"accuracy": 0.5}}'),
        ("bad_head", recipe, '{"labels": ["neg", "pos"]}'),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.yaml").write_text(recipe_text)
        (tmp_path / name / "metrics.json").write_text(metrics)
    (tmp_path / "bad_state" / "trainer_state.json").write_text('{"log_history": [')
    (tmp_path / "bad_head" / "head_state.json").write_text('{"head": "sequence_cl')
    return tmp_path


def snapshot(*roots) -> dict:
    """Every file and folder under the roots, with size and modification time: any write shows."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".deepspeed")]
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                out[path] = (st.st_size, st.st_mtime_ns, stat.S_IFMT(st.st_mode))
    return out


def one_error(capsys, expected: str):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    assert expected in errors[0], errors[0][:3000]
    assert len(errors[0]) <= 2100  # bounded, whatever the input held
    assert "Traceback" not in err


def set_key(recipe: dict, dotted: str, value, folder):
    if dotted == "metrics":
        recipe["metrics"] = value
        return
    section, key = dotted.split(".")
    if key.endswith("_file") and isinstance(value, str):
        value = str(folder / value)
    if key == "output_dir" and value in ("mine", "their_model", "nothing", "half_run"):
        value = str(folder / value)
    recipe.setdefault(section, {})[key] = value


@pytest.mark.parametrize("case, changes, args, expected", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_bad_recipe_value(case, changes, args, expected, folder, tiny_model, capsys, monkeypatch):
    recipe = base(folder, tiny_model)
    for dotted, value in changes.items():
        set_key(recipe, dotted, value, folder)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    before = snapshot(folder, ROOT)
    assert run_cli([path, *args]) == 2
    one_error(capsys, expected.format(folder=folder))
    assert snapshot(folder, ROOT) == before


@pytest.mark.parametrize("case, text, expected", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_bad_recipe_file(case, text, expected, folder, tiny_model, capsys):
    path = folder / "recipe.yaml"
    if text is None:
        os.mkfifo(path)
    else:
        path.write_text(text.format(model=tiny_model, folder=folder) if "{model}" in text else text)
    before = snapshot(folder, ROOT)
    assert run_cli([path]) == 2
    one_error(capsys, expected)
    assert snapshot(folder, ROOT) == before


@pytest.mark.parametrize("case, argv, expected", COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES])
def test_bad_command(case, argv, expected, folder, capsys):
    before = snapshot(folder, ROOT)
    assert run_cli([a.format(folder=folder) for a in argv]) == 2
    one_error(capsys, expected)
    assert snapshot(folder, ROOT) == before
