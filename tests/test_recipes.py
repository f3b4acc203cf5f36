"""Every recipe under recipes/ loads and validates, so recipes cannot drift away from the code."""

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, require_shared_data

from recipekit.recipe.build import build_recipe, read_yaml

RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)


def test_there_are_recipes():
    assert {"quickstart.yaml", "imdb_bert.yaml", "sst2_minilm.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_validates(path, monkeypatch):
    raw = read_yaml(str(path))
    if "../shared/" in path.read_text():
        require_shared_data()
    monkeypatch.chdir(ROOT)  # recipes name local files relative to the repository root
    recipe = build_recipe(raw, source=str(path))
    assert recipe.training.output_dir.startswith("runs/")
    # The resolved recipe is itself a valid recipe with the same meaning.
    assert build_recipe(yaml.safe_load(recipe.to_yaml())).to_dict() == recipe.to_dict()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_header_says_how_to_run_it(path):
    header = "".join(line for line in Path(path).read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"run.py recipes/{path.relative_to(ROOT / 'recipes')}" in header
