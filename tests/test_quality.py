"""Claims about quality, on the real pretrained MiniLM encoder: the quickstart's bound and a baseline on SST-2."""

import json

import pytest
from conftest import ROOT, run_cli
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

pytestmark = pytest.mark.slow


def test_quickstart_reaches_its_accuracy_bound(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "quickstart"
    assert run_cli(["recipes/quickstart.yaml", f"training.output_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["sizes"] == {"train": 272, "validation": 48, "test": 120}
    assert metrics["test"]["accuracy"] >= 0.85


def test_minilm_on_sst2_beats_tfidf_logistic_regression_on_the_same_rows(tmp_path, monkeypatch, shared_data):
    from conftest import load_splits

    from recipekit.recipe.build import load_recipe

    monkeypatch.chdir(ROOT)
    out = tmp_path / "sst2"
    overrides = [
        f"data.train_file={shared_data}/sst2/train.csv",
        f"data.validation_file={shared_data}/sst2/validation.csv",
        "data.max_train_samples=2000",
        f"training.output_dir={out}",
    ]
    assert run_cli(["recipes/sst2_minilm.yaml", *overrides]) == 0
    ours = json.loads((out / "metrics.json").read_text())["validation"]["accuracy"]

    recipe = load_recipe("recipes/sst2_minilm.yaml", overrides)
    data = load_splits(recipe.data, recipe.preprocess, recipe.training.seed)  # the very rows the model saw
    train, val = data.splits["train"], data.splits["validation"]
    assert len(train) == 2000 and len(val) == 872
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    baseline = LogisticRegression(max_iter=2000, C=10.0).fit(vectorizer.fit_transform(train["text"]), train["labels"])
    theirs = baseline.score(vectorizer.transform(val["text"]), val["labels"])

    print(f"SST-2, 2,000 training rows: MiniLM {ours:.4f} vs TF-IDF+LR {theirs:.4f}")
    assert theirs > 0.6  # the baseline is a real one, not a strawman
    assert ours > theirs + 0.03
