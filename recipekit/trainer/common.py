"""What the training and the inference Trainer share: padding multiple, the head's loss scale, window pooling."""

from __future__ import annotations

from .windows import pool_windows


def pad_multiple(args) -> int | None:
    # Multiples of 8 let fp16/bf16 matmuls use tensor cores; on the CPU they only add padding.
    return 8 if (args.fp16 or args.bf16) and not args.use_cpu else None


def use_head_loss(trainer, head) -> None:
    if head.batch_mean_loss:
        # The model's forward takes **kwargs, so Trainer assumes its loss is a sum normalised by the item count
        # of the whole step: it would then skip dividing by gradient_accumulation_steps and multiply by the
        # number of processes (a loss of 2 x ln 2 = 1.386 at chance under 2 processes). The loss is a batch mean.
        trainer.model_accepts_loss_kwargs = False


def score_documents(trainer, head) -> None:
    if head.data is not None and head.data.long_text == "chunks":
        pool_windows(trainer, head.data.chunk_pooling)


def logits_only(logits, labels):
    """Keep the logits, drop hidden states or attentions a model config may add: evaluation holds only what metrics need."""
    return logits[0] if isinstance(logits, tuple) else logits
