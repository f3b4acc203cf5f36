"""The run folder tells the truth: locked while a run holds it, `failed` with the reason, resumed only from a
complete checkpoint, overwritten only where a run of ours wrote, readable by teammates, free of secrets."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import run_cli

from recipekit.core.files import write_atomic
from recipekit.core.safety import redact
from recipekit.outputs import folder as outputs
from recipekit.outputs.checkpoints import checkpoint_problem, resume_checkpoint, whole_run_loss
from recipekit.outputs.folder import read_run
from recipekit.outputs.provenance import launch_info


@pytest.fixture
def toy(tiny_model, tmp_path):
    rows = ["text,label"] + [f"{['awful', 'superb'][i % 2]} film {i},{i % 2}" for i in range(32)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    return {
        "model": {"name_or_path": tiny_model},
        "data": {"train_file": str(tmp_path / "train.csv"), "max_length": 16},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 4, "per_device_train_batch_size": 8,
                     "save_strategy": "steps", "save_steps": 2, "logging_steps": 1, "report_to": "none", "seed": 1},
    }


def errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_empty_output_dir_with_overwrite_deletes_nothing_in_the_current_folder(toy, write_recipe, tmp_path, monkeypatch, capsys):
    here = tmp_path / "project"
    (here / "checkpoint-3").mkdir(parents=True)
    for name in ("README.md", "report.md", "metrics.json"):
        (here / name).write_text("the user's own")
    monkeypatch.chdir(here)
    toy["training"]["output_dir"] = ""
    path = write_recipe(toy)
    before = sorted(p.name for p in here.iterdir())
    assert run_cli([path, "--overwrite"]) == 2
    assert errors(capsys) == ["error: training.output_dir: '' is empty; name a folder for the run's outputs (e.g. runs/my-run)"]
    assert sorted(p.name for p in here.iterdir()) == before
    assert (here / "README.md").read_text() == "the user's own"


@pytest.mark.slow  # two runs
def test_overwrite_removes_only_what_a_run_of_ours_wrote(toy, write_recipe, tmp_path, capsys):
    path = write_recipe(toy)
    assert run_cli([path]) == 0
    run = tmp_path / "run"
    (run / "my_notes.txt").write_text("keep me")
    (run / "analysis").mkdir()
    assert run_cli([path, "--overwrite", "training.max_steps=2"]) == 0
    assert (run / "my_notes.txt").read_text() == "keep me" and (run / "analysis").is_dir()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]  # checkpoint-4 of the first run is gone
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


def test_a_token_given_as_override_reaches_no_file(toy, write_recipe, tmp_path, monkeypatch):
    secret = "hf_overrideTOKENnever_written_789"
    path = write_recipe(toy)
    argv = ["run.py", path, f"training.hub_token={secret}"]
    monkeypatch.setattr(sys, "argv", argv)  # what the manifest records, as from a shell
    assert run_cli(argv[1:]) == 0
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "metrics.json" for p in written)
    for p in written:
        assert b"overrideTOKEN" not in p.read_bytes(), p
    command = json.loads((tmp_path / "run" / "metrics.json").read_text())["manifest"]["command"]
    assert "training.hub_token=<redacted>" in command


def test_redaction_covers_every_way_of_passing_a_secret():
    argv = ["run.py", "r.yaml", "training.hub_token=abc", "--hub_token", "abc", "--api-key=abc", "data.password=abc",
            "model.name_or_path=hf_abcdefghijklmnopqrstuvwx", "training.learning_rate=1.0e-5"]
    shown = " ".join(redact(argv))
    assert "abc" not in shown
    assert "training.learning_rate=1.0e-5" in shown and "r.yaml" in shown


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock, as a concurrent run does."""
    code = (
        "import sys, time\nfrom recipekit.outputs.folder import lock_folder\n"
        f"lock = lock_folder({str(folder)!r})\nprint('held', flush=True)\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).parent.parent))
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow  # a run.py process holding the lock
def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(toy, write_recipe, tmp_path, capsys):
    path = write_recipe(toy)
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        for flags in ([], ["--overwrite"], ["--resume"]):
            assert run_cli([path, *flags]) == 2
            (line,) = errors(capsys)
            assert line.startswith(f"error: training.output_dir: '{run}' is in use by another run (pid {holder.pid} on ")
        assert sorted(p.name for p in run.iterdir()) == [outputs.LOCK]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel releases a killed holder's lock: the folder is usable again.
    assert outputs.lock_holder(run) is None
    assert run_cli([path]) == 0


def test_a_run_that_fails_says_so_with_the_reason(toy, write_recipe, tmp_path, monkeypatch, capsys):
    from recipekit.training import finish

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "predictions.csv"))

    monkeypatch.setattr(finish, "write_run", full_disk)
    path = write_recipe(toy)
    assert run_cli([path]) == 2
    (line,) = errors(capsys)
    assert line == f"error: training.output_dir: No space left on device ({tmp_path / 'run' / 'predictions.csv'}); the run is marked failed"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["reason"]
    assert not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.undo()
    assert run_cli([path]) == 2
    (line,) = errors(capsys)
    assert "holds an unfinished run that failed (training.output_dir: No space left on device" in line
    assert outputs.lock_holder(tmp_path / "run") is None  # released on the way out


