"""What the training and the inference Trainer share: padding multiple, logits kept for metrics."""

from __future__ import annotations


def pad_multiple(args) -> int | None:
    # Multiples of 8 let fp16/bf16 matmuls use tensor cores; on the CPU they only add padding.
    return 8 if (args.fp16 or args.bf16) and not args.use_cpu else None


def logits_only(logits, labels):
    """Keep the logits, drop hidden states or attentions a model config may add: evaluation holds only what metrics need."""
    return logits[0] if isinstance(logits, tuple) else logits
