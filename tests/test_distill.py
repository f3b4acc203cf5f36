"""Knowledge distillation (`model.teacher`): the loss of each head that takes a teacher, the teacher column's way
through Trainer, the refusals, and whole runs on tiny models (a student pulled to its teacher's predictions,
predict without the teacher, resume, a sweep over the weight). SST-2 numbers: bench/bench_distill.py."""

from __future__ import annotations

import json
import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, run_cli
from test_joins import SignalAt, make_recipe, metrics_of, predicted, scores, write
from transformers import TrainerCallback, TrainingArguments

from recipekit.core.errors import RecipeError
from recipekit.heads import HEADS, build_head
from recipekit.heads.distillation import DistillationLoss, sigmoid_kl, softmax_kl
from recipekit.recipe.build import build_recipe
from recipekit.recipe.data import DataArgs
from recipekit.trainer.teacher import TEACHER_COLUMN
from recipekit.trainer.trainer import RecipeTrainer

TEACHER_HEADS = ["sequence_classification", "binary", "multi_label", "regression"]


def head_with_state(name: str, outputs: int):
    labels = {"binary": ["neg", "pos"], "regression": ["label"]}.get(name, [f"l{i}" for i in range(outputs)])
    state = HEADS[name].State.from_dict({"head": name, "labels": labels, "target_mean": 2.0 if name == "regression" else None,
                                         "target_std": 1.5 if name == "regression" else None})
    return build_head(name, {"standardize": True} if name == "regression" else None, None, DataArgs(), state)


def batch_of(name: str, rows: int = 6, seed: int = 0):
    """(head, student logits, gold labels, teacher soft targets) as Trainer and the teacher column hand them over."""
    g = torch.Generator().manual_seed(seed)
    outputs = {"sequence_classification": 3, "multi_label": 4}.get(name, 1)
    head = head_with_state(name, outputs)
    logits = torch.randn(rows, outputs, generator=g, requires_grad=True)
    if name == "sequence_classification":
        labels = torch.randint(0, outputs, (rows,), generator=g)
    elif name == "multi_label":
        labels = torch.randint(0, 2, (rows, outputs), generator=g).float()
    elif name == "binary":
        labels = torch.randint(0, 2, (rows,), generator=g)
    else:
        labels = torch.randn(rows, generator=g) * 1.5 + 2.0
    teacher = torch.as_tensor(head.soft_targets((torch.randn(rows, outputs, generator=g) * 2).numpy()))
    return head, logits, labels, teacher


def mixed(head, weight: float, temperature: float = 2.0):
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    return DistillationLoss(head.loss(args), head.teacher_term, temperature, weight), head.loss(args)


def call(loss, logits, labels, teacher, count):
    loss.teacher_logits = teacher
    return loss({"logits": logits}, labels, num_items_in_batch=count)


@pytest.mark.parametrize("name", TEACHER_HEADS)
def test_weight_zero_is_the_heads_own_loss_exactly(name):
    head, logits, labels, teacher = batch_of(name)
    distilled, plain = mixed(head, 0.0)
    count = torch.tensor(labels.numel())
    assert torch.equal(call(distilled, logits, labels, teacher, count), plain({"logits": logits}, labels, num_items_in_batch=count))


@pytest.mark.parametrize("name", TEACHER_HEADS)
def test_a_student_equal_to_its_teacher_has_no_teacher_term(name):
    head, logits, labels, _ = batch_of(name)
    teacher = torch.as_tensor(head.soft_targets(logits.detach().numpy()))  # the teacher is the student
    distilled, _ = mixed(head, 1.0, temperature=3.0)
    loss = call(distilled, logits, labels, teacher, torch.tensor(labels.numel()))
    assert abs(loss.item()) < 1e-6
    loss.backward()
    assert logits.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("name", TEACHER_HEADS)
