"""The command line: every command listed and described, help before torch loads, flags and overrides in any order,
serve's port checked before the model loads, logs that read well in a pipe, and `run.py new`'s scaffold."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import pytest
import yaml
from conftest import ROOT, run_cli

from recipekit.commands.cli import COMMANDS, parse
from recipekit.core.errors import RecipeError

FIXTURE = ROOT / "tests" / "fixtures" / "run_v1"
# Runs run.py as `python run.py ARGS` does, then reports whether the libraries were imported meanwhile.
PROBE = """
import runpy, sys
sys.argv = ["run.py", *sys.argv[1:]]
try:
    runpy.run_path("run.py", run_name="__main__")
except SystemExit as e:
    status = e.code
print("LOADED", "torch" in sys.modules, "transformers" in sys.modules, "STATUS", status)
"""


def probe(*args) -> tuple[str, str, bool, int, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    seconds = time.monotonic() - started
    *out, last = done.stdout.strip().splitlines()
    loaded = last.split()[1:3] != ["False", "False"]
    return "\n".join(out), done.stderr, loaded, int(last.split()[-1]), seconds


def test_help_lists_every_command_with_its_description_without_importing_torch():
    out, _, loaded, status, seconds = probe("--help")
    assert status == 0 and not loaded, out
    listed = out[out.index("commands:"):]
    for name, what in COMMANDS.items():
        assert f"  {name}" in listed and what in listed, name
    assert {"cv", "sweep", "merge", "new"} <= set(COMMANDS)
    assert seconds < 5, seconds  # measured 0.3-0.4 s; torch alone takes 4-8 s to import here


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_its_own_help_with_a_description(command):
    out, _, loaded, status, _ = probe(command, "--help")
    assert status == 0 and not loaded
    assert out.startswith(f"usage: run.py {command}")
    description = out.split("\n\n")[1]
    assert len(description.split()) >= 5 and not description.startswith(("positional", "options")), out


def test_a_usage_error_answers_before_torch_loads_with_the_commands_own_usage():
    _, err, loaded, status, _ = probe("cv", "--folds", "3")
    assert status == 2 and not loaded
    assert err.startswith("usage: run.py cv") and "the following arguments are required: recipe" in err
    _, err, loaded, status, _ = probe("serve", "some/run", "--port", "70000")
    assert status == 2 and not loaded
    assert err == "error: serve --port: 70000 is not a TCP port; give 1 to 65535, or 0 for any free port\n"


@pytest.mark.parametrize("command", ["cv", "sweep", None])
def test_flags_and_overrides_come_in_any_order(command):
    head = [command] if command else []
    for rest in (
        ["r.yaml", "--check", "training.seed=7", "--verbose", "data.max_length=64"],
        ["--check", "r.yaml", "training.seed=7", "data.max_length=64", "--verbose"],
        ["r.yaml", "training.seed=7", "--verbose", "data.max_length=64", "--check"],
    ):
        args = parse([*head, *rest])
        assert (args.command, args.recipe, args.overrides, args.check, args.verbose) == (
            command, "r.yaml", ["training.seed=7", "data.max_length=64"], True, True), rest
    if command == "cv":
        assert parse(["cv", "r.yaml", "--folds", "3", "training.seed=7"]).folds == 3


def test_other_commands_take_flags_before_their_arguments():
    assert parse(["compare", "--split", "test", "a", "b", "--plot", ""]).runs == ["a", "b"]
    args = parse(["predict", "--input", "x.csv", "out", "--batch-size", "8"])
    assert (args.run, args.input, args.batch_size) == ("out", "x.csv", 8)
    assert (parse(["merge", "lora-run", "merged"]).run_dir, parse(["merge", "lora-run", "merged"]).out_dir) == ("lora-run", "merged")


@pytest.mark.parametrize(("argv", "message"), [
    (["serve", "r", "--port", "-5"], "serve --port: -5 is not a TCP port; give 1 to 65535, or 0 for any free port"),
    (["serve", "r", "--workers", "0"], "serve --workers: 0 must be a positive integer"),
    (["cv", "r.yaml", "--folds", "0"], "cv --folds: 0 must be a positive integer"),
    (["predict", "r", "--input", "x", "--batch-size", "-1"], "predict --batch-size: -1 must be a positive integer"),
])
def test_bad_option_values_are_one_line(argv, message):
    with pytest.raises(RecipeError) as e:
        parse(argv)
    assert e.value.problems == [message]


def test_merge_is_a_command(capsys):
    assert run_cli(["merge", FIXTURE / "binary", "/nonexistent/merged"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {FIXTURE / 'binary'}: no adapter_config.json; merge takes")


@pytest.mark.slow  # a server process
def test_serve_refuses_a_port_in_use_in_one_line_before_loading_the_model(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        done = subprocess.run([sys.executable, str(ROOT / "run.py"), "serve", str(FIXTURE / "binary"), "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, "TMPDIR": str(tmp_path)})
    finally:
        busy.close()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: serve --port: {port} is in use on 127.0.0.1; choose another, or --port 0 for any free port\n"
    assert list(tmp_path.iterdir()) == []  # nothing loaded, no temporary folder left


def test_listen_takes_any_free_port_and_says_which():
    from recipekit.commands.serve import listen

    sock = listen("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        with pytest.raises(RecipeError, match=f"serve --port: {port} is in use on 127.0.0.1"):
            sock.listen()
            listen("127.0.0.1", port)
    finally:
        sock.close()
    with pytest.raises(RecipeError, match="serve --host: 'no.such.host.invalid' is not an address of this machine"):
        listen("no.such.host.invalid", 0)


def state(step: int, max_steps: int = 40) -> SimpleNamespace:
    return SimpleNamespace(is_world_process_zero=True, global_step=step, max_steps=max_steps)


def drive(callback, max_steps: int = 40, evaluations=()) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        callback.on_train_begin(None, state(0, max_steps), None)
        for step in range(1, max_steps + 1):
            callback.on_step_end(None, state(step, max_steps), None)
            for at, logs in evaluations:
                if at == step:
                    callback.on_log(None, state(step, max_steps), None, logs=logs)
        callback.on_train_end(None, state(max_steps, max_steps), None)
    return out.getvalue(), err.getvalue()


EVALUATIONS = [
    (20, {"eval_loss": 0.69312, "eval_accuracy": 0.5, "eval_runtime": 1.2, "eval_samples_per_second": 40.0, "epoch": 0.666667}),
    (30, {"eval_loss": 0.4, "eval_accuracy": 1.0, "eval_count": 12, "epoch": 1.0}),
    (31, {"loss": 0.3, "grad_norm": 1.0, "learning_rate": 1e-4, "epoch": 1.03}),
]


def test_piped_progress_is_a_line_per_tenth_and_evaluations_are_readable_lines():
    from recipekit.core.console import QuietProgress

    out, err = drive(QuietProgress(terminal=False), 40, EVALUATIONS)
    assert "\r" not in err + out and "\x1b" not in err + out
    lines = err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"training: step {4 * k}/40 ({10 * k}%)" for k in range(1, 11)]
    assert out.splitlines() == [
        "step 20 (epoch 0.67): validation loss 0.6931, accuracy 0.5000",
        "epoch 1 (step 30): validation loss 0.4000, accuracy 1.0000, count 12",
    ]
    # A run of 7 steps prints at most one line per step, never more than ten.
    assert len(drive(QuietProgress(terminal=False), 7)[1].splitlines()) == 7
    # The evaluations after training (the best checkpoint on validation, then test) are the run summary's lines.
    after = io.StringIO()
    with redirect_stdout(after):
        QuietProgress(terminal=False).on_log(None, state(40), None, logs=EVALUATIONS[1][1])
    assert after.getvalue() == ""
    # training.disable_tqdm: no progress at all, the same evaluation lines (never Trainer's raw dicts).
    quiet_out, quiet_err = drive(QuietProgress(show_progress=False, terminal=False), 40, EVALUATIONS)
    assert quiet_err == "" and quiet_out == out


def test_disable_tqdm_keeps_the_readable_lines_instead_of_printer_dicts(tmp_path):
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from recipekit.core import console

    model = torch.nn.Linear(2, 2)
    console.configure(False)
    for disable in (True, False):
        trainer = Trainer(model=model, args=TrainingArguments(str(tmp_path), disable_tqdm=disable, report_to="none"))
        console.quiet_trainer(trainer)
        kinds = [type(c) for c in trainer.callback_handler.callbacks]
        assert PrinterCallback not in kinds and ProgressCallback not in kinds and kinds.count(console.QuietProgress) == 1
        assert trainer.callback_handler.callbacks[-1].show_progress is not disable


def test_compare_shows_seconds_to_a_tenth_and_whole_numbers_as_integers():
    from recipekit.commands.compare import compare_table

    lines, _ = compare_table([str(FIXTURE / "binary"), str(FIXTURE / "sequence_classification")], None)
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert rows["wall time (s)"] == ["3.9", "5.1"]
    assert rows["training.num_train_epochs"] == ["2", "2"]  # recipe.yaml holds 2.0


SOURCES = ["quickstart", "binary_imdb", "sst2_lr_sweep"]


@pytest.mark.parametrize("source", SOURCES)
def test_new_writes_a_commented_recipe_that_checks_and_equals_its_source(source, tmp_path, monkeypatch, capsys):
    from recipekit.recipe.build import load_recipe

    monkeypatch.chdir(ROOT)  # the shipped recipes name their data relative to the repository root
    path = tmp_path / "mine.yaml"
    assert run_cli(["new", path, "--from", source]) == 0
    text = path.read_text()
    assert run_cli([path, "--check"]) == 0
    capsys.readouterr()
    assert load_recipe(str(path)).to_dict() == load_recipe(str(ROOT / "recipes" / f"{source}.yaml")).to_dict()
    # Each key set has its help above it; the likely next keys are there, commented out at their defaults.
    lines = text.splitlines()
    assert lines[lines.index("  num_train_epochs: " + str(yaml.safe_load(text)["training"]["num_train_epochs"])) - 1] == \
        "  # Total number of training epochs to perform"
    assert "  # train on a seeded random subset of this size" in lines
    assert "  # max_train_samples: null" in lines or "max_train_samples" in (yaml.safe_load(text)["data"] or {})
    assert "  # gradient_accumulation_steps: 1" in lines
    assert lines[lines.index("  # peft: null") - 1].startswith("  # train LoRA adapters instead of every weight")
    assert yaml.safe_load(text).get("sweep") == yaml.safe_load((ROOT / "recipes" / f"{source}.yaml").read_text()).get("sweep")


def test_new_never_replaces_a_file_and_names_the_shipped_recipes(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text("mine\n")
    assert run_cli(["new", path]) == 2
    assert capsys.readouterr().err == f"error: {path}: already exists; `new` never replaces a file, choose another name\n"
    assert path.read_text() == "mine\n"
    assert run_cli(["new", tmp_path / "other.yaml", "--from", "quikstart"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --from: 'quikstart' is neither a file nor a shipped recipe; did you mean 'quickstart'? Choices: ")
    assert "pretrain/bert_mlm_scratch" in err and "accelerate" not in err
    assert not (tmp_path / "other.yaml").exists()


def test_the_readme_lists_every_command():
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"python run.py {name} " in readme, name
    assert json.dumps(sorted(COMMANDS))  # the names are plain words