def test_an_unexpected_crash_is_recorded_as_failed(toy, write_recipe, tmp_path, monkeypatch):
    import run as run_module
    from recipekit.training import finish

    monkeypatch.setattr(finish, "evaluate_splits", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_module.main([write_recipe(toy)])
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status == {"status": "failed", "reason": "ZeroDivisionError: division by zero"}


def test_metrics_json_exists_before_status_says_finished(toy, write_recipe, tmp_path, monkeypatch):
    from recipekit.training import finish

    seen = []
    real = finish.mark
    monkeypatch.setattr(finish, "mark", lambda folder, status, **kw: (seen.append((status, (Path(folder) / "metrics.json").exists())), real(folder, status, **kw)))
    assert run_cli([write_recipe(toy)]) == 0
    assert seen == [("finished", True)]


@pytest.mark.slow  # a run and a resume
def test_resume_skips_half_written_and_truncated_checkpoints(toy, write_recipe, tmp_path, capsys):
    path = write_recipe(toy)
    assert run_cli([path]) == 0
    run = tmp_path / "run"
    (run / "metrics.json").unlink()
    # A kill during a save: checkpoint-6 lacks trainer_state.json; a disk that filled: checkpoint-8's weights are cut.
    for step in (6, 8):
        subprocess.run(["cp", "-r", str(run / "checkpoint-4"), str(run / f"checkpoint-{step}")], check=True)
    (run / "checkpoint-6" / "trainer_state.json").unlink()
    weights = run / "checkpoint-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert checkpoint_problem(run / "checkpoint-8").startswith("model.safetensors is truncated")
    capsys.readouterr()
    assert run_cli([path, "--resume", "training.max_steps=6"]) == 0
    err = capsys.readouterr().err
    assert "resume: skipping checkpoint-8: model.safetensors is truncated" in err
    assert "resume: skipping checkpoint-6: no trainer_state.json (its save was cut short)" in err
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["resumed_from_step"] == 4
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert metrics["train"]["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-3)


def test_resume_with_no_complete_checkpoint_is_one_line(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(Exception, match="has no complete checkpoint"):
        resume_checkpoint(str(tmp_path), announce=False)


def test_train_loss_after_resume_covers_the_whole_run():
    log = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4)] + [{"step": s, "loss": 3.0} for s in (5, 6, 7, 8)]
    state = SimpleNamespace(log_history=log, global_step=8)
    # Trainer reports the mean of the resumed segment (steps 5-8) only.
    whole = whole_run_loss(state, 4, {"train_loss": 3.0})
    assert whole["train_loss"] == pytest.approx(2.0) and whole["train_loss_resumed_segment"] == 3.0
    # Resuming a finished training: Trainer says 0.0; the whole run's mean stands.
    done = whole_run_loss(SimpleNamespace(log_history=log[:4], global_step=4), 4, {"train_loss": 0.0})
    assert done["train_loss"] == pytest.approx(1.0) and done["train_loss_resumed_segment"] is None


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "metrics.json", "{}")
        assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        write_atomic(tmp_path / "report.md", "x")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_manifest_names_the_launcher_and_the_process_count(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launch_info()["launcher"] == "torchrun"
    assert (launch_info()["processes"], launch_info()["machines"]) == (4, 2)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert {k: v for k, v in launch_info().items() if k != "python"} == {"launcher": "python", "processes": 1, "processes_per_machine": 1, "machines": 1}


def test_damaged_run_folders_are_read_through_the_safe_reader(tmp_path):
    (tmp_path / "recipe.yaml").write_text("model: {head: binary}\n")
    (tmp_path / "metrics.json").write_text('{"labels": ["a", "b"]}')
    assert read_run(tmp_path) == ({"model": {"head": "binary"}}, {"labels": ["a", "b"]})
    (tmp_path / "metrics.json").write_text('{"labels": ')
    with pytest.raises(Exception, match="metrics.json: this run's metrics is damaged"):
        read_run(tmp_path)


def test_a_folder_locked_by_a_dead_process_is_free(tmp_path):
    proc = hold_lock(tmp_path / "run")
    assert f"pid {proc.pid}" in outputs.lock_holder(tmp_path / "run")
    proc.kill()
    proc.wait()
    time.sleep(0.1)
    assert outputs.lock_holder(tmp_path / "run") is None


def test_recipe_yaml_written_by_a_run_is_plain_yaml(toy, write_recipe, tmp_path):
    assert run_cli([write_recipe(toy)]) == 0
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["training"]["max_steps"] == 4