def test_the_mix_is_the_weighted_sum_of_the_two_terms(name):
    head, logits, labels, teacher = batch_of(name)
    count = torch.tensor(labels.numel())
    gold = mixed(head, 0.0)[1]({"logits": logits}, labels, num_items_in_batch=count)
    teacher_only = call(mixed(head, 1.0)[0], logits, labels, teacher, count)
    quarter = call(mixed(head, 0.25)[0], logits, labels, teacher, count)
    assert teacher_only.item() > 1e-3  # the teacher's targets differ from the student's outputs
    assert quarter.item() == pytest.approx(0.75 * gold.item() + 0.25 * teacher_only.item(), rel=1e-6)
    # An evaluation batch carries no teacher column: the head's own loss, as in any run.
    assert mixed(head, 0.25)[0]({"logits": logits}, labels, num_items_in_batch=count).item() == pytest.approx(gold.item(), rel=1e-7)


def test_the_teacher_terms_are_the_kl_divergences_times_t_squared():
    g = torch.Generator().manual_seed(1)
    student, teacher, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g) * 3, 2.5
    p, q = torch.softmax(teacher / t, -1).numpy(), torch.softmax(student / t, -1).numpy()
    np.testing.assert_allclose(softmax_kl(student, teacher, t).numpy(), t**2 * (p * np.log(p / q)).sum(-1), rtol=1e-5)
    p, q = torch.sigmoid(teacher / t).numpy(), torch.sigmoid(student / t).numpy()
    bernoulli = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    np.testing.assert_allclose(sigmoid_kl(student, teacher, t).numpy(), t**2 * bernoulli, rtol=1e-4, atol=1e-6)


def distilling_trainer(tiny_model, tmp_path, chunk_cost, teacher_rows: bool = True):
    """A tiny classifier (dropout off) in the Trainer a distilled sequence_classification run trains with, and a
    training set of uneven lengths whose rows carry teacher logits."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    texts = ["good"] * 10 + ["a long and winding review that goes on and on about the plot " * 3] * 2 + ["fine film", "bad"]
    rows = {**tokenizer(texts), "labels": [i % 3 for i in range(len(texts))], "unused": texts}
    if teacher_rows:
        # Row i's teacher favours row i's label, offset by 0.01 i: a batch shows whether each row kept its own.
        rows[TEACHER_COLUMN] = [[3.0 * (j == i % 3) + 0.01 * i for j in range(3)] for i in range(len(texts))]
    train = Dataset.from_dict(rows)
    head = build_head("sequence_classification")
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=len(texts))
    trainer = RecipeTrainer(
        model=model, args=args, train_dataset=train, processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
        compute_loss_func=DistillationLoss(head.loss(args), head.teacher_term, 2.0, 0.5), chunk_cost=chunk_cost, teacher=True)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    return trainer


def step(trainer, batches, count):
    """Gradients after training steps on `batches` (accumulated, as Trainer accumulates them), and the summed loss."""
    loss = sum(trainer.training_step(trainer.model, dict(b), num_items_in_batch=torch.tensor(count)).item() for b in batches)
    return loss, {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def test_the_teacher_column_survives_remove_unused_columns_and_the_collator(tiny_model, tmp_path):
    trainer = distilling_trainer(tiny_model, tmp_path, chunk_cost=None)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "unused" not in batch  # Trainer still drops what neither the model nor the loss reads
    teacher = batch[TEACHER_COLUMN]
    assert teacher.dtype == torch.float32 and teacher.shape == (14, 3)
    assert torch.equal(teacher.argmax(-1), batch["labels"])
    assert sorted(torch.round(teacher.min(-1).values / 0.01).int().tolist()) == list(range(14))


def test_split_chunks_and_accumulated_halves_give_the_whole_batchs_distilled_gradient(tiny_model, tmp_path):
    batch = next(iter(distilling_trainer(tiny_model, tmp_path, None).get_train_dataloader()))
    whole_loss, whole = step(distilling_trainer(tiny_model, tmp_path, None), [batch], 14)
    split_loss, chunked = step(distilling_trainer(tiny_model, tmp_path, 16), [batch], 14)
    halves = [{k: v[rows] for k, v in batch.items()} for rows in (slice(0, 7), slice(7, 14))]
    accumulated_loss, accumulated = step(distilling_trainer(tiny_model, tmp_path, None), halves, 14)
    without = distilling_trainer(tiny_model, tmp_path, None)
    plain_loss, _ = step(without, [{k: v for k, v in batch.items() if k != TEACHER_COLUMN}], 14)
    assert abs(whole_loss - plain_loss) > 1e-3  # the teacher's term is in the loss
    assert split_loss == pytest.approx(whole_loss, rel=1e-5) and accumulated_loss == pytest.approx(whole_loss, rel=1e-5)
    assert len(whole) > 20
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)



def finished_run(folder: Path, head: str, labels: list[str], text_columns=("text",)) -> str:
    """A folder that looks finished to validation and to open_run (which reads no model before the labels match)."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {"model": {"name_or_path": str(folder), "head": head}, "data": {"text_columns": list(text_columns)}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (folder / "metrics.json").write_text(json.dumps({"status": "finished"}))
    (folder / "head_state.json").write_text(json.dumps(HEADS[head].State(head, labels=labels).to_dict()))
    return str(folder)


