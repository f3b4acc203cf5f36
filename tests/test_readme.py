"""The README is run: its commands are the ones CI runs, and its reference tables come from the code."""

from conftest import ROOT

from recipekit.docs import reference

README = (ROOT / "README.md").read_text()


def test_reference_tables_match_the_dataclasses():
    assert reference() in README, "README reference is stale: paste the output of `python -m recipekit.docs`"


def test_setup_commands_come_first_and_ci_runs_the_test_command():
    first_block = README.split("```")[1]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
