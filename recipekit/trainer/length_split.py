"""Length-split training batches: the same gradient as the whole batch, with less padding computed.

A batch padded to its longest text computes mostly padding when lengths are uneven (1,000 SST-2
sentences, batch 32: 65% of the positions). `LengthSplit` sorts each training batch by length
and runs it as a few chunks, each padded only to its own longest row, accumulating their gradients
before the one optimizer step. The batch's composition is untouched (random batches stay random, unlike
`group_by_length`), and the pooled heads' losses are sums over the batch's items divided by Trainer's
`num_items_in_batch`, so the chunks' gradients add up to the whole batch's: the optimisation is the same
and only the amount of padding changes.

Each extra chunk is one more forward and backward pass, whose fixed cost is measured in padded tokens:
`plan()` splits only where a chunk saves more padded positions than that cost.
"""

from __future__ import annotations

import contextlib

import torch
from accelerate.utils import DistributedType

# Tensors laid out [batch, sequence] that a padding collator pads and a chunk may therefore trim.
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")

# Measured on 2 CPU cores with MiniLM (bench/bench_speed.py, docs/scaling.md): one more forward+backward
# costs about as much as 100-200 padded positions; 128 split SST-2 batches of 32 into ~2.5 chunks.
CPU_CHUNK_COST = 128


def resolve_cost(setting, args, asked: bool = False) -> int | None:
    """The chunk cost in padded tokens for `batching.length_split_cost`; None: never split. `asked`: the recipe set
    `batching.padding: length_split`, which auto then honours on any device."""
    if setting != "auto":
        return setting
    # On a GPU a small forward pass costs kernel launches, not arithmetic, so splitting can only pay for
    # large models or long texts; not measured here, so off unless a recipe asks for the split or sets a cost.
    return CPU_CHUNK_COST if asked or args.use_cpu or not torch.cuda.is_available() else None


def plan(lengths: list[int], cost: int) -> list[tuple[int, int]]:
    """Cut rows sorted by length into contiguous chunks minimising sum(cost + rows x longest row).

    Dynamic programming over the cut points, O(n^2) for a batch of n rows.
    """
    n = len(lengths)
    best = [0] + [None] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end):
            total = best[start] + cost + (end - start) * lengths[end - 1]
            if best[end] is None or total < best[end]:
                best[end], cut[end] = total, start
    spans, end = [], n
    while end:
        spans.append((cut[end], end))
        end = cut[end]
    return spans[::-1]


def split(inputs: dict, cost: int, padding_side: str = "right", multiple: int | None = None) -> list[dict]:
    """The batch as length-sorted chunks, each trimmed to its own longest row (rounded up to `multiple`,
    as the collator pads for tensor cores); [inputs] when that saves nothing."""
    mask = inputs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return [inputs]
    rows, width = mask.shape
    lengths = mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    sorted_lengths = lengths[order].tolist()
    spans = plan(sorted_lengths, cost)
    if len(spans) == 1:
        return [inputs]
    chunks = []
    for start, end in spans:
        index = order[start:end]
        keep = max(int(sorted_lengths[end - 1]), 1)
        if multiple:
            keep = min(width, -(-keep // multiple) * multiple)
        columns = slice(width - keep, width) if padding_side == "left" else slice(0, keep)
        chunk = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == rows:
                value = value[index]
                if key in SEQUENCE_KEYS and value.dim() == 2 and value.shape[1] == width:
                    value = value[:, columns]
            chunk[key] = value
        chunks.append(chunk)
    return chunks


class LengthSplit:
    """Trainer part: runs a training batch as length-sorted chunks (see the module docstring) when `chunk_cost`
    is set, and counts the padded positions computed either way (`padding_share`).

    Splits only when the result is exactly the whole batch's gradient: the loss is a `compute_loss_func`
    sum divided by `num_items_in_batch`, and gradients may be accumulated across backward passes
    (not under DeepSpeed, whose engine counts backward calls, nor FSDP, whose sharded gradients reduce
    on every backward).
    """

    def __init__(self, *args, chunk_cost: int | None = None, pad_multiple: int | None = None, **kwargs):
        self.chunk_cost = chunk_cost  # padded tokens one more forward+backward costs; None: never split
        self.pad_multiple = pad_multiple  # chunks are trimmed to this multiple, as the collator pads
        self.real_tokens = 0  # a tensor once counting starts: summed on the device, read once after training
        self.computed_tokens = 0  # positions the model computed, padding included; a tensor once flattened (read with int())
        super().__init__(*args, **kwargs)

    def count(self, batch: dict) -> None:
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            self.real_tokens = self.real_tokens + mask.sum()
            self.computed_tokens += mask.numel()

    @property
    def padding_share(self) -> float | None:
        """Share of the positions computed in training (this process) that were padding."""
        computed = int(self.computed_tokens)
        return 1 - float(self.real_tokens) / computed if computed else None

    def can_split(self, num_items_in_batch) -> bool:
        return (
            self.chunk_cost is not None
            and num_items_in_batch is not None
            and self.compute_loss_func is not None
            and self.accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP)
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.can_split(num_items_in_batch):
            self.count(inputs)
            return super().training_step(model, inputs, num_items_in_batch)
        side = getattr(self.processing_class, "padding_side", "right")
        chunks = split(inputs, self.chunk_cost, side, self.pad_multiple)
        total = None
        for i, chunk in enumerate(chunks):
            self.count(chunk)
            # DDP: reduce the gradients once, after the last chunk; Trainer already defers it for earlier micro-batches.
            last = i == len(chunks) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                loss = super().training_step(model, chunk, num_items_in_batch)
            total = loss if total is None else total + loss
        return total