def refusal(raw: dict) -> str:
    with pytest.raises(RecipeError) as e:
        build_recipe(raw)
    assert len(e.value.problems) == 1, e.value.problems
    return e.value.problems[0]


@pytest.mark.parametrize("model, expected", [
    ({"head": "token_classification"}, ("model.teacher: head 'token_classification' cannot learn from a teacher's predictions; "
                                       "heads that can: sequence_classification, binary, multi_label, regression")),
    ({"teacher": "MISSING"}, "model.teacher: 'MISSING' is not a folder; give the output_dir of a finished run"),
    ({"teacher": "UNFINISHED"}, "model.teacher: 'UNFINISHED' holds no finished run (no recipe.yaml or metrics.json); train the teacher first"),
    ({"teacher": "BINARY"}, "model.teacher: 'BINARY' is a 'binary' run; this recipe trains head 'sequence_classification'; the two must be the same head"),
    ({"teacher_temperature": 0}, "model.teacher_temperature: 0.0 must be positive (1: the plain softmax; 2-5 is usual)"),
    ({"teacher_weight": 1.5}, "model.teacher_weight: 1.5 must be in [0, 1] (0: gold labels only, 1: the teacher only)"),
    ({"teacher_weight": -0.1}, "model.teacher_weight: -0.1 must be in [0, 1] (0: gold labels only, 1: the teacher only)"),
    ({"head": "regression", "teacher": "REGRESSION", "teacher_temperature": 4.0},
     ("model.teacher_temperature: 4.0 has no effect on head 'regression' (its teacher term is the error to the teacher's prediction, "
     "a value, not a distribution); leave it out")),
    ({"teacher": "OUTPUT"}, "model.teacher: 'OUTPUT' is this run's own training.output_dir; the student needs a folder of its own"),
    ({"teacher": "GOOD", "data": {"long_text": "chunks"}},
     "model.teacher: a teacher scores whole documents, but data.long_text: chunks trains on windows; use long_text: head or head_tail with a teacher"),
])
def test_a_bad_teacher_setting_is_one_line_naming_the_key(request, tmp_path, model, expected):
    folders = {
        "MISSING": str(tmp_path / "missing"),
        "UNFINISHED": str(tmp_path / "unfinished"),
        "BINARY": finished_run(tmp_path / "binary", "binary", ["neg", "pos"]),
        "REGRESSION": finished_run(tmp_path / "regression", "regression", ["label"]),
        "OUTPUT": finished_run(tmp_path / "run", "sequence_classification", ["mid", "neg", "pos"]),
        "GOOD": finished_run(tmp_path / "good", "sequence_classification", ["mid", "neg", "pos"]),
    }
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "recipe.yaml").write_text("model: {}\n")
    raw = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / "run")
    teacher = model.get("teacher", "GOOD")
    raw["data"].update(model.pop("data", {}))
    raw["model"].update({**model, "teacher": folders[teacher]})
    assert refusal(raw) == expected.replace(repr(teacher), repr(folders[teacher]))


