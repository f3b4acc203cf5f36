"""Models and tokenizers: loading them, building a new one from a config, training a tokenizer, LoRA adapters."""
