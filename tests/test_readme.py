"""The README is run: its commands are the ones CI runs, and its reference tables come from the code."""

from conftest import ROOT

from recipekit.commands.docs import END, START, reference

README = (ROOT / "README.md").read_text()


def test_reference_tables_match_the_dataclasses():
    block = README.split(START)[1].split(END)[0]
    assert block == reference() + "\n", "README reference is stale: run `python -m recipekit.commands.docs --write`"


def test_setup_commands_come_first_and_ci_runs_the_test_command():
    first_block = README.split("```")[1]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