@pytest.mark.parametrize("case, teacher_labels, text_columns, expected", [
    ("sequence_classification", ["neg", "pos"], ["text"],
     "was trained on labels [neg, pos]; this run's data has [mid, neg, pos]; a teacher needs the same labels in the same order"),
    ("binary", ["pos", "neg"], ["text"],
     "was trained on labels [pos, neg]; this run's data has [neg, pos]; a teacher needs the same labels in the same order"),
    ("binary", ["neg", "pos"], ["premise", "hypothesis"], "reads 2 text column(s) (premise, hypothesis); this recipe has 1 (text)"),
])
def test_a_teacher_of_other_labels_is_refused_before_anything_is_written(request, tmp_path, capsys, case, teacher_labels,
                                                                          text_columns, expected):
    recipe = make_recipe(request, case, tmp_path / "data", tmp_path / "run")
    recipe["model"]["teacher"] = finished_run(tmp_path / "teacher", case, teacher_labels, text_columns)
    assert run_cli([write(recipe, tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: model.teacher: {recipe['model']['teacher']!r} {expected}"]
    assert not (tmp_path / "run").exists()



def test_a_pretrained_model_keeps_its_first_layers_weights(tiny_model):
    from transformers import AutoModel

    from recipekit.recipe.model import ModelArgs

    head = build_head("binary", data=DataArgs())
    head.state.labels = ["neg", "pos"]
    student = head.load_model(ModelArgs(name_or_path=tiny_model, head="binary", config={"num_hidden_layers": 1}), None)
    base = AutoModel.from_pretrained(tiny_model)
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    for name, value in base.encoder.layer[0].state_dict().items():
        assert torch.equal(student.bert.encoder.layer[0].state_dict()[name], value), name


def test_a_lora_run_on_the_first_layers_predicts_and_merges_as_it_wrote(request, tmp_path):
    from recipekit.commands.cli import guarded
    from recipekit.commands.merge import main as merge

    recipe = make_recipe(request, "binary", tmp_path / "data", tmp_path / "run")
    recipe["model"].update(peft={"r": 4, "lora_alpha": 8}, config={"num_hidden_layers": 1})
    assert run_cli([write(recipe, tmp_path / "recipe.yaml")]) == 0
    want = predicted(tmp_path / "run" / "predictions.csv")
    # The adapter sits on a 1-layer cut of the base model: predict and merge load the base as the run did.
    assert guarded(merge, [str(tmp_path / "run"), str(tmp_path / "merged")]) == 0
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["num_hidden_layers"] == 1
    for folder in ("run", "merged"):
        out = tmp_path / f"{folder}.csv"
        assert run_cli(["predict", tmp_path / folder, "--input", recipe["data"]["test_file"], "--output", out]) == 0
        assert predicted(out)["predicted"] == want["predicted"]


@pytest.mark.parametrize("config, expected", [
    ({"hidden_size": 32}, ("model.config.hidden_size: a pretrained model keeps its trained shape; with init: pretrained only "
                          "num_hidden_layers applies (keep the first N layers); other overrides need init: scratch")),
    ({"num_hidden_layers": 0}, "model.config.num_hidden_layers: 0 must be a positive number of layers"),
    ({"num_hidden_layers": 3}, "model.config.num_hidden_layers: 3 is more than the 2 layers of 'TINY'; a pretrained model can keep its first 1 to 2"),
])
def test_a_pretrained_config_may_only_drop_layers(request, tmp_path, tiny_model, config, expected):
    raw = make_recipe(request, "binary", tmp_path / "data", tmp_path / "run")
    raw["model"]["config"] = config
    assert refusal(raw) == expected.replace("'TINY'", repr(tiny_model))


# The teacher learns a task the gold labels contradict (labels swapped, targets mirrored), so a student that
# follows its teacher is told apart from one that follows the gold labels.
SWAP = {"pos": "neg", "neg": "pos", "a": "b", "b": "a"}


def contrary(value, head: str):
    if head == "regression":
        return 6.0 - float(value)
    if head == "multi_label":
        return ",".join(sorted(SWAP.get(v, v) for v in str(value).split(",")))
    return SWAP.get(value, value)


def train_teacher(request, tmp_path, head: str, **training) -> str:
    recipe = make_recipe(request, head, tmp_path / "data", tmp_path / "teacher", **{"max_steps": 40, **training})
    frame = pd.read_csv(recipe["data"]["train_file"], keep_default_na=False)
    frame["label"] = [contrary(v, head) for v in frame["label"]]
    recipe["data"]["train_file"] = str(tmp_path / "teacher_train.csv")
    frame.to_csv(recipe["data"]["train_file"], index=False)
    assert run_cli([write(recipe, tmp_path / "teacher.yaml")]) == 0
    return str(tmp_path / "teacher")


def student(request, tmp_path, head: str, name: str, **model) -> dict:
    recipe = make_recipe(request, head, tmp_path / "data", tmp_path / name, max_steps=40)
    recipe["model"].update({"config": {"num_hidden_layers": 1}, **model})
    return recipe


def outputs_of(folder: Path) -> np.ndarray:
    """The test predictions as numbers: each label's probability, or the predicted value (regression)."""
    columns = predicted(folder / "predictions.csv")
    names = sorted(c for c in columns if c.startswith("prob_")) or ["predicted"]
    return np.asarray([columns[c] for c in names], dtype=float).T


@pytest.mark.slow  # three tiny runs of 40 steps per head
@pytest.mark.parametrize("head", TEACHER_HEADS)
def test_a_distilled_student_predicts_like_its_teacher_and_predicts_without_it(request, tmp_path, head):
    teacher = train_teacher(request, tmp_path, head)
    alone = student(request, tmp_path, head, "alone")
    distilled = student(request, tmp_path, head, "distilled", teacher=teacher, teacher_weight=1.0)
    for recipe in (alone, distilled):
        assert run_cli([write(recipe, tmp_path / f"{Path(recipe['training']['output_dir']).name}.yaml")]) == 0
    want = outputs_of(Path(teacher))
    gap = {name: float(np.abs(outputs_of(tmp_path / name) - want).mean()) for name in ("alone", "distilled")}
    assert gap["distilled"] < 0.5 * gap["alone"], gap
    record = metrics_of(tmp_path / "distilled")["manifest"]["teacher"]
    assert (record["run"], record["weight"]) == (str(Path(teacher).resolve()), 1.0)
    card = (tmp_path / "distilled" / "README.md").read_text()
    assert f"Distilled from the run `{teacher}`" in card and ", keeping the first 1 of its layers, with the" in card

    shutil.move(teacher, tmp_path / "teacher-gone")  # the student is an ordinary run: it predicts alone
    out = tmp_path / "predicted.csv"
    assert run_cli(["predict", tmp_path / "distilled", "--input", distilled["data"]["test_file"], "--output", out]) == 0
    assert predicted(out) == predicted(tmp_path / "distilled" / "predictions.csv")


class TrainingColumns(TrainerCallback):
    def __init__(self):
        self.columns = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.columns = train_dataloader.dataset.column_names


@pytest.mark.slow  # two runs
def test_weight_zero_trains_as_a_run_without_teacher_and_the_default_path_has_no_column(request, tmp_path):
    import run as runner
    from recipekit.recipe.build import load_recipe

    teacher = train_teacher(request, tmp_path, "binary", max_steps=8)
    seen = {}
    for name, model in (("plain", {}), ("zero", {"teacher": teacher, "teacher_weight": 0.0}), ("half", {"teacher": teacher})):
        recipe = make_recipe(request, "binary", tmp_path / "data", tmp_path / name)
        recipe["model"].update(model)
        seen[name] = TrainingColumns()
        assert runner.fine_tune(load_recipe(write(recipe, tmp_path / f"{name}.yaml")), callbacks=[seen[name]]) == 0
    assert TEACHER_COLUMN not in seen["plain"].columns and TEACHER_COLUMN in seen["zero"].columns
    runs = {name: metrics_of(tmp_path / name) for name in seen}
    assert scores(runs["zero"]["test"]) == scores(runs["plain"]["test"])
    assert runs["zero"]["train"]["train_loss"] == runs["plain"]["train"]["train_loss"]
    assert runs["half"]["train"]["train_loss"] != runs["plain"]["train"]["train_loss"]
    assert "teacher" not in runs["plain"]["manifest"]


@pytest.mark.slow  # a teacher and two students
def test_a_killed_distilled_run_resumes_to_the_uninterrupted_runs_end(request, tmp_path):
    import run as runner
    from recipekit.recipe.build import load_recipe

    teacher = train_teacher(request, tmp_path, "sequence_classification", max_steps=8)
    runs = {}
    for name in ("whole", "cut"):
        recipe = make_recipe(request, "sequence_classification", tmp_path / "data", tmp_path / name,
                             save_strategy="steps", save_steps=2)
        recipe["model"]["teacher"] = teacher
        runs[name] = write(recipe, tmp_path / f"{name}.yaml")
    assert run_cli([runs["whole"]]) == 0
    assert runner.fine_tune(load_recipe(runs["cut"]), callbacks=[SignalAt(2)]) == 128 + signal.SIGTERM
    other = tmp_path / "other.yaml"
    other.write_text(Path(runs["cut"]).read_text().replace(f"teacher: {teacher}", f"teacher: {tmp_path / 'whole'}"))
    with pytest.raises(RecipeError, match=r"^--resume: .* was trained with model.teacher '.*teacher', this recipe has '.*whole'"):
        runner.fine_tune(load_recipe(str(other)), resume=True)
    assert run_cli([runs["cut"], "--resume"]) == 0
    resumed, whole = metrics_of(tmp_path / "cut"), metrics_of(tmp_path / "whole")
    assert scores(resumed["test"]) == scores(whole["test"])
    assert predicted(tmp_path / "cut" / "predictions.csv") == predicted(tmp_path / "whole" / "predictions.csv")


@pytest.mark.slow  # a teacher and two trials
def test_a_sweep_varies_the_teachers_weight(request, tmp_path):
    teacher = train_teacher(request, tmp_path, "binary", max_steps=8)
    recipe = make_recipe(request, "binary", tmp_path / "data", tmp_path / "sweep")
    recipe["model"]["teacher"] = teacher
    recipe["sweep"] = {"method": "grid", "values": {"model.teacher_weight": [0.0, 1.0]}, "metric": "loss"}
    assert run_cli(["sweep", write(recipe, tmp_path / "sweep.yaml")]) == 0
    trials = [metrics_of(tmp_path / "sweep" / f"trial-{i:03d}") for i in range(2)]
    assert [t["manifest"]["teacher"]["weight"] for t in trials] == [0.0, 1.0]
    assert not math.isclose(trials[0]["train"]["train_loss"], trials[1]["train"]["train_loss"])


def test_the_heads_that_take_a_teacher_say_what_their_term_is_in_the_guide():
    assert [name for name, head in HEADS.items() if head.distillation] == TEACHER_HEADS
    guide = (ROOT / "docs" / "distillation.md").read_text()
    for name in TEACHER_HEADS:
        assert f"| `{name}` | {HEADS[name].distillation} |" in guide, name
