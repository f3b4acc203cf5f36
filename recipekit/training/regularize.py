"""Overfitting controls that TrainingArguments lacks: dropout overrides, frozen layers, layer-wise learning-rate
decay and early stopping. Each works on any encoder whose parameter names follow the Hub's conventions
(`embeddings`, `layer.N` / `layers.N` / `h.N`), which covers BERT, RoBERTa, DeBERTa, ELECTRA, DistilBERT, GPT-2.
"""

from __future__ import annotations

import re

from transformers import EarlyStoppingCallback

from ..core.errors import RecipeError

_LAYER = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")


_EMBEDDING = re.compile(r"(?:^|\.)(?:embeddings|embed_tokens|wte|wpe|word_embedding)\b")


def layer_of(name: str) -> int | None:
    """0 for embeddings, N + 1 for encoder layer N, None for what sits above the encoder (pooler, head)."""
    if _EMBEDDING.search(name):
        return 0
    match = _LAYER.search(name)
    return int(match.group(1)) + 1 if match else None


def freeze(model, reg) -> int:
    """Freeze the embeddings and/or the first `freeze_layers` encoder layers; return how many parameters are frozen."""
    if not (reg.freeze_embeddings or reg.freeze_layers):
        return 0
    layers = {layer_of(n) for n, _ in model.named_parameters()} - {None, 0}
    if reg.freeze_layers > len(layers):
        raise RecipeError(f"regularization.freeze_layers: {reg.freeze_layers} is more than the model's {len(layers)} layers")
    frozen = 0
    for name, param in model.named_parameters():
        depth = layer_of(name)
        if (depth == 0 and reg.freeze_embeddings) or (depth is not None and 1 <= depth <= reg.freeze_layers):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def apply_layerwise_lr_decay(trainer, decay: float) -> None:
    """Split each optimizer group by depth: the top (head, pooler, last layer) keeps the learning rate, each layer
    below gets `decay` times the one above, the embeddings the smallest. The scheduler, created afterwards,
    scales every group's own rate."""
    if decay == 1.0:
        return
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    depths = [layer_of(n) for n in names.values()]
    top = max((d for d in depths if d is not None), default=0) + 1
    groups = []
    for group in optimizer.param_groups:
        by_depth: dict[int, list] = {}
        for param in group["params"]:
            depth = layer_of(names[id(param)])
            by_depth.setdefault(top if depth is None else depth, []).append(param)
        for depth, params in sorted(by_depth.items()):
            groups.append({**group, "params": params, "lr": group["lr"] * decay ** (top - depth)})
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


def callbacks(reg) -> list:
    if reg.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(reg.early_stopping_patience, reg.early_stopping_threshold)]
